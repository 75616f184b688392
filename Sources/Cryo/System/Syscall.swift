/// x86_64 system call numbers for the calls Cryo runs inside other processes.
///
/// Spelled out rather than taken from libc's headers because a remote system call runs on the
/// target's ABI, not ours, and Swift does not import glibc's `SYS_*` macros.
public enum Syscall {
    public static let read = 0
    public static let write = 1
    public static let open = 2
    public static let close = 3
    public static let lseek = 8
    public static let mmap = 9
    public static let mprotect = 10
    public static let munmap = 11
    public static let brk = 12
    public static let rt_sigaction = 13
    public static let rt_sigprocmask = 14
    public static let pread64 = 17
    public static let readv = 19
    public static let mremap = 25
    public static let madvise = 28
    public static let dup2 = 33
    public static let pause = 34
    public static let getitimer = 36
    public static let setitimer = 38
    public static let getpid = 39
    public static let exit = 60
    public static let fcntl = 72
    public static let fchdir = 81
    public static let umask = 95
    public static let getrlimit = 97
    public static let setresuid = 117
    public static let setresgid = 119
    public static let setgroups = 116
    public static let setfsuid = 122
    public static let setfsgid = 123
    public static let capget = 125
    public static let capset = 126
    public static let rt_sigqueueinfo = 129
    public static let sigaltstack = 131
    public static let personality = 135
    public static let prctl = 157
    public static let arch_prctl = 158
    public static let chroot = 161
    public static let gettid = 186
    public static let set_tid_address = 218
    public static let timer_create = 222
    public static let timer_settime = 223
    public static let timer_gettime = 224
    public static let timer_getoverrun = 225
    public static let timer_delete = 226
    public static let exit_group = 231
    public static let rt_tgsigqueueinfo = 297
    public static let prlimit64 = 302
    public static let openat = 257
    public static let set_robust_list = 273
    public static let get_robust_list = 274
    public static let vmsplice = 278
    public static let dup3 = 292
    public static let pipe2 = 293
    public static let rseq = 334
    public static let pidfd_open = 434
    public static let clone3 = 435
    public static let pidfd_getfd = 438
    public static let memfd_create = 319
    public static let shmat = 30
}
