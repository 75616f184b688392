import Glibc

/// An images directory read for analysis: the process tree, each process's images, the file
/// table, inventory and statistics. Works on Cryo's dumps and CRIU's alike (the same format).
///
/// Per-process images are read when first asked for; every problem is an
/// ``ImageFormatError`` naming the file.
public final class DumpImages {
    /// The images directory.
    public let directory: String
    /// `inventory.img`; nil if missing (an incomplete dump: it is written last).
    public let inventory: InventoryEntry?
    /// `pstree.img`, in file order (parents before children).
    public let pstree: [PstreeEntry]
    /// The file table (`files.img`, or the older per-kind `reg-files.img`...), by file id.
    public let files: [UInt32: FileEntry]
    /// `stats-dump.img`, if there is one.
    public let dumpStats: DumpStatsEntry?
    /// `stats-restore.img`, if there is one.
    public let restoreStats: RestoreStatsEntry?
    private var cache: [UInt32: ProcessImages] = [:]

    /// Reads the tree, file table, inventory and statistics of the dump in `directory`.
    public init(directory: String) throws {
        self.directory = directory
        var st = stat()
        guard stat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw ImageFormatError(.io, file: directory, offset: nil, "not an images directory")
        }
        func path(_ name: String) -> String { "\(directory)/\(name)" }
        func exists(_ name: String) -> Bool { access(path(name), F_OK) == 0 }
        inventory = exists("inventory.img") ? try ImageReader.first(path("inventory.img"), magic: .inventory) : nil
        guard exists("pstree.img") else {
            throw ImageFormatError(.inconsistent, file: path("pstree.img"), offset: nil, "missing: this is not a dump's images directory")
        }
        pstree = try ImageReader.entries(path("pstree.img"), magic: .pstree)
        var files: [UInt32: FileEntry] = [:]
        if exists("files.img") {
            for f in try ImageReader.entries(path("files.img"), magic: .files, as: FileEntry.self) { files[f.id] = f }
        }
        // CRIU before files.img kept one image per kind; regular files are the ones that matter.
        if exists("reg-files.img") {
            for r in try ImageReader.entries(path("reg-files.img"), magic: .regFiles, as: RegFileEntry.self) where files[r.id] == nil {
                var f = FileEntry()
                f.type = .reg
                f.id = r.id
                f.reg = r
                files[r.id] = f
            }
        }
        self.files = files
        let stats = { (name: String) -> StatsEntry? in
            exists(name) ? try? ImageReader.first(path(name), magic: .stats, as: StatsEntry.self) : nil
        }
        dumpStats = stats("stats-dump.img").flatMap { $0.hasDump ? $0.dump : nil }
        restoreStats = stats("stats-restore.img").flatMap { $0.hasRestore ? $0.restore : nil }
    }

    /// The path of an image in the directory.
    public func path(_ name: String) -> String { "\(directory)/\(name)" }

    /// Whether an image exists in the directory.
    public func contains(_ name: String) -> Bool { access(path(name), F_OK) == 0 }

    /// The pids of the tree, in pstree order.
    public var pids: [UInt32] { pstree.map(\.pid) }

    /// The root processes: those whose parent is not in the dump.
    public var roots: [PstreeEntry] {
        let all = Set(pids)
        return pstree.filter { $0.ppid == 0 || !all.contains($0.ppid) }
    }

    /// The children of `pid` in the dump, in pstree order.
    public func children(of pid: UInt32) -> [PstreeEntry] { pstree.filter { $0.ppid == pid && $0.pid != pid } }

    /// The images of process `pid`.
    public func process(_ pid: UInt32) throws -> ProcessImages {
        if let p = cache[pid] { return p }
        guard let entry = pstree.first(where: { $0.pid == pid }) else {
            throw ImageFormatError(.inconsistent, file: path("pstree.img"), offset: nil, "has no process \(pid)")
        }
        let p = try ProcessImages(self, entry)
        cache[pid] = p
        return p
    }

    /// A short description of what file `id` of type `type` is, in crit's words for regular
    /// files (`/path`), pipes (`pipe[N]`) and unix sockets (`unix[ino (peer) name]`), and with
    /// addresses for inet sockets; other kinds are `TYPE.id` as in crit.
    public func describeFile(id: UInt32, type: FdTypes) -> String {
        let typeName = CriuSchema.shared.enums["fd_types"]?.names[Int32(type.rawValue)] ?? "\(type.rawValue)"
        let f = files[id]
        switch type {
        case .reg:
            guard let f, f.hasReg else { return "unknown path" }
            return f.reg.name
        case .pipe:
            guard let f, f.hasPipe else { return "pipe[?]" }
            return "pipe[\(f.pipe.pipeID)]"
        case .fifo:
            guard let f, f.hasFifo else { return "fifo[?]" }
            return "fifo[\(f.fifo.pipeID)]"
        case .unixsk:
            guard let f, f.hasUsk else { return "unix[?]" }
            let name = f.usk.name.isEmpty ? "" : " " + CritText.quotedPrintable(Array(f.usk.name))
            return "unix[\(f.usk.ino) (\(f.usk.peer))\(name)]"
        case .inetsk:
            guard let f, f.hasIsk else { return "\(typeName).\(id)" }
            return InetSocketText(f.isk).description
        case .eventfd:
            guard let f, f.hasEfd else { return "\(typeName).\(id)" }
            return "eventfd[counter \(f.efd.counter)]"
        case .tty:
            // CRIU's tty_info_id is the pty index times two, plus one for the master.
            guard let f, f.hasTty else { return "\(typeName).\(id)" }
            let index = f.tty.ttyInfoID >> 1
            return f.tty.ttyInfoID & 1 == 1 ? "/dev/ptmx [pts \(index)]" : "/dev/pts/\(index)"
        default:
            return "\(typeName).\(id)"
        }
    }
}

