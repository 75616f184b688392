import CLinux
import Glibc
import SystemPackage

/// Typed wrappers over ptrace(2) for one thread (a *tracee*).
///
/// Every request must come from the thread that attached (see `TracerPool`).
public enum Ptrace {
    /// PTRACE_SEIZE: attach without stopping. `options` are PTRACE_O_* flags.
    public static func seize(_ tid: pid_t, options: Int = 0) throws(Errno) {
        try call(CL_PTRACE_SEIZE, tid, nil, UnsafeMutableRawPointer(bitPattern: options))
    }

    /// PTRACE_ATTACH: attach and send SIGSTOP (the thread reports its signal-delivery-stop).
    public static func attach(_ tid: pid_t) throws(Errno) {
        try call(CL_PTRACE_ATTACH, tid, nil, nil)
    }

    /// PTRACE_INTERRUPT: stop a seized thread (it reports a PTRACE_EVENT_STOP).
    public static func interrupt(_ tid: pid_t) throws(Errno) {
        try call(CL_PTRACE_INTERRUPT, tid, nil, nil)
    }

    /// PTRACE_SETOPTIONS.
    public static func setOptions(_ tid: pid_t, _ options: Int) throws(Errno) {
        try call(CL_PTRACE_SETOPTIONS, tid, nil, UnsafeMutableRawPointer(bitPattern: options))
    }

    /// PTRACE_DETACH, delivering `signal` (0 for none).
    public static func detach(_ tid: pid_t, signal: Int32 = 0) throws(Errno) {
        try call(CL_PTRACE_DETACH, tid, nil, UnsafeMutableRawPointer(bitPattern: Int(signal)))
    }

    /// PTRACE_CONT, delivering `signal` (0 for none).
    public static func cont(_ tid: pid_t, signal: Int32 = 0) throws(Errno) {
        try call(CL_PTRACE_CONT, tid, nil, UnsafeMutableRawPointer(bitPattern: Int(signal)))
    }

    /// PTRACE_SINGLESTEP.
    public static func singleStep(_ tid: pid_t) throws(Errno) {
        try call(CL_PTRACE_SINGLESTEP, tid, nil, nil)
    }

    /// PTRACE_SYSCALL: run to the next syscall entry or exit.
    public static func syscall(_ tid: pid_t) throws(Errno) {
        try call(CL_PTRACE_SYSCALL, tid, nil, nil)
    }

    /// PTRACE_GETREGS.
    public static func registers(_ tid: pid_t) throws(Errno) -> user_regs_struct {
        var regs = user_regs_struct()
        try call(CL_PTRACE_GETREGS, tid, nil, &regs)
        return regs
    }

    /// PTRACE_SETREGS.
    public static func setRegisters(_ tid: pid_t, _ regs: user_regs_struct) throws(Errno) {
        var regs = regs
        try call(CL_PTRACE_SETREGS, tid, nil, &regs)
    }

