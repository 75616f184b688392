#define _GNU_SOURCE
#include "CLinux.h"

#include <errno.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <unistd.h>
#include <sched.h>
#include <linux/sched.h>

long cl_ptrace(long request, pid_t pid, void *addr, void *data) {
    return ptrace((enum __ptrace_request)request, pid, addr, data);
}

long cl_process_vm_readv(pid_t pid, void *local, size_t length, uint64_t remote) {
    struct iovec l = { local, length }, r = { (void *)(uintptr_t)remote, length };
    return process_vm_readv(pid, &l, 1, &r, 1, 0);
}

long cl_process_vm_writev(pid_t pid, const void *local, size_t length, uint64_t remote) {
    struct iovec l = { (void *)local, length }, r = { (void *)(uintptr_t)remote, length };
    return process_vm_writev(pid, &l, 1, &r, 1, 0);
}

int cl_wifexited(int status) { return WIFEXITED(status); }
int cl_wexitstatus(int status) { return WEXITSTATUS(status); }
int cl_wifsignaled(int status) { return WIFSIGNALED(status); }
int cl_wtermsig(int status) { return WTERMSIG(status); }
int cl_wifstopped(int status) { return WIFSTOPPED(status); }
int cl_wstopsig(int status) { return WSTOPSIG(status); }
int cl_wptrace_event(int status) { return (status >> 16) & 0xff; }

int cl_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }

// A raw syscall that never touches errno: the kernel's return value, -errno on failure.
static inline long raw6(long nr, long a1, long a2, long a3, long a4, long a5, long a6) {
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

long cl_raw_syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6) {
    return raw6(nr, a1, a2, a3, a4, a5, a6);
}

// The batch loop (see RemoteBatch.swift): rbx points at 64-byte records {nr, a1..a6,
// may_fail}; each call's result replaces may_fail; it stops at nr == -1 or at the first error
// of a call that may not fail, on the int3 at its end.
const unsigned char cl_batch_code[CL_BATCH_CODE_SIZE] = {
    0x48, 0x8b, 0x03,                   // 00 mov rax, [rbx]
    0x48, 0x83, 0xf8, 0xff,             // 03 cmp rax, -1
    0x74, 0x35,                         // 07 je done
    0x48, 0x8b, 0x7b, 0x08,             // 09 mov rdi, [rbx+8]
    0x48, 0x8b, 0x73, 0x10,             // 0d mov rsi, [rbx+16]
    0x48, 0x8b, 0x53, 0x18,             // 11 mov rdx, [rbx+24]
    0x4c, 0x8b, 0x53, 0x20,             // 15 mov r10, [rbx+32]
    0x4c, 0x8b, 0x43, 0x28,             // 19 mov r8, [rbx+40]
    0x4c, 0x8b, 0x4b, 0x30,             // 1d mov r9, [rbx+48]
    0x4c, 0x8b, 0x63, 0x38,             // 21 mov r12, [rbx+56]
    0x0f, 0x05,                         // 25 syscall
    0x48, 0x89, 0x43, 0x38,             // 27 mov [rbx+56], rax
    0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, // 2b cmp rax, -4095
    0x72, 0x05,                         // 31 jb ok
    0x4d, 0x85, 0xe4,                   // 33 test r12, r12
    0x74, 0x06,                         // 36 jz done
    0x48, 0x83, 0xc3, 0x40,             // 38 ok: add rbx, 64
    0xeb, 0xc2,                         // 3c jmp 0
    0xcc,                               // 3e done: int3
};

// glibc >= 2.35 exports where its rseq area lives relative to the thread pointer.
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));

#define RSEQ_SIG 0x53053053