/// An inet socket in one line: `tcp 127.0.0.1:8080 -> 10.0.0.2:51234 ESTABLISHED`.
struct InetSocketText: CustomStringConvertible {
    let entry: InetSkEntry

    init(_ entry: InetSkEntry) { self.entry = entry }

    var description: String {
        let proto = CritText.dictMaps["sk"]?["proto"]?[Int64(entry.proto)]?.lowercased() ?? "proto\(entry.proto)"
        let v6 = entry.family == 10
        func address(_ words: [UInt32], _ port: UInt32) -> String {
            let text = CritText.ipAddress(words.isEmpty ? (v6 ? [0, 0, 0, 0] : [0]) : words) ?? "?"
            return v6 ? "[\(text)]:\(port)" : "\(text):\(port)"
        }
        let state = CritText.dictMaps["sk"]?["state"]?[Int64(entry.state)] ?? "state \(entry.state)"
        return "\(proto)\(v6 ? "6" : "") \(address(entry.srcAddr, entry.srcPort)) -> \(address(entry.dstAddr, entry.dstPort)) \(state)"
    }
}

/// The images of one process: its threads' cores, memory map, pagemap, descriptors, fs.
public struct ProcessImages {
    /// The process's pstree entry.
    public let entry: PstreeEntry
    /// Each thread's core image, in pstree order (the leader first when it is listed first).
    public let cores: [(tid: UInt32, core: CoreEntry)]
    /// `ids-PID.img` (or the ids kept in the core by older CRIU); nil for a zombie.
    public let ids: TaskKobjIdsEntry?
    /// `mm-PID.img`; nil for a zombie.
    public let mm: MmEntry?
    /// `fs-PID.img`; nil for a zombie or if missing.
    public let fs: FsEntry?
    /// The open descriptors (`fdinfo-<files_id>.img`).
    public let fds: [FdinfoEntry]
    /// The pagemap (`pagemap-PID.img`), if there is one.
    public let pagemap: (head: PagemapHead, entries: [PagemapEntry])?
    /// The directory the images are in.
    public let directory: String

    /// The pid.
    public var pid: UInt32 { entry.pid }
    /// The leader thread's core (the one holding the task state `tc`).
    public var leader: CoreEntry { cores.first { $0.tid == entry.pid }?.core ?? cores[0].core }
    /// Whether the process was a zombie when dumped.
    /// (CRIU's task states: 1 alive, 2 dead, 3 stopped, 6 zombie. crit's pretty names for 3
    /// and 6 are swapped.)
    public var isZombie: Bool { mm == nil && leader.hasTc && (leader.tc.taskState == 6 || leader.tc.taskState == 2) }
    /// CRIU's name for the task state.
    public var state: String {
        switch leader.hasTc ? leader.tc.taskState : 1 {
        case 1: "alive"
        case 2: "dead"
        case 3: "stopped"
        case 6: "zombie"
        case let n: "state \(n)"
        }
    }
    /// The command name (`comm`).
    public var command: String { leader.hasTc ? leader.tc.comm : (leader.threadCore.hasComm ? leader.threadCore.comm : "?") }

    init(_ dump: DumpImages, _ entry: PstreeEntry) throws {
        self.entry = entry
        directory = dump.directory
        let pid = entry.pid
        let tids = entry.threads.isEmpty ? [pid] : entry.threads
        cores = try tids.map { tid in (tid, try ImageReader.first(dump.path("core-\(tid).img"), magic: .core, as: CoreEntry.self)) }
        let leader = cores.first { $0.tid == pid }?.core ?? cores[0].core
        let state = leader.hasTc ? leader.tc.taskState : 1
        guard state != 6 && state != 2 && dump.contains("mm-\(pid).img") else {
            // A zombie (or dead task) has only its core.
            ids = nil; mm = nil; fs = nil; fds = []; pagemap = nil
            return
        }
        if dump.contains("ids-\(pid).img") {
            ids = try ImageReader.first(dump.path("ids-\(pid).img"), magic: .ids)
        } else {
            ids = leader.hasIds ? leader.ids : nil
        }
        mm = try ImageReader.first(dump.path("mm-\(pid).img"), magic: .mm)
        fs = dump.contains("fs-\(pid).img") ? try ImageReader.first(dump.path("fs-\(pid).img"), magic: .fs) : nil
        let filesID = ids?.filesID ?? pid
        let fdinfo = dump.contains("fdinfo-\(filesID).img") ? "fdinfo-\(filesID).img" : "fdinfo-\(pid).img"
        fds = dump.contains(fdinfo) ? try ImageReader.entries(dump.path(fdinfo), magic: .fdinfo) : []
        pagemap = dump.contains("pagemap-\(pid).img") ? try ImageReader.pagemap(dump.path("pagemap-\(pid).img")) : nil
    }
}
