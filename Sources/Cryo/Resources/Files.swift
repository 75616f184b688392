import Foundation
import CLinux
import Glibc
import SystemPackage

/// Open files of a process: regular files, directories and harmless character devices
/// (`/dev/null`, `/dev/zero`, `/dev/urandom`...), as `files.img` (one `FileEntry` per open file
/// description) and `fdinfo-N.img` (which fd number points at which description).
///
/// Files a process only maps (libraries, the executable) get entries too: VMAs and `mm.exe`
/// refer to them by id.
struct FileTable {
    /// Entries for `files.img`.
    private(set) var files: [FileEntry] = []
    /// Entries for each process's `fdinfo-N.img`.
    private(set) var descriptors: [pid_t: [FdinfoEntry]] = [:]
    /// For each pipe (by inode): one (pid, fd) that reads from it, to copy its buffer.
    private(set) var pipeReaders: [UInt32: (pid: pid_t, fd: Int32)] = [:]
    /// sock_diag's view of unix sockets, read once per dump.
    private var unixSockets: [UInt32: cl_unix_socket]?
    /// Unix sockets with unread data: (file id, type, pid, fd).
    private var socketReaders: [(id: UInt32, type: UInt8, pid: pid_t, fd: Int32)] = []
    /// Every pipe seen.
    private(set) var pipeIDs = Set<UInt32>()
    /// For each FIFO (by inode): one (pid, fd) open on it, to copy its buffer.
    private var fifos: [UInt32: (pid: pid_t, fd: Int32)] = [:]
    /// Every fd seen so far, by inode, to find open file descriptions shared across processes.
    private var seenByInode: [String: [(pid: pid_t, fd: Int32, id: UInt32)]] = [:]
    private var nextID: UInt32 = 1
    /// `--ghost-limit`: the largest deleted file whose contents are saved.
    var ghostLimit = GhostFileResource.defaultLimit
    /// `--ext-unix-sk`: see `addExternalPeers`.
    var externalUnixSockets = false
    /// Deleted files, with the id of the entry each stands for.
    private(set) var ghosts: [(origID: UInt32, entry: GhostFileEntry, data: [UInt8])] = []
    private var pathIDs: [String: UInt32] = [:]
    /// The memfds of the tree, in `memfd.img` order (inode id = index + 1): the link text and a
    /// path Cryo can read each through.
    private(set) var memfds: [(inodeID: UInt32, target: String, openPath: String)] = []
    /// "dev:ino" of each memfd -> its inode id.
    private var memfdIDs: [String: UInt32] = [:]
    /// Pseudo-terminals seen, for `tty-info.img` and `tty-data.img`.
    private(set) var terminals = TerminalDump()

