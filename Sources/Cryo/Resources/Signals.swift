import Foundation
import Glibc

/// Signal state: the 64 dispositions (`tc.sigactions`), blocked masks (per thread), and
/// pending signals with their siginfo (`tc.signals_s` shared, `thread_core.signals_p` per thread).
enum SignalsResource {
    /// struct kernel_sigaction { handler, flags, restorer, mask } as the kernel reads it.
    static let sigactionSize = 32

    static func dumpActions(_ process: RemoteProcess) throws -> [SaEntry] {
        var batch = try SyscallBatch(for: process)
        let area = try batch.reserve(64 * sigactionSize)
        for signal in 1...64 {
            batch.add("rt_sigaction(\(signal)) read", Syscall.rt_sigaction, UInt64(signal), 0, area + UInt64((signal - 1) * sigactionSize), 8)
        }
        try process.run(batch)
        return try process.memory.read(area, count: 64 * sigactionSize).withUnsafeBytes { raw in
            (0..<64).map { i in
                let word = { raw.loadUnaligned(fromByteOffset: i * sigactionSize + $0 * 8, as: UInt64.self) }
                var e = SaEntry()
                e.sigaction = word(0)
                e.flags = word(1)
                e.restorer = word(2)
                e.mask = word(3)
                return e
            }
        }
    }

    /// Sets the dispositions; with `inherited` (the parent's, which a forked child already
    /// has), only those that differ.
    static func restoreActions(_ actions: [SaEntry], _ process: RemoteProcess, inherited: [SaEntry]? = nil) throws {
        var batch = try SyscallBatch(for: process)
        for (index, action) in actions.enumerated() {
            let signal = index + 1
            if signal == SIGKILL || signal == SIGSTOP { continue }
            if let inherited, index < inherited.count, inherited[index] == action { continue }
            let area = try batch.place([action.sigaction, action.flags, action.restorer, action.mask])
            batch.add("rt_sigaction(\(signal))", Syscall.rt_sigaction, UInt64(signal), area, 0, 8)
        }
        try process.run(batch)
    }

    static func queue(_ infos: [siginfo_t]) -> SignalQueueEntry {
        var q = SignalQueueEntry()
        q.signals = infos.map { info in
            var e = SiginfoEntry()
            e.siginfo = withUnsafeBytes(of: info) { Data($0) }
            return e
        }
        return q
    }

    /// Queues pending signals again, with their original siginfo. Signals stay blocked during
    /// the restore, so they wait until the process runs with its own mask.
    static func restorePending(_ queue: SignalQueueEntry, thread: RemoteThread?, _ process: RemoteProcess) throws {
        let area = process.scratch!.address
        for entry in queue.signals {
            guard entry.siginfo.count == 128 else { throw CryoError("pending signal with a siginfo of \(entry.siginfo.count) bytes") }
            try process.memory.write(Array(entry.siginfo), at: area)
            let signo = entry.siginfo.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
            if let thread {
                try process.checkedSyscall("rt_tgsigqueueinfo(\(signo))", Syscall.rt_tgsigqueueinfo,
                                           UInt64(process.pid), UInt64(thread.tid), UInt64(signo), area, in: thread)
            } else {
                try process.checkedSyscall("rt_sigqueueinfo(\(signo))", Syscall.rt_sigqueueinfo, UInt64(process.pid), UInt64(signo), area)
            }
        }
    }
}