// Runs in the new child only. It is a copy of the (multi-threaded) parent, so it must not
// call into libc or Swift: raw syscalls and plain stores only.
static __attribute__((noreturn, noinline)) void restore_child_main(const struct cl_restore_child_args *a) {
    // 1. Drop the inherited rseq registration, or wiping the address space later makes the
    //    kernel write into unmapped memory on every preemption (endless SIGSEGV).
    if (&__rseq_size != NULL && __rseq_size > 0) {
        char *tp;
        __asm__("mov %%fs:0, %0" : "=r"(tp));
        raw6(SYS_rseq, (long)(tp + __rseq_offset), (long)(__rseq_size < 32 ? 32 : __rseq_size),
             1 /* RSEQ_FLAG_UNREGISTER */, RSEQ_SIG, 0, 0);
    }
    // 2. Block everything: nothing may run a handler of the old image while we rebuild.
    uint64_t all = ~0ULL;
    raw6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, 0, 8, 0, 0);
    // 3. The helper: RX page with `syscall; int3` and an RW argument page right after it.
    long h = raw6(SYS_mmap, (long)a->helper_address, (long)a->helper_size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (h != (long)a->helper_address)
        raw6(SYS_exit_group, 71, 0, 0, 0, 0, 0);
    unsigned char *code = (unsigned char *)h;
    code[0] = 0x0f; code[1] = 0x05; code[2] = 0xcc;
    for (int i = 0; i < CL_BATCH_CODE_SIZE; i++)
        code[CL_BATCH_CODE_OFFSET + i] = cl_batch_code[i];
    raw6(SYS_mprotect, h, 4096, PROT_READ | PROT_EXEC, 0, 0, 0);
    // 4. Hand ourselves over. If we cannot be traced (the restorer is itself traced, e.g.
    //    under strace -f), nobody would ever take us: exit rather than pause forever.
    if (raw6(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0, 0, 0) != 0)
        raw6(SYS_exit_group, 72, 0, 0, 0, 0, 0);
    raw6(SYS_kill, raw6(SYS_getpid, 0, 0, 0, 0, 0, 0), SIGSTOP, 0, 0, 0, 0);
    for (;;)
        raw6(SYS_pause, 0, 0, 0, 0, 0, 0);
}

long cl_spawn_restore_child(const struct cl_restore_child_args *args) {
    pid_t tid = args->pid;
    struct cl_clone_args ca = {0};
    ca.exit_signal = SIGCHLD;
    ca.set_tid = (uint64_t)(uintptr_t)&tid;
    ca.set_tid_size = 1;
    long ret = raw6(SYS_clone3, (long)&ca, sizeof(ca), 0, 0, 0, 0);
    if (ret == 0)
        restore_child_main(args);
    return ret;
}

#include <cpuid.h>
void cl_cpuid_count(uint32_t leaf, uint32_t subleaf, uint32_t *eax, uint32_t *ebx, uint32_t *ecx, uint32_t *edx) {
    __cpuid_count(leaf, subleaf, *eax, *ebx, *ecx, *edx);
}

#include <sys/socket.h>
#include <string.h>
int cl_send_fd(int sock, int fd) {
    char byte = 0;
    struct iovec iov = { &byte, 1 };
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <linux/rtnetlink.h>

long cl_unix_sockets(struct cl_unix_socket *out, long capacity) {
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return -errno;
    struct { struct nlmsghdr h; struct unix_diag_req r; } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.r.sdiag_family = AF_UNIX;
    req.r.udiag_states = -1;
    req.r.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN;
    if (send(nl, &req, sizeof req, 0) != sizeof req) { int e = errno; close(nl); return -e; }
    long count = 0;
    static char buf[32768];
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        if (n < 0) { int e = errno; close(nl); return -e; }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE) { close(nl); return count; }
            if (h->nlmsg_type == NLMSG_ERROR) { close(nl); return -EIO; }
            struct unix_diag_msg *m = NLMSG_DATA(h);
            if (count < capacity) {
                struct cl_unix_socket *s = &out[count];
                memset(s, 0, sizeof *s);
                s->inode = m->udiag_ino;
                s->type = m->udiag_type;
                s->state = m->udiag_state;
                int len = h->nlmsg_len - NLMSG_LENGTH(sizeof *m);
                for (struct rtattr *a = (struct rtattr *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
                    if (a->rta_type == UNIX_DIAG_PEER) s->peer = *(uint32_t *)RTA_DATA(a);
                    else if (a->rta_type == UNIX_DIAG_RQLEN) {
                        struct unix_diag_rqlen *q = RTA_DATA(a);
                        s->receive_queue = q->udiag_rqueue;
                        s->send_queue = q->udiag_wqueue;
                    } else if (a->rta_type == UNIX_DIAG_NAME) {
                        int l = RTA_PAYLOAD(a);
                        if (l > 108) l = 108;
                        memcpy(s->name, RTA_DATA(a), l);
                        s->name_length = l;
                    }
                }
            }
            count++;
        }
    }
}
