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
    /// `--file-locks`: save file locks (without it, a process holding one is not dumped).
    public var fileLocks = false
    /// `--ghost-limit`: the largest deleted-but-open file whose contents are saved.
    public var ghostLimit = GhostFileResource.defaultLimit
    /// `--ext-unix-sk`: datagram unix sockets connected to a named socket outside the dump are
    /// dumped, and connected to that name again on restore.
    public var externalUnixSockets = false
    /// Pages a child shares copy-on-write with its parent (the same physical page) are stored
    /// once, in the parent's image (`MemoryResource.pageCOWParent`). Off (`--no-cow-dedup`):
    /// every process's pages are stored in full, an image CRIU itself can restore.
    public var cowDedup = true

    public init(pid: pid_t, images: ImageDirectory) {
        self.pid = pid
        self.images = images
    }
}

/// CRIU's task states in `tc.task_state`.
enum TaskState {
    static let alive: UInt32 = 1
}

/// CRIU's task states in `tc.task_state`.
extension TaskState {
    static let zombie: UInt32 = 6
}

/// One process of the tree being dumped.
final class TreeMember {
    let pid: pid_t
    let ppid: pid_t
    /// The frozen process; nil for a zombie.
    let process: RemoteProcess?
    /// The wait status and name of a zombie.
    var exitStatus: UInt32 = 0
    var comm = ""

    init(pid: pid_t, ppid: pid_t, process: RemoteProcess?) {
        self.pid = pid
        self.ppid = ppid
        self.process = process
    }
}

/// Checkpoints a process and all its descendants into an images directory.
///
/// Everything is read from outside: /proc, ptrace, and system calls borrowed from the
/// processes' own threads. Until the images are complete nothing about the processes changes
/// that `RemoteProcess.release` cannot undo, so any failure leaves them running as they were.
public enum Dumper {
    public static func dump(_ options: DumpOptions, log: Log) throws -> DumpStatistics {
        let root = options.pid
        var stats = DumpStatistics()
        let start = monotonicMicroseconds()
        log.info("Dumping process tree of \(root) into \(options.images.path)")
        let tree = try freezeTree(root, log: log)
        let frozenAt = monotonicMicroseconds()
        stats.freezingTime = UInt32(frozenAt - start)
        log.info("Froze \(tree.count) process(es) in \(frozenAt - start) µs")
        do {
            try writeImages(tree, options, &stats, log: log)
        } catch {
            log.warn("dump of \(root) failed; the processes are left running as they were")
            for m in tree.reversed() { m.process?.release(.resume) }
            throw error
        }
        stats.frozenTime = UInt32(monotonicMicroseconds() - frozenAt)
        // The images are complete: only now may the processes be killed.
        for m in tree.reversed() { m.process?.release(options.afterDump) }
        try options.images.write("stats-dump.img", magic: .stats, stats.entry)
        log.info("Dump of \(root) finished: \(stats.pagesWritten) pages written, \(stats.pagesSkippedParent) shared with a parent, \(stats.frozenTime) µs frozen")
        return stats
    }

    /// Freezes `root` and then, parents first, every descendant. A frozen process cannot fork,
    /// so once a parent is frozen its list of children is final.
    static func freezeTree(_ root: pid_t, log: Log) throws -> [TreeMember] {
        var tree: [TreeMember] = []
        var queue: [(pid: pid_t, ppid: pid_t)] = [(root, 0)]
        do {
            while !queue.isEmpty {
                let (pid, ppid) = queue.removeFirst()
                let proc = ProcDirectory(pid: pid)
                func isZombie() -> Bool { (try? proc.status()["State"])?.hasPrefix("Z") == true }
                func addZombie() throws {
                    let m = TreeMember(pid: pid, ppid: ppid, process: nil)
                    let stat = try proc.statFields()
                    m.exitStatus = UInt32(stat.last.flatMap { UInt32($0.trimmingCharacters(in: "\n")) } ?? 0)
                    m.comm = (try? proc.text("comm").trimmingCharacters(in: "\n")) ?? ""
                    tree.append(m)
                }
                if isZombie() {
                    guard pid != root else { throw CryoError("process \(pid) is a zombie; there is nothing to dump") }
                    try addZombie()
                    continue
                }
                let process: RemoteProcess
                do { process = try RemoteProcess.freeze(pid) } catch where pid != root {
                    // It exited between the listing and now. Its parent is frozen, so it stays
                    // a zombie — or it is gone, when the parent has its children reaped for it.
                    if isZombie() { try addZombie(); continue }
                    if access(proc.path, F_OK) != 0 { continue }
                    throw error
                }
                tree.append(TreeMember(pid: pid, ppid: ppid, process: process))
                var children = Set<pid_t>()
                for thread in process.threads {
                    let text = (try? proc.task(thread.tid).text("children")) ?? ""
                    for c in text.split(separator: " ") { if let c = pid_t(c.trimmingCharacters(in: "\n")) { children.insert(c) } }
                }
                queue += children.sorted().map { ($0, pid) }
            }
        } catch {
            for m in tree.reversed() { m.process?.release(.resume) }
            throw error
        }
        return tree
    }

