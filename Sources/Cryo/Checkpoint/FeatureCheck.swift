import CLinux
import Glibc

/// The version `cryo --version` prints.
public let cryoVersion = "0.1.0"

extension WaitStatus {
    /// A shell-style exit code for a raw wait status: the exit status, or 128 + signal.
    public static func decode(_ raw: Int32) -> Int32 {
        switch WaitStatus(raw: raw) {
        case .exited(let c): return c
        case .signaled(let s): return 128 + s
        case .stopped(let s, _): return 128 + s
        }
    }
}

/// `cryo check`: the kernel features Cryo uses, probed on this machine.
public enum FeatureCheck {
    public struct Result: Sendable {
        public var name: String
        public var ok: Bool
        /// Whether dump or restore cannot work without it.
        public var required: Bool
        /// What is wrong and what it disables.
        public var detail: String
    }

    public static func run() -> [Result] {
        var results: [Result] = []
        func add(_ name: String, required: Bool, _ detail: String, _ probe: () -> Bool) {
            results.append(Result(name: name, ok: probe(), required: required, detail: detail))
        }
        add("running as root", required: true, "dump and restore need root (ptrace of any process, clone3 with set_tid)") { geteuid() == 0 }
        add("PAGEMAP_SCAN", required: true, "needed to find the pages a process has touched (Linux 6.7+)") {
            guard let fd = Optional(open("/proc/self/pagemap", O_RDONLY)), fd >= 0 else { return false }
            defer { close(fd) }
            var arg = cl_pm_scan_arg()
            arg.size = UInt64(MemoryLayout<cl_pm_scan_arg>.size)
            arg.start = 0; arg.end = 4096
            arg.category_anyof_mask = UInt64(CL_PAGE_IS_PRESENT)
            arg.return_mask = UInt64(CL_PAGE_IS_PRESENT)
            return cl_ioctl_ptr(fd, UInt(CL_PAGEMAP_SCAN), &arg) >= 0
        }
        add("PR_SET_MM_MAP", required: true, "restoring brk, arguments, environment and exe needs CONFIG_CHECKPOINT_RESTORE") {
            var size: UInt32 = 0
            return cl_raw_syscall6(Syscall.prctl, 35, 15 /* PR_SET_MM_MAP_SIZE */, Int(bitPattern: withUnsafeMutablePointer(to: &size) { UnsafeMutableRawPointer($0) }), 0, 0, 0) == 0 && size > 0
        }
        add("clone3 with set_tid", required: true, "restoring original PIDs needs clone3 (Linux 5.5+) and CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE") {
            access("/proc/sys/kernel/ns_last_pid", W_OK) == 0
        }
        add("PTRACE_GET_RSEQ_CONFIGURATION", required: false, "threads' rseq areas are not saved (Linux 5.13+)") {
            // Ask about ourselves through a child we trace would be thorough; the request
            // number being known to the kernel is what matters: it answers ESRCH, not EIO.
            cl_ptrace(Int(CL_PTRACE_GET_RSEQ_CONFIGURATION), getpid(), nil, nil) < 0 && errno == ESRCH
        }
        add("kcmp", required: false, "fds sharing one open file are restored as separate files") {
            cl_raw_syscall6(312, Int(getpid()), Int(getpid()), 0, 0, 0, 0) >= 0
        }
        add("process_vm_readv", required: true, "reading a process's memory") {
            var x: UInt64 = 42, y: UInt64 = 0
            return cl_process_vm_readv(getpid(), &y, 8, UInt64(UInt(bitPattern: withUnsafePointer(to: &x) { UnsafeRawPointer($0) }))) == 8 && y == 42
        }
        return results
    }
}
