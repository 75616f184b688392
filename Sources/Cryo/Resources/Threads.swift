import CLinux
import Foundation
import Glibc

/// Per-thread state: registers, XSAVE area, signal mask, sigaltstack, rseq, robust list,
/// clear_child_tid, name, scheduling, pending signals and credentials — `core-TID.img`.
enum ThreadsResource {
    static func dump(_ thread: RemoteThread, _ process: RemoteProcess) throws -> CoreEntry {
        let tid = thread.tid
        let area = try process.scratchArea()
        func call(_ what: String, _ nr: Int, _ args: UInt64...) throws {
            try process.checkedSyscall("\(what) in thread \(tid)", nr, args, in: thread)
        }
        func readU64(_ at: UInt64) throws -> UInt64 { try process.memory.read(UInt64.self, at: at) }

        var info = ThreadInfoX86()
        info.gpregs = UserX86RegsEntry(registersForImage(thread.stoppedRegisters))
        do { info.fpregs = UserX86FpregsEntry(xstate: try Ptrace.regset(tid, note: Int32(CL_NT_X86_XSTATE))) }
        catch { throw CryoError("cannot read the FPU/AVX state of thread \(tid)", errno: error) }
        try call("prctl(PR_GET_TID_ADDRESS)", Syscall.prctl, 40, area)
        info.clearTidAddr_p = try readU64(area)

        var tc = ThreadCoreEntry()
        tc.blkSigset = thread.stoppedSignalMask
        try call("sigaltstack", Syscall.sigaltstack, 0, area)
        var sas = ThreadSasEntry()
        sas.ssSp = try readU64(area)
        sas.ssFlags = UInt32(truncatingIfNeeded: try readU64(area + 8))
        sas.ssSize = try readU64(area + 16)
        tc.sas = sas
        try call("prctl(PR_GET_PDEATHSIG)", Syscall.prctl, 2, area)
        tc.pdeathSig = UInt32(truncatingIfNeeded: try readU64(area))

        var robust: (head: UInt64, length: UInt64) = (0, 0)
        let r = withUnsafeMutablePointer(to: &robust.head) { h in
            withUnsafeMutablePointer(to: &robust.length) { l in
                cl_raw_syscall6(Syscall.get_robust_list, Int(tid), Int(bitPattern: h), Int(bitPattern: l), 0, 0, 0)
            }
        }
        if r == 0 {
            tc.futexRla = robust.head
            tc.futexRlaLen = UInt32(robust.length)
        }
        errno = 0
        let nice = getpriority(__priority_which_t(0) /* PRIO_PROCESS */, id_t(tid))
        if errno == 0 { tc.schedNice = nice }
        let policy = sched_getscheduler(tid)
        if policy >= 0 { tc.schedPolicy = UInt32(policy) }
        var param = sched_param()
        if sched_getparam(tid, &param) == 0 { tc.schedPrio = UInt32(param.sched_priority) }

        do {
            if let rseq = try Ptrace.rseqConfiguration(tid) {
                var r = RseqEntry()
                r.rseqAbiPointer = rseq.rseq_abi_pointer
                r.rseqAbiSize = rseq.rseq_abi_size
                r.signature = rseq.signature
                tc.rseqEntry = r
            }
        } catch { throw CryoError("cannot read the rseq registration of thread \(tid)", errno: error) }

        let task = process.proc.task(tid)
        tc.comm = try task.text("comm").trimmingCharacters(in: "\n")
        var pending: [siginfo_t]
        do { pending = try Ptrace.pendingSignals(tid, shared: false) }
        catch { throw CryoError("cannot read pending signals of thread \(tid)", errno: error) }
        if let intercepted = thread.interceptedSignal { pending.append(intercepted) }
        if !pending.isEmpty { tc.signalsP = SignalsResource.queue(pending) }

        let status = try task.status()
        if let seccomp = status["Seccomp"], seccomp != "0" {
            throw CryoError("thread \(tid) runs under seccomp (mode \(seccomp)); Cryo cannot dump seccomp filters yet")
        }
        let securebits = UInt32(truncatingIfNeeded: try thread.syscall(Syscall.prctl, [27], gadget: process.gadget))
        tc.creds = try CredentialsResource.dump(status: status, securebits: securebits)

        var core = CoreEntry()
        core.mtype = .x8664
        core.threadInfo = info
        core.threadCore = tc
        return core
    }

    /// Puts back everything of a thread but its registers and credentials, from inside it.
    static func restore(_ core: CoreEntry, thread: RemoteThread, _ process: RemoteProcess) throws {
        let tc = core.threadCore
        let area = process.scratch!.address
        func call(_ what: String, _ nr: Int, _ args: UInt64...) throws {
            try process.checkedSyscall("\(what) in thread \(thread.tid)", nr, args, in: thread)
        }
        if tc.hasSas && tc.sas.ssSize != 0 {
            try process.memory.write([tc.sas.ssSp, UInt64(tc.sas.ssFlags), tc.sas.ssSize], at: area)
            try call("sigaltstack", Syscall.sigaltstack, area, 0)
        }
        if tc.futexRla != 0 { try call("set_robust_list", Syscall.set_robust_list, tc.futexRla, UInt64(tc.futexRlaLen)) }
        try call("set_tid_address", Syscall.set_tid_address, core.threadInfo.clearTidAddr_p)
        if tc.pdeathSig != 0 { try call("prctl(PR_SET_PDEATHSIG)", Syscall.prctl, 1, UInt64(tc.pdeathSig)) }
        if tc.hasComm {
            try process.setName(tc.comm, in: thread)
        }
        if tc.hasSchedNice && tc.schedNice != 0 {
            _ = try process.syscall(140 /* setpriority */, 0, 0, UInt64(bitPattern: Int64(tc.schedNice)), in: thread)
        }
        if tc.hasRseqEntry {
            let r = tc.rseqEntry
            try call("rseq", Syscall.rseq, r.rseqAbiPointer, UInt64(r.rseqAbiSize), 0, UInt64(r.signature))
        }
        var xstate: [UInt8]
        do { xstate = try Ptrace.regset(thread.tid, note: Int32(CL_NT_X86_XSTATE)) }
        catch { throw CryoError("cannot read the FPU state of new thread \(thread.tid)", errno: error) }
        core.threadInfo.fpregs.apply(to: &xstate)
        do { try Ptrace.setRegset(thread.tid, note: Int32(CL_NT_X86_XSTATE), xstate) }
        catch { throw CryoError("cannot set the FPU/AVX state of thread \(thread.tid)", errno: error) }
        if tc.hasSignalsP { try SignalsResource.restorePending(tc.signalsP, thread: thread, process) }
    }
}
