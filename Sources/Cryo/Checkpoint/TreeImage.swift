import Glibc
import SystemPackage

/// Everything read from an images directory about one process, checked before anything is
/// created. A zombie has only its pstree entry and its exit status.
struct ProcessImage {
    var pstree: PstreeEntry
    var cores: [pid_t: CoreEntry]
    var mm: MmEntry
    var pagemap: [PagemapEntry]
    var pagesPath: String
    var descriptors: [FdinfoEntry]
    var fs: FsEntry
    /// For a zombie: the wait status it must leave for its parent.
    var zombieStatus: UInt32?

    var pid: pid_t { pid_t(pstree.pid) }
    var leader: CoreEntry { cores[pid]! }
    var isZombie: Bool { zombieStatus != nil }

    static func load(_ images: ImageDirectory, _ entry: PstreeEntry) throws -> ProcessImage {
        let pid = pid_t(entry.pid)
        var cores: [pid_t: CoreEntry] = [:]
        for tid in entry.threads {
            let core: CoreEntry = try images.readOne("core-\(tid).img", magic: .core)
            guard core.mtype == .x8664 else {
                throw CryoError("\(images.url("core-\(tid).img")) is not an x86_64 thread image")
            }
            cores[pid_t(tid)] = core
        }
        guard let leader = cores[pid], leader.hasTc else { throw CryoError("\(images.url("core-\(pid).img")) has no task state") }
        if leader.tc.taskState == TaskState.zombie {
            return ProcessImage(pstree: entry, cores: cores, mm: MmEntry(), pagemap: [], pagesPath: "", descriptors: [],
                                fs: FsEntry(), zombieStatus: leader.tc.exitCode)
        }
        guard leader.tc.taskState == TaskState.alive else {
            throw CryoError("\(images.url("core-\(pid).img")): task state \(leader.tc.taskState) is not supported")
        }
        for (tid, core) in cores where !core.hasThreadInfo {
            throw CryoError("\(images.url("core-\(tid).img")) has no registers")
        }
        let mm: MmEntry = try images.readOne("mm-\(pid).img", magic: .mm)
        let ids: TaskKobjIdsEntry = try images.readOne("ids-\(pid).img", magic: .ids)
        let fs: FsEntry = try images.readOne("fs-\(pid).img", magic: .fs)
        let descriptors: [FdinfoEntry] = try images.read("fdinfo-\(ids.filesID).img", magic: .fdinfo)
        let pagemapFile = images.url("pagemap-\(pid).img")
        let (head, pagemap) = try images.readPagemap("pagemap-\(pid).img")
        let pagesPath = images.url("pages-\(head.pagesID).img")
        var st = stat()
        guard stat(pagesPath, &st) == 0 else { throw CryoError("cannot restore: \(pagesPath) is missing", errno: Errno(rawValue: errnoValue)) }
        let expected = pagemap.reduce(UInt64(0)) { $0 + $1.storedBytes }
        guard UInt64(st.st_size) == expected else {
            throw CryoError("cannot restore: \(pagesPath) holds \(st.st_size) bytes but \(pagemapFile) describes \(expected)")
        }
        return ProcessImage(pstree: entry, cores: cores, mm: mm, pagemap: pagemap, pagesPath: pagesPath,
                            descriptors: descriptors, fs: fs, zombieStatus: nil)
    }

    /// The file ids this process uses.
    var fileIDs: Set<UInt32> {
        guard !isZombie else { return [] }
        var used = Set(descriptors.map(\.id))
        used.insert(mm.exeFileID)
        used.insert(fs.cwdID)
        used.insert(fs.rootID)
        for v in mm.vmas where v.status & (MemoryResource.filePrivate | MemoryResource.fileShared) != 0 { used.insert(UInt32(v.shmid)) }
        return used
    }

    /// Cross-checks the process's images, and pages it has from `parent`, the process it is
    /// forked from on restore (nil for the root).
    func verify(parent: ProcessImage?) throws {
        for e in pagemap {
            guard mm.vmas.contains(where: { $0.start <= e.vaddr && e.vaddr + UInt64(e.nrPages) * 4096 <= $0.end }) else {
                throw CryoError("cannot restore: pagemap entry at 0x\(String(e.vaddr, radix: 16)) lies outside every mapping of mm-\(pid).img")
            }
        }
        try verifyPagesFromParent(parent)
    }