    /// Character devices a process may keep open across a checkpoint: they carry no state.
    static let statelessDevices: Set<String> = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]

    /// A new file id: one per open file description in the whole tree.
    private mutating func takeID() -> UInt32 {
        defer { nextID += 1 }
        return nextID
    }

    private mutating func add(path: String, flags: UInt32, pos: UInt64, st: stat) -> UInt32 {
        let id = takeID()
        var reg = RegFileEntry()
        reg.id = id
        reg.flags = flags
        reg.pos = pos
        reg.fown = Self.noOwner
        reg.name = path
        reg.mode = st.st_mode
        if st.st_mode & S_IFMT == S_IFREG { reg.size = UInt64(st.st_size) }
        var file = FileEntry()
        file.type = .reg
        file.id = id
        file.reg = reg
        files.append(file)
        return id
    }

    private mutating func addGhost(openPath: String, target: String, flags: UInt32, pos: UInt64, st: stat) throws -> UInt32 {
        let (ghost, data) = try GhostFileResource.capture(openPath: openPath, shownAs: target, st: st, limit: ghostLimit)
        let id = add(path: GhostFileResource.originalPath(target), flags: flags, pos: pos, st: st)
        ghosts.append((id, ghost, data))
        return id
    }

    private mutating func addMemfd(target: String, openPath: String, flags: UInt32, pos: UInt64, st: stat) -> UInt32 {
        let key = "\(st.st_dev):\(st.st_ino)"
        let inodeID = memfdIDs[key] ?? UInt32(memfds.count + 1)
        if memfdIDs[key] == nil {
            memfdIDs[key] = inodeID
            memfds.append((inodeID, target, openPath))
        }
        let id = takeID()
        var m = MemfdFileEntry()
        m.id = id
        m.flags = flags
        m.pos = pos
        m.fown = Self.noOwner
        m.inodeID = inodeID
        var file = FileEntry()
        file.type = .memfd
        file.id = id
        file.memfd = m
        files.append(file)
        return id
    }

    private mutating func addPipe(inode: UInt32, flags: UInt32) -> UInt32 {
        let id = takeID()
        var pipe = PipeEntry()
        pipe.id = id
        pipe.pipeID = inode
        pipe.flags = flags
        pipe.fown = Self.noOwner
        var file = FileEntry()
        file.type = .pipe
        file.id = id
        file.pipe = pipe
        files.append(file)
        pipeIDs.insert(inode)
        return id
    }

    static var noOwner: FownEntry {
        var fown = FownEntry()
        fown.uid = 0; fown.euid = 0; fown.signum = 0; fown.pidType = 0; fown.pid = 0
        return fown
    }

    /// Checks that every connected unix socket's peer belongs to the dump; with
    /// `externalUnixSockets`, adds an entry for each named peer outside it that datagram
    /// sockets are connected to (marked external, as CRIU does), to connect to on restore.
    mutating func addExternalPeers() throws {
        var known = Set(files.filter(\.hasUsk).map(\.usk.ino))
        for f in files where f.hasUsk && f.usk.peer != 0 && !known.contains(f.usk.peer) {
            let what = "unix socket socket:[\(f.usk.ino)] is connected to socket:[\(f.usk.peer)], which belongs to no process of the dump"
            guard externalUnixSockets else {
                throw CryoError("\(what); datagram sockets connected to a named socket can be dumped with --ext-unix-sk")
            }
            guard let peer = unixSockets?[f.usk.peer] else { throw CryoError("\(what) and is gone") }
            let entry = try UnixSocketResource.externalPeer(id: takeID(), socket: peer, for: f.usk, what: what)
            files.append(entry)
            known.insert(peer.inode)
        }
    }

    /// `sk-queues.img`: unread data of unix sockets.
    func socketQueuesImage() throws -> [UInt8]? {
        guard !socketReaders.isEmpty else { return nil }
        var image = ImageCodec.header(for: .skQueues)
        for r in socketReaders {
            for (entry, data) in try UnixSocketResource.captureQueue(id: r.id, type: r.type, pid: r.pid, fd: r.fd) {
                try ImageCodec.appendEntry(entry, to: &image)
                image += data
            }
        }
        return image
    }

    /// `pipes-data.img`: what is buffered in each pipe that some process of the tree reads.
    func pipesDataImage() throws -> [UInt8]? {
        guard !pipeIDs.isEmpty else { return nil }
        var image = ImageCodec.header(for: .pipesData)
        for id in pipeIDs.sorted() {
            guard let reader = pipeReaders[id] else { continue }
            let (entry, data) = try PipeResource.capture(pipeID: id, pid: reader.pid, readEnd: reader.fd)
            try PipeResource.append(entry, data, to: &image)
        }
        return image
    }

    /// `fifo-data.img`: what is buffered in each FIFO the tree has open.
    func fifoDataImage() throws -> [UInt8]? {
        guard !fifos.isEmpty else { return nil }
        var image = ImageCodec.header(for: .fifoData)
        for (id, user) in fifos.sorted(by: { $0.key < $1.key }) {
            let (entry, data) = try FifoResource.capture(pipeID: id, pid: user.pid, fd: user.fd)
            try PipeResource.append(entry, data, to: &image)
        }
        return image
    }

    /// The id of a read-only entry for a file the process maps (or runs, or has as cwd/root).
    mutating func mappedFile(path: String, pid: pid_t, mapping: Mapping? = nil) throws -> UInt32 {
        if let id = pathIDs[path] { return id }
        if path.hasSuffix(" (deleted)"), let m = mapping {
            let open = "/proc/\(pid)/map_files/\(String(m.start, radix: 16))-\(String(m.end, radix: 16))"
            var st = stat()
            guard stat(open, &st) == 0 else { throw CryoError("cannot stat \(open)", errno: Errno(rawValue: errnoValue)) }
            if MemfdResource.isMemfd(path) {
                // Two memfds may have one name: they are told apart by inode.
                let key = "memfd \(st.st_dev):\(st.st_ino)"
                if let id = pathIDs[key] { return id }
                let id = addMemfd(target: path, openPath: open, flags: UInt32(O_RDWR), pos: 0, st: st)
                pathIDs[key] = id
                return id
            }
            let id = try addGhost(openPath: open, target: path, flags: UInt32(O_RDONLY), pos: 0, st: st)
            pathIDs[path] = id
            return id
        }
        if path.hasSuffix(" (deleted)") {
            throw CryoError("process \(pid) uses \(path), a file deleted since; Cryo cannot dump that")
        }
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw CryoError("process \(pid) uses \(path), which cannot be found", errno: Errno(rawValue: errnoValue))
        }
        let id = add(path: path, flags: UInt32(O_RDONLY), pos: 0, st: st)
        pathIDs[path] = id
        return id
    }

    /// Adds every open fd of the process, refusing kinds Cryo cannot restore yet; `log` hears
    /// of state that is dropped on the way (unread inotify events).
    mutating func addDescriptors(of pid: pid_t, log: Log) throws {
        let proc = ProcDirectory(pid: pid)
        var list: [FdinfoEntry] = []
        for fd in try proc.fdNumbers() {
            let target: String
            do { target = try proc.link("fd/\(fd)") } catch { continue } // closed meanwhile
            var st = stat()
            guard stat("\(proc.path)/fd/\(fd)", &st) == 0 else {
                throw CryoError("cannot stat fd \(fd) (\(target)) of process \(pid)", errno: Errno(rawValue: errnoValue))
            }
            let info = try proc.fdInfo(fd)
            let openFlags = UInt32(info["flags"].flatMap { UInt32($0, radix: 8) } ?? 0)
            let pos = UInt64(info["pos"] ?? "0") ?? 0
            let isPipe = target.hasPrefix("pipe:")
            let isMemfd = MemfdResource.isMemfd(target) && st.st_mode & S_IFMT == S_IFREG
            let isFifo = !isPipe && st.st_mode & S_IFMT == S_IFIFO && target.hasPrefix("/") && !target.hasSuffix(" (deleted)")
            // anon_inode files Cryo recreates itself from their fdinfo.
            let anonKind = EventFileResource.kinds[target] ?? InotifyResource.kinds[target]
            var unix: cl_unix_socket?
            if target.hasPrefix("socket:") {
                if unixSockets == nil { unixSockets = try UnixSocketResource.table() }
                unix = unixSockets?[UInt32(truncatingIfNeeded: st.st_ino)]
            }
            // Any other socket: InetSocketResource dumps TCP and UDP ones and names the rest.
            let isInet = target.hasPrefix("socket:") && unix == nil
            let isTerminal = st.st_mode & S_IFMT == S_IFCHR && TerminalResource.peer(rdev: UInt64(st.st_rdev)) != nil
            if !isPipe && !isFifo && anonKind == nil && unix == nil && !isInet && !isTerminal { try Self.checkSupported(fd: fd, target: target, st: st, pid: pid) }
            var entry = FdinfoEntry()
            entry.fd = UInt32(fd)
            entry.type = isPipe ? .pipe : isFifo ? .fifo : isMemfd ? .memfd : unix != nil ? .unixsk : isInet ? .inetsk : isTerminal ? .tty : anonKind ?? .reg
            entry.flags = openFlags & UInt32(O_CLOEXEC) != 0 ? UInt32(FD_CLOEXEC) : 0
            // fds sharing one open file description (dup, fork) share an id, so they share the
            // offset, within a process and across the tree.
            let inode = "\(st.st_dev):\(st.st_ino)"
            if let twin = seenByInode[inode, default: []].first(where: { Self.sameDescription($0.pid, $0.fd, pid, fd) }) {
                entry.id = twin.id
            } else if let unix {
                let id = takeID()
                files.append(try UnixSocketResource.entry(id: id, flags: openFlags & ~UInt32(O_CLOEXEC), socket: unix, pid: pid, fd: fd))
                if unix.receive_queue > 0 { socketReaders.append((id, unix.type, pid, fd)) }
                entry.id = id
            } else if isInet {
                let id = takeID()
                files.append(try InetSocketResource.entry(id: id, flags: openFlags & ~UInt32(O_CLOEXEC), inode: UInt32(truncatingIfNeeded: st.st_ino), pid: pid, fd: fd, log: log))
                entry.id = id
            } else if let anonKind {
                let id = takeID()
                let fdinfo = try proc.text("fdinfo/\(fd)")
                let flags = openFlags & ~UInt32(O_CLOEXEC)
                if anonKind == .inotify {
                    files.append(try InotifyResource.entry(id: id, flags: flags, fdinfo: fdinfo, pid: pid, fd: fd))
                    if let unread = InotifyResource.unreadBytes(pid: pid, fd: fd), unread > 0 {
                        log.warn("fd \(fd) of process \(pid): \(unread) bytes of inotify events are queued unread; they are not saved, and the restored process will not see them (CRIU drops them too)")
                    }
                } else {
                    files.append(try EventFileResource.entry(id: id, kind: anonKind, flags: flags, fdinfo: fdinfo, pid: pid, fd: fd))
                }
                entry.id = id
            } else if isFifo {
                // The path and open flags go in a regular-file entry of their own, as CRIU does.
                let inode = UInt32(truncatingIfNeeded: st.st_ino)
                let path = add(path: target, flags: openFlags & ~UInt32(O_CLOEXEC), pos: 0, st: st)
                let id = takeID()
                files.append(FifoResource.entry(id: id, regfID: path, inode: inode))
                fifos[inode] = fifos[inode] ?? (pid, fd)
                entry.id = id
            } else if isTerminal {
                let id = takeID()
                files.append(try terminals.entry(id: id, fd: fd, pid: pid, target: target, st: st, flags: openFlags & ~UInt32(O_CLOEXEC)))
                entry.id = id
            } else if isPipe {
                entry.id = addPipe(inode: UInt32(truncatingIfNeeded: st.st_ino), flags: openFlags & ~UInt32(O_CLOEXEC))
            } else if isMemfd {
                entry.id = addMemfd(target: target, openPath: "\(proc.path)/fd/\(fd)", flags: openFlags & ~UInt32(O_CLOEXEC), pos: pos, st: st)
            } else if target.hasSuffix(" (deleted)") {
                entry.id = try addGhost(openPath: "\(proc.path)/fd/\(fd)", target: target, flags: openFlags & ~UInt32(O_CLOEXEC), pos: pos, st: st)
            } else {
                entry.id = add(path: target, flags: openFlags & ~UInt32(O_CLOEXEC), pos: pos, st: st)
            }
            if isPipe && Int32(bitPattern: openFlags) & O_ACCMODE != O_WRONLY {
                pipeReaders[UInt32(truncatingIfNeeded: st.st_ino)] = pipeReaders[UInt32(truncatingIfNeeded: st.st_ino)] ?? (pid, fd)
            }
            // One representative per description is enough to compare with.
            if !(seenByInode[inode]?.contains { $0.id == entry.id } ?? false) {
                seenByInode[inode, default: []].append((pid, fd, entry.id))
            }
            list.append(entry)
        }
        descriptors[pid] = list
    }

    private static func sameDescription(_ pidA: pid_t, _ a: Int32, _ pidB: pid_t, _ b: Int32) -> Bool {
        // kcmp(pidA, pidB, KCMP_FILE, a, b) == 0
        cl_raw_syscall6(312, Int(pidA), Int(pidB), 0, Int(a), Int(b), 0) == 0
    }

    private static func checkSupported(fd: Int32, target: String, st: stat, pid: pid_t) throws {
        let what = "fd \(fd) of process \(pid) is"
        let type = st.st_mode & S_IFMT
        if type == S_IFIFO { throw CryoError("\(what) a FIFO (\(target)) that has no path any more; Cryo cannot dump it") }
        if target == "anon_inode:[fanotify]" {
            throw CryoError("\(what) a fanotify group (\(target)); Cryo cannot dump fanotify groups and their marks yet")
        }
        if target.hasPrefix("anon_inode:") { throw CryoError("\(what) \(target); Cryo cannot dump this kind of file yet") }
        if type == S_IFCHR {
            if statelessDevices.contains(target) { return }
            let (major, minor) = TerminalResource.majorMinor(UInt64(st.st_rdev))
            // /dev/tty names no terminal but the session's controlling one: reopened by path
            // from inside the process, once its session has its terminal again.
            if target == "/dev/tty" && major == TerminalResource.auxMajor && minor == 0 { return }
            if major == 4 || major == TerminalResource.auxMajor {
                throw CryoError("\(what) the terminal \(target), which is not a pseudo-terminal: Cryo restores ptys only (the tree's own, and with --shell-job the one it runs on); run it detached from terminals (setsid, stdio on files)")
            }
            throw CryoError("\(what) the character device \(target); Cryo cannot dump device state")
        }
        guard type == S_IFREG || type == S_IFDIR else {
            throw CryoError("\(what) \(target), a kind of file Cryo cannot dump yet")
        }
        if !target.hasPrefix("/") { throw CryoError("\(what) \(target), which has no path Cryo can reopen") }
        if target.hasSuffix(" (deleted)") && type != S_IFREG { throw CryoError("\(what) \(target), deleted since it was opened and not a regular file") }
    }
}

