import CLinux
import Glibc
import SystemPackage

/// System calls a stopped process runs in one go: one ptrace round trip for the lot instead of
/// one per call, which is what dominates the time of a tree's dump and restore.
///
/// The calls go to the process as 64-byte records `{nr, a1..a6, mayFail}` in its scratch area;
/// a 63-byte loop (`cl_batch_code`, in the restore helper page, or in a page next to the dump
/// scratch area) runs them in order and stops on an `int3` at the end, or at the first error
/// of a call that may not fail. Arguments that live in memory (structs, paths) are placed in
/// the scratch area with the batch and written in the same `process_vm_writev`.
///
/// Calls must not depend on each other's results; a dependent call goes in the next batch.
struct SyscallBatch {
    fileprivate struct Call {
        var number: Int
        var args: [UInt64]
        var mayFail: Bool
        var what: String
    }
    fileprivate var calls: [Call] = []
    /// The in-memory arguments, written at `dataBase` before the calls run.
    fileprivate var data: [UInt8] = []
    fileprivate let dataBase: UInt64
    fileprivate let dataCapacity: Int

    /// An empty batch for `process`; its in-memory arguments go in the second quarter of the
    /// scratch area (the first is left to callers' own arguments, the second half to records).
    /// A process being dumped gets its scratch area (and the loop) now if it has none yet.
    init(for process: RemoteProcess) throws {
        if process.scratch == nil { _ = try process.scratchArea() }
        let s = process.scratch!
        dataBase = s.address + UInt64(s.size / 4)
        dataCapacity = s.size / 4
    }

    /// Whether the batch has no calls.
    var isEmpty: Bool { calls.isEmpty }

    /// Adds a call; `what` names it in errors. With `mayFail`, a failure is only reported in
    /// the results. Returns the call's index in the results.
    @discardableResult
    mutating func add(_ what: String, _ number: Int, _ args: UInt64..., mayFail: Bool = false) -> Int {
        calls.append(Call(number: number, args: args + [UInt64](repeating: 0, count: 6 - args.count), mayFail: mayFail, what: what))
        return calls.count - 1
    }

    /// Places `bytes` among the batch's in-memory arguments; returns their address in the process.
    mutating func place(_ bytes: [UInt8]) throws -> UInt64 {
        let offset = (data.count + 7) & ~7
        guard offset + bytes.count <= dataCapacity else {
            throw CryoError("a batch of system calls needs more than \(dataCapacity) bytes of arguments")
        }
        data += [UInt8](repeating: 0, count: offset - data.count) + bytes
        return dataBase + UInt64(offset)
    }

    /// Places 64-bit words; returns their address in the process.
    mutating func place(_ words: [UInt64]) throws -> UInt64 {
        try place(words.withUnsafeBytes { Array($0) })
    }

    /// Places a NUL-terminated string; returns its address in the process.
    mutating func place(_ string: String) throws -> UInt64 {
        try place(Array(string.utf8) + [0])
    }

    /// Reserves `count` zeroed bytes for a call to write into; returns their address.
    mutating func reserve(_ count: Int) throws -> UInt64 {
        try place([UInt8](repeating: 0, count: count))
    }
}

extension RemoteProcess {
    /// Runs `batch` in `thread` (default: the leader) and returns every call's raw result
    /// (negative errno on failure). Throws, naming the call, at the first failure of a call not
    /// marked `mayFail`; the calls after it have not run.
    @discardableResult
    func run(_ batch: SyscallBatch, in thread: RemoteThread? = nil) throws -> [Int64] {
        guard !batch.calls.isEmpty else { return [] }
        if !batch.data.isEmpty { try memory.write(batch.data, at: batch.dataBase) }
        guard let code = batchCode, let s = scratch else {
            // No loop in this process: one round trip per call.
            return try batch.calls.map { call in
                try check(call, try syscall(call.number, call.args[0], call.args[1], call.args[2], call.args[3], call.args[4], call.args[5], in: thread))
            }
        }
        let recordsBase = s.address + UInt64(s.size / 2)
        let capacity = s.size / 2 / 64 - 1  // one slot for the end marker
        var results: [Int64] = []
        results.reserveCapacity(batch.calls.count)
        var start = 0
        while start < batch.calls.count {
            let chunk = batch.calls[start..<min(start + capacity, batch.calls.count)]
            var words: [UInt64] = []
            words.reserveCapacity(chunk.count * 8 + 1)
            for call in chunk { words += [UInt64(call.number)] + call.args + [call.mayFail ? 1 : 0] }
            words.append(UInt64.max)
            try memory.write(words, at: recordsBase)
            try (thread ?? leader).runCode(at: code, rbx: recordsBase, trap: code + UInt64(CL_BATCH_CODE_SIZE))
            let out = try memory.read(recordsBase, count: chunk.count * 64).withUnsafeBytes { raw in
                (0..<chunk.count).map { Int64(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 64 + 56, as: UInt64.self)) }
            }
            for (call, r) in zip(chunk, out) { _ = try check(call, r) }
            results += out
            start += chunk.count
        }
        return results
    }

    /// `result`, or the error of a call that may not fail.
    private func check(_ call: SyscallBatch.Call, _ result: Int64) throws -> Int64 {
        if result < 0 && result > -4096 && !call.mayFail { throw CryoError("\(call.what) in process \(pid)", errno: Errno(rawValue: Int32(-result))) }
        return result
    }
}

extension RemoteThread {
    /// Runs code of the process from `entry` with `rbx` set, until the `int3` whose end is
    /// `trap` (PTRACE_CONT, then the SIGTRAP). Registers are set from the stopped state, with
    /// `orig_rax` = -1 so no syscall restart interferes.
    func runCode(at entry: UInt64, rbx: UInt64, trap: UInt64) throws {
        var regs = stoppedRegisters
        regs.rip = entry
        regs.rbx = rbx
        regs.orig_rax = UInt64.max
        do {
            try Ptrace.setRegisters(tid, regs)
            try Ptrace.cont(tid)
            while true {
                let status = try WaitStatus.wait(tid)
                guard case .stopped(let signal, let event) = status else {
                    throw CryoError("thread \(tid) \(status) during a batch of system calls")
                }
                if event == 0 && signal == SIGTRAP {
                    let now = try Ptrace.registers(tid)
                    guard now.rip == trap else { throw CryoError("thread \(tid) trapped at 0x\(String(now.rip, radix: 16)) during a batch of system calls") }
                    return
                }
                // A ptrace event or a stray stop (job control): go on.
                guard event != 0 || signal == SIGSTOP || signal == (SIGTRAP | 0x80) else {
                    throw CryoError("thread \(tid) got signal \(signal) during a batch of system calls")
                }
                try Ptrace.cont(tid)
            }
        } catch let error as Errno {
            throw CryoError("batch of system calls in thread \(tid)", errno: error)
        }
    }
}
