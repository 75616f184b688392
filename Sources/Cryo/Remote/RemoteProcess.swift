import CLinux
import Glibc
import SystemPackage

/// A process whose threads are all stopped under ptrace: one being dumped, or one being rebuilt.
///
/// `freeze` seizes every thread of a running process (again and again until no new thread
/// appears), and `release` is the only way out: it unmaps what Cryo mapped, puts every register
/// back and detaches, leaving the process running, stopped or killed. Any error path must end
/// in `release`. `adoptRestoreChild` wraps a fresh restore child, whose helper pages hold the
/// syscall instruction and the scratch area.
public final class RemoteProcess {
    /// The process id.
    public let pid: pid_t
    /// All threads, leader first.
    public private(set) var threads: [RemoteThread]
    /// The /proc directory of the process.
    public let proc: ProcDirectory
    /// Its memory.
    public let memory: RemoteMemory
    /// The address of a `syscall` instruction in the process's vDSO.
    public private(set) var gadget: UInt64 = 0
    /// A scratch area Cryo mapped in the process for remote system calls' arguments.
    public private(set) var scratch: (address: UInt64, size: Int)?
    private var released = false
    /// Whether `scratch` was mapped by `scratchArea` (and must be unmapped on release).
    private var ownsScratch = true
    /// Where the batch loop is (`RemoteBatch.swift`), if the process has it.
    public private(set) var batchCode: UInt64?
    /// Bytes `scratchArea` mapped: the scratch area and the page of code after it.
    private var scratchMapping = 0

    /// The thread remote system calls run in.
    public var leader: RemoteThread { threads[0] }

    private init(pid: pid_t, threads: [RemoteThread]) {
        self.pid = pid
        self.threads = threads
        self.proc = ProcDirectory(pid: pid)
        self.memory = RemoteMemory(pid: pid)
    }

    /// Stops every thread of `pid`.
    public static func freeze(_ pid: pid_t) throws -> RemoteProcess {
        let proc = ProcDirectory(pid: pid)
        let status: [String: String]
        do { status = try proc.status() } catch {
            throw CryoError("no process with pid \(pid) (\(error))")
        }
        if let tgid = status["Tgid"], tgid != "\(pid)" {
            throw CryoError("\(pid) is a thread of process \(tgid), not a process: dump -t \(tgid)")
        }
        if status["State"]?.hasPrefix("Z") == true {
            throw CryoError("process \(pid) is a zombie; there is nothing to dump")
        }
        var seized: [pid_t: RemoteThread] = [:]
        let frozen = RemoteProcess(pid: pid, threads: [])
        do {
            while true {
                let ids = try proc.threadIDs()
                let fresh = ids.filter { seized[$0] == nil }
                if fresh.isEmpty { break }
                for tid in fresh {
                    if let thread = try RemoteThread.seizeAndStop(tid) {
                        seized[tid] = thread
                        frozen.threads = ids.compactMap { seized[$0] }
                    } else if tid == pid {
                        throw CryoError("process \(pid) exited while it was being frozen")
                    }
                }
            }
            frozen.threads = try proc.threadIDs().compactMap { seized[$0] }
            guard frozen.threads.first?.tid == pid else { throw CryoError("process \(pid) exited while it was being frozen") }
            try frozen.findGadget()
            // Nothing of the process's own may run while we borrow its threads.
            for thread in frozen.threads {
                do { try Ptrace.setSignalMask(thread.tid, ~0) } catch {
                    throw CryoError("cannot block signals of thread \(thread.tid)", errno: error)
                }
            }
        } catch {
            frozen.threads = Array(seized.values)
            frozen.release(.resume)
            throw error
        }
        return frozen
    }

    /// Finds `0f 05` (syscall) in the vDSO, so the dump never writes into the process's code.
    /// Every process of this kernel maps the same vDSO image, so the offset is found once.
    private func findGadget() throws {
        let maps = try Mapping.parse(smaps: try proc.bytes("maps"))
        guard let vdso = maps.first(where: { $0.name == "[vdso]" }) else {
            throw CryoError("process \(pid) has no [vdso] mapping; Cryo needs one to run system calls in it")
        }
        if let offset = Self.gadgetOffset, offset + 2 <= vdso.length,
           (try? memory.read(vdso.start + offset, count: 2)) == [0x0f, 0x05] {
            gadget = vdso.start + offset
            return
        }
        let code = try memory.read(vdso.start, count: Int(vdso.length))
        for i in 0..<(code.count - 1) where code[i] == 0x0f && code[i + 1] == 0x05 {
            gadget = vdso.start + UInt64(i)
            Self.gadgetOffset = UInt64(i)
            return
        }
        throw CryoError("no syscall instruction found in the vDSO of process \(pid)")
    }

    nonisolated(unsafe) private static var gadgetOffset: UInt64?