extension FileEntry {
    /// Checks, before anything is created, that the file can be reopened as it was dumped.
    func verifyForRestore() throws {
        if (type == .pipe && hasPipe) || (type == .fifo && hasFifo) || (type == .memfd && hasMemfd) || (type == .tty && hasTty)
            || (type == .eventfd && hasEfd) || (type == .timerfd && hasTfd)
            || (type == .signalfd && hasSgfd) || (type == .eventpoll && hasEpfd) || (type == .unixsk && hasUsk) { return }
        if type == .inetsk && hasIsk { return try InetSocketResource.verifyForRestore(self) }
        if type == .inotify && hasIfy { return try InotifyResource.verifyForRestore(self) }
        guard hasReg else { throw CryoError("file id \(id) has an unsupported type \(type)") }
        var st = stat()
        guard stat(reg.name, &st) == 0 else {
            throw CryoError("cannot restore: file \(reg.name) (id \(id)) is missing", errno: Errno(rawValue: errnoValue))
        }
        if reg.hasMode && st.st_mode & S_IFMT != reg.mode & S_IFMT {
            throw CryoError("cannot restore: \(reg.name) is no longer the same kind of file")
        }
        if reg.hasSize && UInt64(st.st_size) != reg.size {
            throw CryoError("cannot restore: file \(reg.name) changed size since the dump (was \(reg.size) bytes, now \(st.st_size))")
        }
    }
}