    private static func writeImages(_ tree: [TreeMember], _ options: DumpOptions, _ stats: inout DumpStatistics, log: Log) throws {
        let images = options.images
        let members = Set(tree.map(\.pid))
        var files = FileTable()
        var locks: [FileLockEntry] = []
        files.ghostLimit = options.ghostLimit
        files.externalUnixSockets = options.externalUnixSockets
        var pstree: [PstreeEntry] = []
        var rootIDs = TaskKobjIdsEntry()
        var terminalView: [TerminalDump.Member] = []
        // The mappings of each process dumped so far: a child's pages are compared with its
        // parent's, and parents come first (the order `freezeTree` found them in).
        var dumpedVMAs: [pid_t: [VmaEntry]] = [:]
        for (index, m) in tree.enumerated() {
            let id = UInt32(index + 1)
            var ids = TaskKobjIdsEntry()
            ids.vmID = id; ids.filesID = id; ids.fsID = id; ids.sighandID = id
            if index == 0 { rootIDs = ids }
            var entry = PstreeEntry()
            entry.pid = UInt32(m.pid)
            entry.ppid = UInt32(m.ppid)
            if let process = m.process {
                let stat = try process.proc.statFields()
                // stat(5) fields, counted from `state` (field 3) at index 0.
                entry.pgid = UInt32(stat[2]) ?? 0
                entry.sid = UInt32(stat[3]) ?? 0
                entry.threads = process.threads.map { UInt32($0.tid) }
                // stat fields 7 and 8: controlling terminal and its foreground group.
                terminalView.append(.init(pid: m.pid, sid: entry.sid, ttyNr: UInt32(stat[4]) ?? 0, tpgid: Int32(stat[5]) ?? 0))
                let inTree = { (id: UInt32) in members.contains(pid_t(id)) }
                if !options.shellJob && (!inTree(entry.sid) || !inTree(entry.pgid)) {
                    throw CryoError("process \(m.pid) is in session \(entry.sid), group \(entry.pgid), led by a process outside the dump: it was started from a shell job. Start the tree with setsid, or use --shell-job")
                }
                let parent = tree.first { $0.pid == m.ppid }?.process
                let cowParent = try options.cowDedup ? parent.flatMap { p in
                    try dumpedVMAs[p.pid].map { MemoryResource.COWParent(vmas: $0, pagemap: try ProcPagemap(pid: p.pid)) }
                } : nil
                dumpedVMAs[m.pid] = try ProcessDump.write(process, ids: ids, images: images, files: &files, cowParent: cowParent,
                                                          stats: &stats, log: log)
                let held = try FileLockResource.dump(pid: m.pid, fds: (files.descriptors[m.pid] ?? []).map { Int32($0.fd) }, proc: process.proc)
                if !held.isEmpty && !options.fileLocks {
                    throw CryoError("process \(m.pid) holds file locks (fd \(held[0].fd) first); dump with --file-locks to save them")
                }
                locks += held
            } else {
                // A zombie: only its exit status is left, and its parent will reap it.
                let parent = tree.first { $0.pid == m.ppid }
                let stat = try? parent?.process?.proc.statFields()
                entry.pgid = UInt32(stat?[2] ?? "0") ?? 0
                entry.sid = UInt32(stat?[3] ?? "0") ?? 0
                entry.threads = [UInt32(m.pid)]
                var core = CoreEntry()
                core.mtype = .x8664
                var tc = TaskCoreEntry()
                tc.taskState = TaskState.zombie
                tc.exitCode = m.exitStatus
                tc.personality = 0; tc.flags = 0; tc.blkSigset = 0; tc.comm = m.comm
                core.tc = tc
                try images.write("core-\(m.pid).img", magic: .core, core)
            }
            pstree.append(entry)
        }
        var sharedMaps: [UInt64: [(RemoteProcess, VmaEntry)]] = [:]
        var segments: [UInt64: (pid: pid_t, vma: VmaEntry)] = [:]
        for m in tree {
            guard let process = m.process else { continue }
            let mm: MmEntry = try images.readOne("mm-\(m.pid).img", magic: .mm)
            for v in mm.vmas where v.status & MemoryResource.anonShared != 0 { sharedMaps[v.shmid, default: []].append((process, v)) }
            for v in mm.vmas where v.status & SysVSharedMemoryResource.areaSysVIPC != 0 { segments[v.shmid] = segments[v.shmid] ?? (m.pid, v) }
        }
        try SysVSharedMemoryResource.dump(segments, images: images)
        let nextPagesID = try SharedMemoryResource.dump(sharedMaps, firstPagesID: UInt32(tree.count + 1), images: images, stats: &stats)
        try MemfdResource.dump(files.memfds, firstPagesID: nextPagesID, images: images, stats: &stats)
        try GhostFileResource.write(files.ghosts, to: images)
        if !locks.isEmpty { try images.write("file-locks.img", magic: .fileLocks, locks) }
        if !files.terminals.isEmpty {
            let (info, data) = try files.terminals.images(members: terminalView, shellJob: options.shellJob, log: log)
            try images.write("tty-info.img", magic: .ttyInfo, info)
            if !data.isEmpty { try images.write("tty-data.img", magic: .ttyData, data) }
        }
        try files.addExternalPeers()
        try images.write("files.img", magic: .files, files.files)
        if let queues = try files.socketQueuesImage() { try images.writeFile("sk-queues.img", queues) }
        if let data = try files.pipesDataImage() { try images.writeFile("pipes-data.img", data) }
        if let data = try files.fifoDataImage() { try images.writeFile("fifo-data.img", data) }
        try images.write("pstree.img", magic: .pstree, pstree)

        var inventory = InventoryEntry()
        inventory.imgVersion = 2
        inventory.fdinfoPerID = true
        inventory.rootIds = rootIDs
        inventory.lsmtype = .noLsm
        inventory.dumpUptime = UInt64(ProcessInfo.processInfo.systemUptime * 1_000_000)
        try images.write("inventory.img", magic: .inventory, inventory)
    }
}