    /// PTRACE_GETREGSET for `note` (e.g. NT_X86_XSTATE); returns exactly the bytes the kernel gave.
    public static func regset(_ tid: pid_t, note: Int32, capacity: Int = 16384) throws(Errno) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: capacity)
        var length = 0
        let result: Int = buffer.withUnsafeMutableBytes { raw in
            var iov = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
            let r = cl_ptrace(CL_PTRACE_GETREGSET, tid,
                              UnsafeMutableRawPointer(bitPattern: Int(note)), &iov)
            length = iov.iov_len
            return r
        }
        if result < 0 { throw Errno(rawValue: errnoValue) }
        return Array(buffer.prefix(length))
    }

    /// PTRACE_SETREGSET for `note`.
    public static func setRegset(_ tid: pid_t, note: Int32, _ bytes: [UInt8]) throws(Errno) {
        var bytes = bytes
        let result: Int = bytes.withUnsafeMutableBytes { raw in
            var iov = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
            return cl_ptrace(CL_PTRACE_SETREGSET, tid,
                             UnsafeMutableRawPointer(bitPattern: Int(note)), &iov)
        }
        if result < 0 { throw Errno(rawValue: errnoValue) }
    }

    /// PTRACE_GETSIGMASK: the thread's blocked-signal mask.
    public static func signalMask(_ tid: pid_t) throws(Errno) -> UInt64 {
        var mask: UInt64 = 0
        try call(CL_PTRACE_GETSIGMASK, tid, UnsafeMutableRawPointer(bitPattern: 8), &mask)
        return mask
    }

    /// PTRACE_SETSIGMASK.
    public static func setSignalMask(_ tid: pid_t, _ mask: UInt64) throws(Errno) {
        var mask = mask
        try call(CL_PTRACE_SETSIGMASK, tid, UnsafeMutableRawPointer(bitPattern: 8), &mask)
    }

    /// PTRACE_GET_RSEQ_CONFIGURATION; `nil` when the thread has no rseq area registered.
    public static func rseqConfiguration(_ tid: pid_t) throws(Errno) -> cl_rseq_configuration? {
        var conf = cl_rseq_configuration()
        let r = cl_ptrace(CL_PTRACE_GET_RSEQ_CONFIGURATION, tid,
                          UnsafeMutableRawPointer(bitPattern: MemoryLayout<cl_rseq_configuration>.size), &conf)
        if r < 0 { throw Errno(rawValue: errnoValue) }
        return conf.rseq_abi_pointer == 0 ? nil : conf
    }

    /// PTRACE_GETSIGINFO: the signal that caused the current signal-delivery-stop.
    public static func signalInfo(_ tid: pid_t) throws(Errno) -> siginfo_t {
        var info = siginfo_t()
        try call(CL_PTRACE_GETSIGINFO, tid, nil, &info)
        return info
    }

    /// PTRACE_GETEVENTMSG: e.g. the new thread's id after a PTRACE_EVENT_CLONE stop.
    public static func eventMessage(_ tid: pid_t) throws(Errno) -> UInt {
        var message: UInt = 0
        try call(CL_PTRACE_GETEVENTMSG, tid, nil, &message)
        return message
    }

    /// PTRACE_PEEKSIGINFO: the pending signals, per thread or (`shared`) of the whole process.
    public static func pendingSignals(_ tid: pid_t, shared: Bool) throws(Errno) -> [siginfo_t] {
        var result: [siginfo_t] = []
        while true {
            var args = cl_peeksiginfo_args(off: UInt64(result.count),
                                           flags: shared ? UInt32(CL_PTRACE_PEEKSIGINFO_SHARED) : 0, nr: 32)
            var batch = [siginfo_t](repeating: siginfo_t(), count: 32)
            let n = batch.withUnsafeMutableBytes { cl_ptrace(CL_PTRACE_PEEKSIGINFO, tid, &args, $0.baseAddress) }
            if n < 0 { throw Errno(rawValue: errnoValue) }
            if n == 0 { return result }
            result += batch.prefix(n)
        }
    }

    /// PTRACE_POKEDATA of one word (used to write into read-only text, e.g. a breakpoint).
    public static func poke(_ tid: pid_t, address: UInt64, word: UInt64) throws(Errno) {
        try call(CL_PTRACE_POKEDATA, tid, UnsafeMutableRawPointer(bitPattern: UInt(address)),
                 UnsafeMutableRawPointer(bitPattern: UInt(word)))
    }

    private static func call(_ request: Int, _ tid: pid_t, _ addr: UnsafeMutableRawPointer?,
                             _ data: UnsafeMutableRawPointer?) throws(Errno) {
        if cl_ptrace(request, tid, addr, data) < 0 { throw Errno(rawValue: errnoValue) }
    }
}

/// The outcome of waitpid(2) on a traced thread.
public enum WaitStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)
    /// A stop: the signal and the PTRACE_EVENT_* number (0 when none).
    case stopped(signal: Int32, event: Int32)

    init(raw: Int32) {
        if cl_wifexited(raw) != 0 { self = .exited(cl_wexitstatus(raw)) }
        else if cl_wifsignaled(raw) != 0 { self = .signaled(cl_wtermsig(raw)) }
        else { self = .stopped(signal: cl_wstopsig(raw), event: cl_wptrace_event(raw)) }
    }

    public var description: String {
        switch self {
        case .exited(let c): return "exited with status \(c)"
        case .signaled(let s): return "killed by signal \(s)"
        case .stopped(let s, let e): return "stopped by signal \(s)" + (e != 0 ? " (ptrace event \(e))" : "")
        }
    }

    /// waitpid(tid, __WALL) until it reports, retrying on EINTR.
    public static func wait(_ tid: pid_t, flags: Int32 = 0) throws(Errno) -> WaitStatus {
        var status: Int32 = 0
        while true {
            let r = waitpid(tid, &status, flags | __WALL)
            if r == tid { return WaitStatus(raw: status) }
            if r < 0 && errnoValue == EINTR { continue }
            throw Errno(rawValue: r < 0 ? errnoValue : ECHILD)
        }
    }
}

/// PTRACE_EVENT_STOP: the stop that PTRACE_INTERRUPT (and group-stops under SEIZE) report.
let ptraceEventStop: Int32 = 128
