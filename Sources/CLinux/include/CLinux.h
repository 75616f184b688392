// CLinux: the few things Swift cannot do directly on Linux.
//
// - fixed-arity wrappers for variadic or macro APIs (ptrace, syscall, the W* status macros);
// - kernel UAPI structures that glibc's headers do not export (clone_args, prctl_mm_map,
//   ptrace_rseq_configuration, pm_scan_arg, ...);
// - the few instructions a freshly cloned restore child runs before the restorer takes it
//   over (raw syscalls only: that child is a copy of a multi-threaded Swift process).
#ifndef CRYO_CLINUX_H
#define CRYO_CLINUX_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/uio.h>
#include <signal.h>

// MARK: - ptrace

/// ptrace(2) with its four arguments; returns -1 and sets errno on failure. For PEEK*
/// requests the caller must clear errno first and check it afterwards.
long cl_ptrace(long request, pid_t pid, void *addr, void *data);

enum {
    CL_PTRACE_TRACEME = 0,
    CL_PTRACE_PEEKDATA = 2,
    CL_PTRACE_POKEDATA = 5,
    CL_PTRACE_CONT = 7,
    CL_PTRACE_ATTACH = 16,
    CL_PTRACE_SINGLESTEP = 9,
    CL_PTRACE_GETREGS = 12,
    CL_PTRACE_SETREGS = 13,
    CL_PTRACE_DETACH = 17,
    CL_PTRACE_SYSCALL = 24,
    CL_PTRACE_SETOPTIONS = 0x4200,
    CL_PTRACE_GETEVENTMSG = 0x4201,
    CL_PTRACE_GETSIGINFO = 0x4202,
    CL_PTRACE_GETREGSET = 0x4204,
    CL_PTRACE_SETREGSET = 0x4205,
    CL_PTRACE_SEIZE = 0x4206,
    CL_PTRACE_INTERRUPT = 0x4207,
    CL_PTRACE_LISTEN = 0x4208,
    CL_PTRACE_PEEKSIGINFO = 0x4209,
    CL_PTRACE_GETSIGMASK = 0x420a,
    CL_PTRACE_SETSIGMASK = 0x420b,
    CL_PTRACE_GET_RSEQ_CONFIGURATION = 0x420f,
    CL_PTRACE_PEEKSIGINFO_SHARED = 1,
    CL_NT_PRSTATUS = 1,
    CL_NT_PRFPREG = 2,
    CL_NT_X86_XSTATE = 0x202,
    CL_PTRACE_O_TRACESYSGOOD = 1,
    CL_PTRACE_O_TRACEFORK = 2,
    CL_PTRACE_O_TRACECLONE = 8,
    CL_PTRACE_O_EXITKILL = 0x100000,
    CL_PTRACE_EVENT_CLONE = 3,
    CL_PTRACE_EVENT_STOP = 128,
};

/// struct ptrace_peeksiginfo_args.
struct cl_peeksiginfo_args {
    uint64_t off;
    uint32_t flags;
    int32_t nr;
};

/// struct ptrace_rseq_configuration.
struct cl_rseq_configuration {
    uint64_t rseq_abi_pointer;
    uint32_t rseq_abi_size;
    uint32_t signature;
    uint32_t flags;
    uint32_t pad;
};

/// process_vm_readv/process_vm_writev with one iovec on each side; returns bytes moved or -1.
long cl_process_vm_readv(pid_t pid, void *local, size_t length, uint64_t remote);
long cl_process_vm_writev(pid_t pid, const void *local, size_t length, uint64_t remote);

// MARK: - wait status

int cl_wifexited(int status);
int cl_wexitstatus(int status);
int cl_wifsignaled(int status);
int cl_wtermsig(int status);
int cl_wifstopped(int status);
int cl_wstopsig(int status);
/// The PTRACE_EVENT_* number carried in a stop status (status >> 16).
int cl_wptrace_event(int status);

// MARK: - raw syscalls

/// syscall(2) with six arguments. Returns the kernel's raw result (-errno on failure, errno is
/// not touched), which is what remote-syscall code wants to compare with.
long cl_raw_syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6);

// MARK: - kernel structures

