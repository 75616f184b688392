import Foundation
import Glibc
import SystemPackage

/// What `cryo dump` was asked to do.
public struct DumpOptions: Sendable {
    public var pid: pid_t
    public var images: ImageDirectory
    /// What happens to the process after a successful dump (CRIU: kill, `-R`, `-s`).
    public var afterDump: RemoteProcess.Release = .kill
    /// `--shell-job`: the process may belong to a session outside the dump.
    public var shellJob = false

    public init(pid: pid_t, images: ImageDirectory) {
        self.pid = pid
        self.images = images
    }
}

/// CRIU's task states in `tc.task_state`.
enum TaskState {
    static let alive: UInt32 = 1
}

/// Checkpoints one process (all its threads) into an images directory.
///
/// Everything is read from outside: /proc, ptrace, and system calls borrowed from the
/// process's own threads. Until the images are complete nothing about the process changes
/// that `RemoteProcess.release` cannot undo, so any failure leaves it running as it was.
public enum Dumper {
    public static func dump(_ options: DumpOptions, log: Log) throws -> DumpStatistics {
        let pid = options.pid
        var stats = DumpStatistics()
        let start = monotonicMicroseconds()
        log.info("Dumping process \(pid) into \(options.images.path)")
        let process = try RemoteProcess.freeze(pid)
        let frozenAt = monotonicMicroseconds()
        stats.freezingTime = UInt32(frozenAt - start)
        log.info("Froze \(process.threads.count) thread(s) of \(pid) in \(frozenAt - start) µs")
        do {
            try writeImages(process, options, &stats, log: log)
        } catch {
            log.warn("dump of process \(pid) failed; it is left running as it was")
            process.release(.resume)
            throw error
        }
        stats.frozenTime = UInt32(monotonicMicroseconds() - frozenAt)
        // The images are complete: only now may the process be killed.
        process.release(options.afterDump)
        try options.images.write("stats-dump.img", magic: .stats, stats.entry)
        log.info("Dump of \(pid) finished: \(stats.pagesWritten) pages written, \(stats.frozenTime) µs frozen")
        return stats
    }

