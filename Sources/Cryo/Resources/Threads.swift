import CLinux
import Foundation
import Glibc

/// Per-thread state: registers, XSAVE area, signal mask, sigaltstack, rseq, robust list,
/// clear_child_tid, name, scheduling, pending signals and credentials — `core-TID.img`.
enum ThreadsResource {
    static func dump(_ thread: RemoteThread, _ process: RemoteProcess) throws -> CoreEntry {
        let tid = thread.tid
        var batch = try SyscallBatch(for: process)
        let tidAddress = try batch.reserve(8), altStack = try batch.reserve(24), deathSignal = try batch.reserve(8)
        batch.add("prctl(PR_GET_TID_ADDRESS) in thread \(tid)", Syscall.prctl, 40, tidAddress)
        batch.add("sigaltstack in thread \(tid)", Syscall.sigaltstack, 0, altStack)
        batch.add("prctl(PR_GET_PDEATHSIG) in thread \(tid)", Syscall.prctl, 2, deathSignal)
        let securebits = batch.add("prctl(PR_GET_SECUREBITS) in thread \(tid)", Syscall.prctl, 27)
        let results = try process.run(batch, in: thread)
        let words = try process.memory.read(tidAddress, count: 48).withUnsafeBytes { raw in
            (0..<6).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
        }

        var info = ThreadInfoX86()
        info.gpregs = UserX86RegsEntry(registersForImage(thread.stoppedRegisters))
        do { info.fpregs = UserX86FpregsEntry(xstate: try Ptrace.regset(tid, note: Int32(CL_NT_X86_XSTATE))) }
        catch { throw CryoError("cannot read the FPU/AVX state of thread \(tid)", errno: error) }
        info.clearTidAddr_p = words[0]

        var tc = ThreadCoreEntry()
        tc.blkSigset = thread.stoppedSignalMask
        var sas = ThreadSasEntry()
        sas.ssSp = words[1]
        sas.ssFlags = UInt32(truncatingIfNeeded: words[2])
        sas.ssSize = words[3]
        tc.sas = sas
        tc.pdeathSig = UInt32(truncatingIfNeeded: words[4])

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
        tc.creds = try CredentialsResource.dump(status: status, securebits: UInt32(truncatingIfNeeded: results[securebits]))

        var core = CoreEntry()
        core.mtype = .x8664
        core.threadInfo = info
        core.threadCore = tc
        return core
    }

    /// Puts back everything of a thread but its registers and credentials, from inside it.
    static func restore(_ core: CoreEntry, thread: RemoteThread, _ process: RemoteProcess) throws {
        let tc = core.threadCore
        let tid = thread.tid
        var batch = try SyscallBatch(for: process)
        if tc.hasSas && tc.sas.ssSize != 0 {
            batch.add("sigaltstack in thread \(tid)", Syscall.sigaltstack, try batch.place([tc.sas.ssSp, UInt64(tc.sas.ssFlags), tc.sas.ssSize]), 0)
        }
        if tc.futexRla != 0 { batch.add("set_robust_list in thread \(tid)", Syscall.set_robust_list, tc.futexRla, UInt64(tc.futexRlaLen)) }
        batch.add("set_tid_address in thread \(tid)", Syscall.set_tid_address, core.threadInfo.clearTidAddr_p)
        if tc.pdeathSig != 0 { batch.add("prctl(PR_SET_PDEATHSIG) in thread \(tid)", Syscall.prctl, 1, UInt64(tc.pdeathSig)) }
        if tc.hasComm {
            let name = Array(tc.comm.utf8.prefix(15)) + [0]
            batch.add("prctl(PR_SET_NAME) in thread \(tid)", Syscall.prctl, 15, try batch.place(name + [UInt8](repeating: 0, count: 16 - name.count)))
        }
        if tc.hasSchedNice && tc.schedNice != 0 {
            batch.add("setpriority", 140 /* setpriority */, 0, 0, UInt64(bitPattern: Int64(tc.schedNice)), mayFail: true)
        }
        if tc.hasRseqEntry {
            let r = tc.rseqEntry
            batch.add("rseq in thread \(tid)", Syscall.rseq, r.rseqAbiPointer, UInt64(r.rseqAbiSize), 0, UInt64(r.signature))
        }
        try process.run(batch, in: thread)
        var xstate: [UInt8]
        do { xstate = try Ptrace.regset(thread.tid, note: Int32(CL_NT_X86_XSTATE)) }
        catch { throw CryoError("cannot read the FPU state of new thread \(thread.tid)", errno: error) }
        core.threadInfo.fpregs.apply(to: &xstate)
        do { try Ptrace.setRegset(thread.tid, note: Int32(CL_NT_X86_XSTATE), xstate) }
        catch { throw CryoError("cannot set the FPU/AVX state of thread \(thread.tid)", errno: error) }
        if tc.hasSignalsP { try SignalsResource.restorePending(tc.signalsP, thread: thread, process) }
    }
}