/// struct clone_args (clone3), size 88 with set_tid.
struct cl_clone_args {
    uint64_t flags;
    uint64_t pidfd;
    uint64_t child_tid;
    uint64_t parent_tid;
    uint64_t exit_signal;
    uint64_t stack;
    uint64_t stack_size;
    uint64_t tls;
    uint64_t set_tid;
    uint64_t set_tid_size;
    uint64_t cgroup;
};

/// struct prctl_mm_map (PR_SET_MM_MAP).
struct cl_prctl_mm_map {
    uint64_t start_code;
    uint64_t end_code;
    uint64_t start_data;
    uint64_t end_data;
    uint64_t start_brk;
    uint64_t brk;
    uint64_t start_stack;
    uint64_t arg_start;
    uint64_t arg_end;
    uint64_t env_start;
    uint64_t env_end;
    uint64_t auxv;       // user pointer
    uint32_t auxv_size;
    uint32_t exe_fd;
};

/// struct page_region and struct pm_scan_arg (PAGEMAP_SCAN ioctl, Linux 6.7+).
struct cl_page_region {
    uint64_t start;
    uint64_t end;
    uint64_t categories;
};

struct cl_pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
};

enum {
    CL_PAGEMAP_SCAN = 0xc0606610,
    CL_PAGE_IS_WPALLOWED = 1 << 0,
    CL_PAGE_IS_WRITTEN = 1 << 1,
    CL_PAGE_IS_FILE = 1 << 2,
    CL_PAGE_IS_PRESENT = 1 << 3,
    CL_PAGE_IS_SWAPPED = 1 << 4,
    CL_PAGE_IS_PFNZERO = 1 << 5,
    CL_PAGE_IS_HUGE = 1 << 6,
};

/// ioctl(2) with one pointer argument.
int cl_ioctl_ptr(int fd, unsigned long request, void *arg);

// MARK: - the restore child

/// Parameters for the code a new restore child runs before it is taken over.
/// The batch loop's machine code (RemoteBatch.swift), and where a restore helper page has it.
#define CL_BATCH_CODE_SIZE 63
#define CL_BATCH_CODE_OFFSET 16
extern const unsigned char cl_batch_code[CL_BATCH_CODE_SIZE];

struct cl_restore_child_args {
    /// Where to map the helper: an RX page with `syscall; int3` (and the batch loop at
    /// CL_BATCH_CODE_OFFSET), then RW scratch pages.
    uint64_t helper_address;
    /// The helper's total size in bytes (a multiple of 4096, at least 8192).
    uint64_t helper_size;
    /// PIDs for clone3's set_tid, innermost namespace last (only one level supported now).
    pid_t pid;
};

/// clone3() a child with the given PID. The child unregisters glibc's rseq area, maps the
/// helper pages, blocks every signal, asks to be traced (PTRACE_TRACEME) and stops itself with
/// SIGSTOP; it never returns to Swift code. Returns the child's pid in the parent, or -errno.
long cl_spawn_restore_child(const struct cl_restore_child_args *args);



// MARK: - fd passing

/// Sends `fd` with SCM_RIGHTS (and one byte of data) over the unix socket `socket`.
int cl_send_fd(int socket, int fd);

// MARK: - unix socket diagnostics

/// One unix socket as sock_diag reports it.
struct cl_unix_socket {
    uint32_t inode;
    uint32_t peer;      // inode of the peer, 0 if none
    uint8_t type;       // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    uint8_t state;      // TCP_ESTABLISHED (1), TCP_LISTEN (10), TCP_CLOSE (7)...
    uint16_t name_length;
    uint32_t receive_queue;
    uint32_t send_queue;
    char name[108];     // sun_path, abstract names start with a NUL
};

/// Lists the unix sockets of this network namespace (NETLINK_SOCK_DIAG). Fills up to
/// `capacity` entries; returns how many sockets exist (may exceed capacity), or -errno.
long cl_unix_sockets(struct cl_unix_socket *out, long capacity);

// MARK: - cpuid

/// CPUID with a sub-leaf; used to find the XSAVE component offsets of this CPU.
void cl_cpuid_count(uint32_t leaf, uint32_t subleaf, uint32_t *eax, uint32_t *ebx, uint32_t *ecx, uint32_t *edx);
#endif