    private static func writeImages(_ process: RemoteProcess, _ options: DumpOptions, _ stats: inout DumpStatistics, log: Log) throws {
        let pid = process.pid
        let proc = process.proc
        let images = options.images
        let stat = try proc.statFields()
        // stat(5) fields, counted from `state` (field 3) at index 0.
        let pgid = UInt32(stat[2]) ?? 0, sid = UInt32(stat[3]) ?? 0
        if sid != UInt32(pid) && !options.shellJob {
            throw CryoError("process \(pid) is in session \(sid), which it does not lead; it was started from a shell job. Start it with setsid, or use --shell-job")
        }

        // What cannot be dumped is found before anything is written.
        var files = FileTable()
        try files.addDescriptors(of: pid)
        let mappings = try proc.mappings()
        let vmas = try MemoryResource.vmaEntries(mappings, pid: pid, files: &files)
        log.debug("\(vmas.count) mappings, \(files.descriptors.count) open fds")

        // Per-process state, from inside the process.
        var tc = TaskCoreEntry()
        tc.taskState = TaskState.alive
        tc.exitCode = 0
        tc.personality = UInt32(truncatingIfNeeded: try process.checkedSyscall("personality", Syscall.personality, 0xffff_ffff))
        tc.flags = UInt32(stat[6]) ?? 0
        tc.blkSigset = process.leader.stoppedSignalMask
        tc.comm = try proc.text("comm").trimmingCharacters(in: "\n")
        tc.timers = try TimersResource.dump(process)
        tc.rlimits = try LimitsResource.dump(process)
        tc.sigactions = try SignalsResource.dumpActions(process)
        var shared: [siginfo_t]
        do { shared = try Ptrace.pendingSignals(pid, shared: true) } catch {
            throw CryoError("cannot read pending signals of process \(pid)", errno: error)
        }
        if !shared.isEmpty { tc.signalsS = SignalsResource.queue(shared) }
        let area = try process.scratchArea()
        try process.checkedSyscall("prctl(PR_GET_CHILD_SUBREAPER)", Syscall.prctl, 37, area)
        tc.childSubreaper = try process.memory.read(Int32.self, at: area) != 0
        if let oom = Int32(try proc.text("oom_score_adj").trimmingCharacters(in: "\n")) { tc.oomScoreAdj = oom }

        var mm = MmEntry()
        // stat fields 26-28 and 45-51 (index = field - 3).
        func field(_ n: Int) -> UInt64 { n - 3 < stat.count ? UInt64(stat[n - 3]) ?? 0 : 0 }
        mm.mmStartCode = field(26); mm.mmEndCode = field(27); mm.mmStartStack = field(28)
        mm.mmStartData = field(45); mm.mmEndData = field(46); mm.mmStartBrk = field(47)
        mm.mmArgStart = field(48); mm.mmArgEnd = field(49); mm.mmEnvStart = field(50); mm.mmEnvEnd = field(51)
        mm.mmBrk = UInt64(try process.checkedSyscall("brk", Syscall.brk, 0))
        mm.exeFileID = try files.mappedFile(path: proc.link("exe"), pid: pid)
        mm.mmSavedAuxv = try proc.bytes("auxv").withUnsafeBytes { raw in
            (0..<(raw.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
        }
        mm.dumpable = Int32(truncatingIfNeeded: try process.checkedSyscall("prctl(PR_GET_DUMPABLE)", Syscall.prctl, 3))
        mm.thpDisabled = try process.checkedSyscall("prctl(PR_GET_THP_DISABLE)", Syscall.prctl, 42) != 0
        mm.vmas = vmas

        var fs = FsEntry()
        fs.cwdID = try files.mappedFile(path: proc.link("cwd"), pid: pid)
        fs.rootID = try files.mappedFile(path: proc.link("root"), pid: pid)
        fs.umask = UInt32(try proc.status()["Umask"] ?? "22", radix: 8) ?? 0o22

        var cores: [(pid_t, CoreEntry)] = []
        for thread in process.threads {
            var core = try ThreadsResource.dump(thread, process)
            if thread.tid == pid { core.tc = tc }
            cores.append((thread.tid, core))
        }

        // Memory last: it is the long part, and everything else is known to be dumpable.
        let memStart = monotonicMicroseconds()
        let pagesName = "pages-1.img"
        let partial = images.url(".\(pagesName).partial")
        let pagesFD: FileDescriptor
        do { pagesFD = try FileDescriptor.open(FilePath(partial), .writeOnly, options: [.create, .truncate, .closeOnExec], permissions: [.ownerReadWrite, .groupRead, .otherRead]) }
        catch { throw CryoError("cannot create \(images.url(pagesName))", errno: error as! Errno) }
        let pagemap: [PagemapEntry]
        do {
            pagemap = try pagesFD.closeAfter { try MemoryResource.dumpPages(process: process, vmas: vmas, to: pagesFD, stats: &stats) }
        } catch {
            unlink(partial)
            throw error
        }
        stats.memdumpTime = UInt32(monotonicMicroseconds() - memStart)
        stats.memwriteTime = stats.memdumpTime
        guard rename(partial, images.url(pagesName)) == 0 else {
            throw CryoError("cannot rename \(partial)", errno: Errno(rawValue: errnoValue))
        }

        var ids = TaskKobjIdsEntry()
        ids.vmID = 1; ids.filesID = 1; ids.fsID = 1; ids.sighandID = 1

        var head = PagemapHead()
        head.pagesID = 1
        var pagemapImage = ImageCodec.header(for: .pagemap)
        try ImageCodec.appendEntry(head, to: &pagemapImage)
        for e in pagemap { try ImageCodec.appendEntry(e, to: &pagemapImage) }
        try images.writeFile("pagemap-\(pid).img", pagemapImage)

        var pstree = PstreeEntry()
        pstree.pid = UInt32(pid)
        pstree.ppid = 0
        pstree.pgid = pgid
        pstree.sid = sid
        pstree.threads = process.threads.map { UInt32($0.tid) }

        try images.write("mm-\(pid).img", magic: .mm, mm)
        for (tid, core) in cores { try images.write("core-\(tid).img", magic: .core, core) }
        try images.write("ids-\(pid).img", magic: .ids, ids)
        try images.write("fs-\(pid).img", magic: .fs, fs)
        try images.write("files.img", magic: .files, files.files)
        try images.write("fdinfo-\(ids.filesID).img", magic: .fdinfo, files.descriptors)
        try images.write("pstree.img", magic: .pstree, pstree)

        var inventory = InventoryEntry()
        inventory.imgVersion = 2
        inventory.fdinfoPerID = true
        inventory.rootIds = ids
        inventory.lsmtype = .noLsm
        inventory.dumpUptime = UInt64(ProcessInfo.processInfo.systemUptime * 1_000_000)
        try images.write("inventory.img", magic: .inventory, inventory)
    }
}