/// The restore half of `FileTable`: gives a new process exactly its dumped fd table.
///
/// The root starts from Cryo's fds, which are all closed. A forked child starts from its
/// parent's restored table: descriptions the two shared are kept (moved to their number in
/// the child), so offsets stay shared; the rest is closed and the child's own files opened.
enum FilesRestore {
    static func restore(_ process: RemoteProcess, _ image: ProcessImage, files: [UInt32: FileEntry],
                        inherited: [FdinfoEntry]?, objects: FileObjects, openRemote: (String, Int32) throws -> UInt64) throws {
        func call(_ what: String, _ nr: Int, _ args: UInt64...) throws -> Int64 {
            try process.checkedSyscall(what, nr, args)
        }
        let wanted = Set(image.descriptors.map(\.id))
        // Where each inherited description we want now lives (moved above every fd number in use).
        var sources: [UInt32: UInt64] = [:]
        if let inherited {
            var spare = UInt64((image.descriptors.map(\.fd) + inherited.map(\.fd)).max() ?? 0) + 1
            for d in inherited {
                if wanted.contains(d.id) && sources[d.id] == nil {
                    let moved = try call("fcntl(F_DUPFD) of inherited fd \(d.fd)", Syscall.fcntl, UInt64(d.fd), UInt64(F_DUPFD), spare)
                    sources[d.id] = UInt64(moved)
                    spare = UInt64(moved) + 1
                }
                _ = try call("close inherited fd \(d.fd)", Syscall.close, UInt64(d.fd))
            }
        } else {
            _ = try call("close_range", 436, 0, UInt64(UInt32.max), 0)
        }
        var opened: [UInt32: UInt64] = [:]
        var installer: FDInstaller?
        defer { installer?.close() }
        let spare = UInt64((image.descriptors.map(\.fd) + (inherited ?? []).map(\.fd)).max() ?? 0) + 64
        for d in image.descriptors {
            if d.type != .reg, let file = files[d.id] {
                let target = UInt64(d.fd)
                if let first = opened[d.id] ?? sources[d.id] {
                    _ = try call("dup2 to fd \(d.fd)", Syscall.dup2, first, target)
                } else {
                    if installer == nil { installer = try FDInstaller(process, spare: spare) }
                    try installer!.install(try objects.descriptor(for: file), at: target)
                    if file.hasPipe || file.hasUsk {
                        _ = try call("fcntl(F_SETFL) fd \(d.fd)", Syscall.fcntl, target, UInt64(F_SETFL), UInt64(file.hasPipe ? file.pipe.flags : file.usk.flags))
                    }
                    opened[d.id] = target
                }
                _ = try call("fcntl(F_SETFD) fd \(d.fd)", Syscall.fcntl, target, UInt64(F_SETFD), UInt64(d.flags & UInt32(FD_CLOEXEC)))
                continue
            }
            guard d.type == .reg, let file = files[d.id], file.hasReg else {
                throw CryoError("cannot restore fd \(d.fd) of process \(image.pid): file id \(d.id) of type \(d.type) is not supported")
            }
            let target = UInt64(d.fd)
            if let first = opened[d.id] ?? sources[d.id] {
                _ = try call("dup2 to fd \(d.fd)", Syscall.dup2, first, target)
            } else {
                let reg = file.reg
                let flags = Int32(bitPattern: reg.flags) & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY)
                let fd = try openRemote(reg.name, flags)
                if fd != target {
                    _ = try call("dup2 to fd \(d.fd)", Syscall.dup2, fd, target)
                    _ = try call("close", Syscall.close, fd)
                }
                if reg.pos != 0 { _ = try call("lseek fd \(d.fd) of \(reg.name)", Syscall.lseek, target, reg.pos, UInt64(SEEK_SET)) }
            }
            if opened[d.id] == nil { opened[d.id] = target }
            _ = try call("fcntl(F_SETFD) fd \(d.fd)", Syscall.fcntl, target, UInt64(F_SETFD), UInt64(d.flags & UInt32(FD_CLOEXEC)))
        }
        for moved in sources.values { _ = try call("close", Syscall.close, moved) }
        // epoll watches name this process's fds: add them now that all are in place.
        for d in image.descriptors where d.type == .eventpoll {
            if let file = files[d.id], objects.needsWatches(file.id) {
                try EventFileResource.addWatches(file, epfd: UInt64(d.fd), process)
            }
        }
    }
}

