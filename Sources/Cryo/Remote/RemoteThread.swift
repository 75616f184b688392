import CLinux
import Glibc
import SystemPackage

/// A thread of another process, stopped under ptrace, that Cryo can read and drive.
///
/// A `RemoteThread` remembers the registers it had when it stopped (`stoppedRegisters`), so
/// that remote system calls can borrow the thread and give it back unchanged.
public final class RemoteThread {
    /// The thread id (for a process's first thread, its pid).
    public let tid: pid_t
    /// Registers at the moment the thread was stopped; what `release` puts back.
    public var stoppedRegisters: user_regs_struct
    /// The blocked-signal mask at the moment the thread was stopped.
    public var stoppedSignalMask: UInt64
    /// A signal that was being delivered when we stopped the thread; it is queued again on release.
    public var interceptedSignal: siginfo_t?

    init(tid: pid_t, registers: user_regs_struct, signalMask: UInt64) {
        self.tid = tid
        self.stoppedRegisters = registers
        self.stoppedSignalMask = signalMask
    }

    /// Seizes `tid` and stops it with PTRACE_INTERRUPT. Returns nil when the thread is gone.
    static func seizeAndStop(_ tid: pid_t) throws -> RemoteThread? {
        do {
            try Ptrace.seize(tid, options: Int(CL_PTRACE_O_TRACESYSGOOD))
            try Ptrace.interrupt(tid)
        } catch .noSuchProcess {
            return nil
        } catch {
            throw CryoError("cannot attach to thread \(tid) with ptrace", errno: error)
        }
        var intercepted: siginfo_t?
        while true {
            let status: WaitStatus
            do { status = try WaitStatus.wait(tid) } catch { throw CryoError("waiting for thread \(tid) to stop", errno: error) }
            switch status {
            case .exited, .signaled:
                return nil
            case .stopped(_, let event) where event == ptraceEventStop:
                let thread = RemoteThread(tid: tid, registers: try registers(of: tid), signalMask: try mask(of: tid))
                thread.interceptedSignal = intercepted
                return thread
            case .stopped(let signal, _):
                // A signal was on its way in: keep its siginfo, suppress it now, queue it
                // again when the thread is released (or save it as pending in the image).
                intercepted = try? Ptrace.signalInfo(tid)
                if intercepted == nil { _ = signal }
                do { try Ptrace.cont(tid) } catch { throw CryoError("resuming thread \(tid) to stop it", errno: error) }
            }
        }
    }

    private static func registers(of tid: pid_t) throws -> user_regs_struct {
        do { return try Ptrace.registers(tid) } catch { throw CryoError("cannot read registers of thread \(tid)", errno: error) }
    }

    private static func mask(of tid: pid_t) throws -> UInt64 {
        do { return try Ptrace.signalMask(tid) } catch { throw CryoError("cannot read signal mask of thread \(tid)", errno: error) }
    }

    /// Adopts a thread that is already stopped under ptrace (a restore child or a new clone).
    static func adopt(_ tid: pid_t) throws -> RemoteThread {
        RemoteThread(tid: tid, registers: try registers(of: tid), signalMask: try mask(of: tid))
    }

    /// Runs system call `number` in this thread by pointing RIP at a `syscall` instruction at
    /// `gadget` and single-stepping over it. Returns the raw result (negative errno on failure).
    ///
    /// `orig_rax` is set to -1 so that the kernel's syscall-restart logic leaves RIP and RAX
    /// alone, whatever the thread was doing when it stopped.
    public func syscall(_ number: Int, _ args: [UInt64], gadget: UInt64) throws -> Int64 {
        var regs = stoppedRegisters
        regs.rax = UInt64(number)
        regs.orig_rax = UInt64.max
        regs.rip = gadget
        let a = args + [UInt64](repeating: 0, count: max(0, 6 - args.count))
        regs.rdi = a[0]; regs.rsi = a[1]; regs.rdx = a[2]; regs.r10 = a[3]; regs.r8 = a[4]; regs.r9 = a[5]
        do {
            try Ptrace.setRegisters(tid, regs)
            for _ in 0..<16 {
                try Ptrace.singleStep(tid)
                let status = try WaitStatus.wait(tid)
                guard case .stopped(let signal, let event) = status else {
                    throw CryoError("thread \(tid) \(status) during remote system call \(number)")
                }
                // A ptrace event (e.g. PTRACE_EVENT_CLONE) stops the call half-way: go on.
                if event != 0 { continue }
                let now = try Ptrace.registers(tid)
                if signal == SIGTRAP && now.rip == gadget + 2 {
                    return Int64(bitPattern: now.rax)
                }
                if signal == SIGTRAP || signal == SIGSTOP || signal == (SIGTRAP | 0x80) {
                    // A stray stop (job control, syscall-stop): step again from where we are.
                    if now.rip == gadget { continue }
                    if now.rip == gadget + 2 { return Int64(bitPattern: now.rax) }
                }
                throw CryoError("thread \(tid) got signal \(signal) at 0x\(String(now.rip, radix: 16)) during remote system call \(number)")
            }
            throw CryoError("thread \(tid) did not complete remote system call \(number)")
        } catch let error as Errno {
            throw CryoError("remote system call \(number) in thread \(tid)", errno: error)
        }
    }

    /// Like `syscall` but throws when the result is a negative errno; `what` names the call.
    @discardableResult
    public func checkedSyscall(_ number: Int, _ args: [UInt64], gadget: UInt64, _ what: @autoclosure () -> String) throws -> Int64 {
        let r = try syscall(number, args, gadget: gadget)
        if r < 0 && r > -4096 {
            throw CryoError("\(what()) in process \(tid)", errno: Errno(rawValue: Int32(-r)))
        }
        return r
    }

    /// Puts back the registers and signal mask the thread had when it stopped.
    public func restoreStoppedState() throws {
        do {
            try Ptrace.setRegisters(tid, stoppedRegisters)
            try Ptrace.setSignalMask(tid, stoppedSignalMask)
        } catch { throw CryoError("cannot put back registers of thread \(tid)", errno: error) }
    }
}