/// The images of one live process: core (per thread), mm, pagemap and pages, ids, fs, fdinfo.
enum ProcessDump {
    /// Writes the images of `process` and returns its mappings. With `cowParent`, pages it
    /// shares with its parent are not stored again (`MemoryResource.dumpPages`).
    static func write(_ process: RemoteProcess, ids: TaskKobjIdsEntry, images: ImageDirectory, files: inout FileTable,
                      cowParent: MemoryResource.COWParent?, stats: inout DumpStatistics, log: Log) throws -> [VmaEntry] {
        let pid = process.pid
        let proc = process.proc
        let stat = try proc.statFields()

        // What cannot be dumped is found before anything is written.
        try files.addDescriptors(of: pid, log: log)
        let mappings = try proc.mappings().filter { $0.start != process.scratch?.address }
        let vmas = try MemoryResource.vmaEntries(mappings, pid: pid, files: &files)
        log.debug("process \(pid): \(vmas.count) mappings, \(files.descriptors[pid]?.count ?? 0) open fds")
        // Per-process state, from inside the process.
        var tc = TaskCoreEntry()
        tc.taskState = TaskState.alive
        tc.exitCode = 0
        // Small questions only the process can answer, in one batch.
        var questions = try SyscallBatch(for: process)
        let subreaper = try questions.reserve(8)
        let personality = questions.add("personality", Syscall.personality, 0xffff_ffff)
        questions.add("prctl(PR_GET_CHILD_SUBREAPER)", Syscall.prctl, 37, subreaper)
        let brk = questions.add("brk", Syscall.brk, 0)
        let dumpable = questions.add("prctl(PR_GET_DUMPABLE)", Syscall.prctl, 3)
        let thpDisabled = questions.add("prctl(PR_GET_THP_DISABLE)", Syscall.prctl, 42)
        let answers = try process.run(questions)
        tc.childSubreaper = try process.memory.read(Int32.self, at: subreaper) != 0
        tc.personality = UInt32(truncatingIfNeeded: answers[personality])
        tc.flags = UInt32(stat[6]) ?? 0
        tc.blkSigset = process.leader.stoppedSignalMask
        tc.comm = try proc.text("comm").trimmingCharacters(in: "\n")
        tc.timers = try TimersResource.dump(process)
        tc.timers.posix = try PosixTimersResource.dump(process)
        tc.rlimits = try LimitsResource.dump(process)
        tc.sigactions = try SignalsResource.dumpActions(process)
        var shared: [siginfo_t]
        do { shared = try Ptrace.pendingSignals(pid, shared: true) } catch {
            throw CryoError("cannot read pending signals of process \(pid)", errno: error)
        }
        if !shared.isEmpty { tc.signalsS = SignalsResource.queue(shared) }
        if let oom = Int32(try proc.text("oom_score_adj").trimmingCharacters(in: "\n")) { tc.oomScoreAdj = oom }

        var mm = MmEntry()
        // stat fields 26-28 and 45-51 (index = field - 3).
        func field(_ n: Int) -> UInt64 { n - 3 < stat.count ? UInt64(stat[n - 3]) ?? 0 : 0 }
        mm.mmStartCode = field(26); mm.mmEndCode = field(27); mm.mmStartStack = field(28)
        mm.mmStartData = field(45); mm.mmEndData = field(46); mm.mmStartBrk = field(47)
        mm.mmArgStart = field(48); mm.mmArgEnd = field(49); mm.mmEnvStart = field(50); mm.mmEnvEnd = field(51)
        mm.mmBrk = UInt64(answers[brk])
        mm.exeFileID = try files.mappedFile(path: proc.link("exe"), pid: pid)
        mm.mmSavedAuxv = try proc.bytes("auxv").withUnsafeBytes { raw in
            (0..<(raw.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
        }
        mm.dumpable = Int32(truncatingIfNeeded: answers[dumpable])
        mm.thpDisabled = answers[thpDisabled] != 0
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
        let pagesName = "pages-\(ids.vmID).img"
        let partial = images.url(".\(pagesName).partial")
        let pagesFD: FileDescriptor
        do { pagesFD = try FileDescriptor.open(FilePath(partial), .writeOnly, options: [.create, .truncate, .closeOnExec], permissions: [.ownerReadWrite, .groupRead, .otherRead]) }
        catch { throw CryoError("cannot create \(images.url(pagesName))", errno: error as! Errno) }
        let pagemap: [PagemapEntry]
        do {
            pagemap = try pagesFD.closeAfter { try MemoryResource.dumpPages(process: process, vmas: vmas, to: pagesFD, parent: cowParent,
                                                                               stats: &stats, log: log) }
        } catch {
            unlink(partial)
            throw error
        }
        stats.memdumpTime += UInt32(monotonicMicroseconds() - memStart)
        stats.memwriteTime = stats.memdumpTime
        guard rename(partial, images.url(pagesName)) == 0 else {
            throw CryoError("cannot rename \(partial)", errno: Errno(rawValue: errnoValue))
        }

        var head = PagemapHead()
        head.pagesID = ids.vmID
        var pagemapImage = ImageCodec.header(for: .pagemap)
        try ImageCodec.appendEntry(head, to: &pagemapImage)
        for e in pagemap { try ImageCodec.appendEntry(e, to: &pagemapImage) }
        try images.writeFile("pagemap-\(pid).img", pagemapImage)

        try images.write("mm-\(pid).img", magic: .mm, mm)
        for (tid, core) in cores { try images.write("core-\(tid).img", magic: .core, core) }
        try images.write("ids-\(pid).img", magic: .ids, ids)
        try images.write("fs-\(pid).img", magic: .fs, fs)
        try images.write("fdinfo-\(ids.filesID).img", magic: .fdinfo, files.descriptors[pid] ?? [])
        return vmas
    }
}