/// Files Cryo creates itself on restore (pipes, FIFOs, memfds, sockets, eventfd, timerfd,
/// signalfd, epoll, inotify), one
/// Cryo-side fd per open file description, handed to every process that had it.
final class FileObjects {
    let pipes: PipeTable
    let sockets: UnixSocketTable
    let fifos: FifoTable
    let memfds: MemfdTable
    let terminals: TerminalTable
    /// Every file entry of the dump (a socket's peer is found among them).
    let allFiles: [UInt32: FileEntry]
    private var created: [UInt32: Int32] = [:]
    private var watched = Set<UInt32>()
    /// Processes are built on several threads at once: the tables are used under this lock.
    private let lock = NSRecursiveLock()

    /// `shellJob`: the dump's outside terminal becomes Cryo's stdin terminal.
    init(_ images: ImageDirectory, files: [UInt32: FileEntry], shellJob: Bool) throws {
        allFiles = files
        pipes = try PipeTable(images)
        sockets = try UnixSocketTable(images)
        fifos = try FifoTable(images)
        memfds = try MemfdTable(images)
        terminals = try TerminalTable(images, files: files, shellJob: shellJob)
    }

    deinit { for fd in created.values { close(fd) } }

    /// Cryo's fd for the description `file`.
    func descriptor(for file: FileEntry) throws -> Int32 {
        try withLock { try makeDescriptor(for: file) }
    }

    private func makeDescriptor(for file: FileEntry) throws -> Int32 {
        if file.type == .pipe { return try pipes.descriptor(for: file) }
        if file.type == .unixsk { return try sockets.descriptor(for: file, all: allFiles) }
        if file.type == .fifo { return try fifos.descriptor(for: file, path: allFiles[file.fifo.regfID]) }
        if file.type == .memfd { return try memfds.descriptor(for: file) }
        if file.type == .tty { return try terminals.descriptor(for: file) }
        if let fd = created[file.id] { return fd }
        let fd = file.type == .inotify ? try InotifyResource.create(file)
            : file.type == .inetsk ? try InetSocketResource.create(file) : try EventFileResource.create(file)
        created[file.id] = fd
        return fd
    }

    /// True the first time it is asked for an epoll description: its watches are added once.
    func needsWatches(_ id: UInt32) -> Bool { withLock { watched.insert(id).inserted } }

    /// Runs `body` with the tables locked (for work on them that is not a plain lookup).
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}