    /// Pages marked as the parent's (`MemoryResource.pageCOWParent`) are only restored right
    /// if the child keeps the parent's mapping there (so it must be inherited) and the parent
    /// has pages there to keep (stored, or its own parent's again).
    private func verifyPagesFromParent(_ parent: ProcessImage?) throws {
        let fromParent = pagemap.filter { !$0.isStored }
        guard let first = fromParent.first else { return }
        func at(_ e: PagemapEntry) -> String { "the pages at 0x\(String(e.vaddr, radix: 16)) (\(e.nrPages))" }
        guard let parent, !parent.isZombie else {
            throw CryoError("cannot restore process \(pid): pagemap-\(pid).img marks \(at(first)) as its parent's, but it is not forked from a live process of the dump")
        }
        let inherited = MemoryResource.inheritedMappings(mm.vmas, parentVMAs: parent.mm.vmas)
        // The parent's pages as sorted, merged address ranges.
        var theirs: [Range<UInt64>] = []
        for e in parent.pagemap.sorted(by: { $0.vaddr < $1.vaddr }) {
            let range = e.vaddr..<e.vaddr + UInt64(e.nrPages) * 4096
            if let last = theirs.last, last.upperBound == range.lowerBound { theirs[theirs.count - 1] = last.lowerBound..<range.upperBound }
            else { theirs.append(range) }
        }
        for e in fromParent {
            let range = e.vaddr..<e.vaddr + UInt64(e.nrPages) * 4096
            guard inherited.contains(where: { $0.start <= range.lowerBound && range.upperBound <= $0.end }) else {
                throw CryoError("cannot restore process \(pid): pagemap-\(pid).img marks \(at(e)) as its parent's, but that mapping is not the same in its parent \(parent.pid) (mm-\(parent.pid).img), so it is not inherited")
            }
            guard theirs.contains(where: { $0.lowerBound <= range.lowerBound && range.upperBound <= $0.upperBound }) else {
                throw CryoError("cannot restore process \(pid): pagemap-\(pid).img marks \(at(e)) as its parent's, but pagemap-\(parent.pid).img has no pages there")
            }
        }
    }
}

/// A whole dump: the process tree and the files its processes share.
struct TreeImage {
    /// Processes in pstree order: every parent before its children.
    var processes: [ProcessImage]
    var files: [UInt32: FileEntry]
    /// File locks to take again.
    var locks: [FileLockEntry] = []
    /// Deleted files recreated for the restore; removed when it ends.
    let ghosts: GhostFiles

    var root: ProcessImage { processes[0] }

    func children(of pid: pid_t) -> [ProcessImage] {
        processes.filter { pid_t($0.pstree.ppid) == pid && $0.pid != pid }
    }

    func process(_ pid: pid_t) -> ProcessImage? { processes.first { $0.pid == pid } }

    /// CRIU's shell-job rule: a tree whose session leader was outside the dump (a job started
    /// from a shell) joins the session of the restoring Cryo, and, unless the root led its own
    /// process group, Cryo's group too — so the shell running Cryo sees the job as its own.
    /// The restored root is Cryo's child and inherits both, so only the ids change here.
    mutating func joinRestoringSession(shellJob: Bool, log: Log) throws {
        let root = processes[0].pstree
        let pids = Set(processes.map { UInt32($0.pid) })
        guard !pids.contains(root.sid) else { return }
        guard shellJob else {
            throw CryoError("cannot restore: process \(root.pid) was in session \(root.sid), led by a process outside the dump (a shell job); restore it with --shell-job (-j) to make it part of cryo's session")
        }
        let sid = UInt32(getsid(0)), pgid = UInt32(getpgrp())
        for id in [sid, pgid] where pids.contains(id) {
            throw CryoError("cannot restore with --shell-job: cryo's session or process group \(id) is the pid of a process of the dump")
        }
        let oldGroup = root.pgid
        let joinGroup = oldGroup != root.pid
        log.info("shell job: session \(root.sid) -> \(sid)" + (joinGroup ? ", group \(oldGroup) -> \(pgid)" : ""))
        for i in processes.indices {
            if processes[i].pstree.sid == root.sid { processes[i].pstree.sid = sid }
            if joinGroup && processes[i].pstree.pgid == oldGroup { processes[i].pstree.pgid = pgid }
        }
    }

    static func load(_ images: ImageDirectory) throws -> TreeImage {
        guard images.contains("inventory.img") else {
            throw CryoError("\(images.path) holds no complete dump: inventory.img is missing")
        }
        let inventory: InventoryEntry = try images.readOne("inventory.img", magic: .inventory)
        guard inventory.imgVersion == 2 else {
            throw CryoError("\(images.url("inventory.img")): image version \(inventory.imgVersion) is not supported (expected 2)")
        }
        let tree: [PstreeEntry] = try images.read("pstree.img", magic: .pstree)
        guard !tree.isEmpty else { throw CryoError("\(images.url("pstree.img")) describes no process") }
        let processes = try tree.map { try ProcessImage.load(images, $0) }
        guard !processes[0].isZombie else { throw CryoError("the root of the dump is a zombie") }
        let pids = Set(processes.map(\.pid))
        for p in processes.dropFirst() where !pids.contains(pid_t(p.pstree.ppid)) {
            throw CryoError("\(images.url("pstree.img")): process \(p.pid) has parent \(p.pstree.ppid), which is not in the dump")
        }
        let fileList: [FileEntry] = try images.read("files.img", magic: .files)
        var files: [UInt32: FileEntry] = [:]
        for f in fileList { files[f.id] = f }
        let ghosts = try GhostFiles(images, files: &files)
        var image = TreeImage(processes: processes, files: files, ghosts: ghosts)
        if images.contains("file-locks.img") { image.locks = try images.read("file-locks.img", magic: .fileLocks) }
        for p in processes {
            try p.verify(parent: p.pid == processes[0].pid ? nil : image.process(pid_t(p.pstree.ppid)))
            for id in p.fileIDs.sorted() {
                guard let f = files[id] else { throw CryoError("cannot restore: files.img has no entry for file id \(id) (process \(p.pid))") }
                try f.verifyForRestore()
                if f.hasFifo {
                    guard let path = files[f.fifo.regfID] else { throw CryoError("cannot restore: files.img has no path entry \(f.fifo.regfID) for FIFO id \(id)") }
                    try path.verifyForRestore()
                }
            }
        }
        return image
    }
}