    /// Wraps a restore child that stopped itself after mapping its helper at `helper`
    /// (one RX page with `syscall; int3`, then `helperSize - 4096` bytes of scratch).
    static func adoptRestoreChild(_ pid: pid_t, helper: UInt64, helperSize: Int) throws -> RemoteProcess {
        let process = RemoteProcess(pid: pid, threads: [try RemoteThread.adopt(pid)])
        process.gadget = helper
        process.scratch = (helper + 4096, helperSize - 4096)
        process.ownsScratch = false
        process.batchCode = helper + UInt64(CL_BATCH_CODE_OFFSET)
        return process
    }

    /// Adds a thread (a clone made during restore) to the process.
    func addThread(_ thread: RemoteThread) { threads.append(thread) }

    /// Marks the process as finished with: `release` will do nothing any more.
    func forget() { released = true }

    /// Runs a system call in the leader; returns the raw result.
    public func syscall(_ number: Int, _ args: UInt64..., in thread: RemoteThread? = nil) throws -> Int64 {
        try (thread ?? leader).syscall(number, args, gadget: gadget)
    }

    /// Runs a system call in the leader and throws on a negative errno; `what` names the call.
    @discardableResult
    public func checkedSyscall(_ what: @autoclosure () -> String, _ number: Int, _ args: UInt64..., in thread: RemoteThread? = nil) throws -> Int64 {
        try (thread ?? leader).checkedSyscall(number, args, gadget: gadget, what())
    }

    /// `checkedSyscall` with its arguments as an array.
    @discardableResult
    public func checkedSyscall(_ what: @autoclosure () -> String, _ number: Int, _ args: [UInt64], in thread: RemoteThread? = nil) throws -> Int64 {
        try (thread ?? leader).checkedSyscall(number, args, gadget: gadget, what())
    }

    /// Names `thread` (prctl PR_SET_NAME: at most 15 bytes and a NUL).
    func setName(_ name: String, in thread: RemoteThread) throws {
        var bytes = Array(name.utf8.prefix(15)) + [0]
        bytes += [UInt8](repeating: 0, count: 16 - bytes.count)
        let area = try scratchArea(size: 16)
        try memory.write(bytes, at: area)
        try checkedSyscall("prctl(PR_SET_NAME) in thread \(thread.tid)", Syscall.prctl, [15, area], in: thread)
    }

    /// Maps (once) and returns a scratch area of at least `size` bytes in the process.
    public func scratchArea(size: Int = 65536) throws -> UInt64 {
        if let s = scratch, s.size >= size { return s.address }
        guard ownsScratch else { throw CryoError("scratch area of \(scratch?.size ?? 0) bytes is too small for \(size)") }
        if let s = scratch { _ = try? syscall(Syscall.munmap, s.address, UInt64(scratchMapping)); scratch = nil; batchCode = nil }
        // The scratch area, then a page for the batch loop, made read+exec once written.
        let length = (size + 4095) & ~4095
        let address = UInt64(try checkedSyscall("mmap of a scratch area", Syscall.mmap, 0, UInt64(length + 4096),
                                                UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0))
        scratch = (address, length)
        scratchMapping = length + 4096
        let code = address + UInt64(length)
        let loop = withUnsafeBytes(of: cl_batch_code) { Array($0) }
        if (try? memory.write(loop, at: code)) != nil,
           (try? syscall(Syscall.mprotect, code, 4096, UInt64(PROT_READ | PROT_EXEC))) == 0 {
            batchCode = code
        }
        return address
    }

    /// What happens to the process when Cryo lets go of it.
    public enum Release: Sendable {
        /// It continues as if nothing happened.
        case resume
        /// It stays stopped (SIGSTOP) after Cryo detaches.
        case stop
        /// It is killed (the default after a successful dump).
        case kill
    }

    /// Undoes everything Cryo did to the process and detaches from it. Safe to call twice.
    public func release(_ how: Release) {
        guard !released else { return }
        released = true
        if how == .kill {
            Glibc.kill(pid, SIGKILL)
            for thread in threads { try? Ptrace.detach(thread.tid) }
            return
        }
        for thread in threads {
            // Queue again the signal we took from the thread while stopping it.
            guard let info = thread.interceptedSignal, let area = try? scratchArea(size: 4096) else { continue }
            try? withUnsafeBytes(of: info) { try memory.write(area, $0) }
            _ = try? syscall(Syscall.rt_tgsigqueueinfo, UInt64(pid), UInt64(thread.tid), UInt64(info.si_signo), area, in: thread)
        }
        if scratch != nil, ownsScratch, !threads.isEmpty {
            _ = try? syscall(Syscall.munmap, scratch!.address, UInt64(scratchMapping))
            scratch = nil
            batchCode = nil
        }
        for thread in threads {
            try? thread.restoreStoppedState()
        }
        if how == .stop { Glibc.kill(pid, SIGSTOP) }
        for thread in threads { try? Ptrace.detach(thread.tid) }
    }

    deinit { release(.resume) }
}
