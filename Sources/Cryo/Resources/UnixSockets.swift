import CLinux
import Foundation
import Glibc
import SystemPackage

/// Unix sockets: socketpairs, listening sockets, connections accepted from them, datagram
/// sockets bound and connected to names (path or abstract): `files.img` entries of type UNIXSK
/// and `sk-queues.img` (unread data, per receiving socket). Every connection must be inside
/// the tree (CRIU's --ext-unix-sk is not there yet).
///
/// Peers come from sock_diag. Unread data is peeked, not consumed, through a copy of the
/// socket (SO_PEEK_OFF, put back afterwards). Restore makes every socket in Cryo — pairs with
/// socketpair, accepted connections by connecting to the listener's name — sends the queued
/// data again, and hands the sockets to the processes.
enum UnixSocketResource {
    /// Every unix socket of this network namespace, by inode.
    static func table() throws -> [UInt32: cl_unix_socket] {
        var capacity = 1024
        while true {
            var buffer = [cl_unix_socket](repeating: cl_unix_socket(), count: capacity)
            let n = cl_unix_sockets(&buffer, capacity)
            if n < 0 { throw CryoError("cannot list unix sockets (sock_diag)", errno: Errno(rawValue: Int32(-n))) }
            if n <= capacity {
                var result: [UInt32: cl_unix_socket] = [:]
                for s in buffer.prefix(n) { result[s.inode] = s }
                return result
            }
            capacity = n + 64
        }
    }

    /// TCP_LISTEN, as sock_diag reports a listening socket's state.
    static let listening: UInt32 = 10

    /// The file entry for fd `fd` of `pid`, the socket `s`.
    static func entry(id: UInt32, flags: UInt32, socket s: cl_unix_socket, pid: pid_t, fd: Int32) throws -> FileEntry {
        let what = "fd \(fd) of process \(pid) is a unix socket (socket:[\(s.inode)])"
        let name = withUnsafeBytes(of: s.name) { Array($0.prefix(Int(s.name_length))) }
        if UInt32(s.state) == listening && s.receive_queue > 0 {
            throw CryoError("\(what) that listens and has \(s.receive_queue) connection(s) not yet accepted; Cryo cannot dump those yet")
        }
        if s.peer == 0 && s.type != UInt8(SOCK_DGRAM.rawValue) && UInt32(s.state) != listening && name.isEmpty {
            throw CryoError("\(what) with no peer (closed or never connected); Cryo cannot dump it yet")
        }
        var perms: FilePermsEntry?
        var deleted = false
        if let first = name.first, first != 0 {
            let path = String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
            guard path.hasPrefix("/") else {
                throw CryoError("\(what) bound to the relative path \(path); Cryo cannot dump sockets with relative names yet")
            }
            var st = stat()
            if lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFSOCK {
                var p = FilePermsEntry()
                p.mode = st.st_mode; p.uid = st.st_uid; p.gid = st.st_gid
                perms = p
            } else {
                deleted = true  // its file was removed (or replaced) since it was bound
            }
        }
        let local = try takeDescriptor(pid: pid, fd: fd)
        defer { close(local) }
        let opts = SocketOptions.read(local, tcp: false)
        var u = UnixSkEntry()
        u.id = id
        u.ino = s.inode
        u.type = UInt32(s.type)
        u.state = UInt32(s.state)
        u.flags = flags
        u.uflags = 0
        // sock_diag's send queue of a listener is its backlog.
        u.backlog = UInt32(s.state) == listening ? s.send_queue : 0
        u.peer = s.peer
        u.fown = FileTable.noOwner
        u.opts = opts
        u.name = Data(name)
        u.shutdown = .none
        if let perms { u.filePerms = perms }
        if deleted { u.deleted = true }
        var file = FileEntry()
        file.type = .unixsk
        file.id = id
        file.usk = u
        return file
    }

    /// `uflags` bit of a socket outside the dump that a dumped one is connected to (USK_EXTERN).
    static let external: UInt32 = 1

    /// The entry for `s`, a socket outside the dump that `client` is connected to: only
    /// datagram sockets can be connected to it again, and only by its name.
    static func externalPeer(id: UInt32, socket s: cl_unix_socket, for client: UnixSkEntry, what: String) throws -> FileEntry {
        guard client.type == UInt32(SOCK_DGRAM.rawValue) else {
            throw CryoError("\(what); a stream or seqpacket connection to the outside cannot be made again, only datagram ones (--ext-unix-sk)")
        }
        let name = withUnsafeBytes(of: s.name) { Data($0.prefix(Int(s.name_length))) }
        guard !name.isEmpty else { throw CryoError("\(what) and has no name to connect to again") }
        var u = UnixSkEntry()
        u.id = id
        u.ino = s.inode
        u.type = UInt32(s.type)
        u.state = UInt32(s.state)
        u.flags = 0
        u.uflags = external
        u.backlog = 0
        u.peer = 0
        u.fown = FileTable.noOwner
        var opts = SkOptsEntry()
        opts.soSndbuf = 0; opts.soRcvbuf = 0
        opts.soSndTmoSec = 0; opts.soSndTmoUsec = 0; opts.soRcvTmoSec = 0; opts.soRcvTmoUsec = 0
        u.opts = opts
        u.name = name
        u.shutdown = .none
        var file = FileEntry()
        file.type = .unixsk
        file.id = id
        file.usk = u
        return file
    }

    /// The unread data waiting in socket `fd` of `pid` (entry id `id`), without consuming it.
    static func captureQueue(id: UInt32, type: UInt8, pid: pid_t, fd: Int32) throws -> [(SkPacketEntry, [UInt8])] {
        let local = try takeDescriptor(pid: pid, fd: fd)
        defer { close(local) }
        var saved: Int32 = -1
        var len = socklen_t(4)
        _ = getsockopt(local, SOL_SOCKET, SO_PEEK_OFF, &saved, &len)
        var zero: Int32 = 0
        guard setsockopt(local, SOL_SOCKET, SO_PEEK_OFF, &zero, 4) == 0 else {
            throw CryoError("cannot peek into unix socket fd \(fd) of process \(pid)", errno: Errno(rawValue: errnoValue))
        }
        defer { _ = setsockopt(local, SOL_SOCKET, SO_PEEK_OFF, &saved, 4) }
        var result: [(SkPacketEntry, [UInt8])] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(local, $0.baseAddress, $0.count, Int32(MSG_PEEK | MSG_DONTWAIT)) }
            if n < 0 {
                if errnoValue == EAGAIN { break }
                throw CryoError("cannot read the queue of unix socket fd \(fd) of process \(pid)", errno: Errno(rawValue: errnoValue))
            }
            if n == 0 && type == UInt8(SOCK_STREAM.rawValue) { break }
            var e = SkPacketEntry()
            e.idFor = id
            e.length = UInt32(n)
            result.append((e, Array(buffer.prefix(n))))
        }
        if type == UInt8(SOCK_STREAM.rawValue), result.count > 1 {
            // One stream: one record.
            var e = SkPacketEntry()
            e.idFor = id
            let data = result.flatMap(\.1)
            e.length = UInt32(data.count)
            return [(e, data)]
        }
        return result
    }

    /// Reads `sk-queues.img`: each socket's queued messages, by file id, in order.
    static func loadQueues(_ images: ImageDirectory) throws -> [UInt32: [[UInt8]]] {
        guard images.contains("sk-queues.img") else { return [:] }
        var result: [UInt32: [[UInt8]]] = [:]
        for (entry, data) in try images.readWithPayloads("sk-queues.img", magic: .skQueues, as: SkPacketEntry.self,
                                                         payloadLength: { Int($0.length) }) {
            result[entry.idFor, default: []].append(data)
        }
        return result
    }
}

/// The unix sockets of one restore, made in Cryo pair by pair.
final class UnixSocketTable {
    private let queues: [UInt32: [[UInt8]]]
    /// socket inode -> Cryo's fd.
    private var sockets: [UInt32: Int32] = [:]

    init(_ images: ImageDirectory) throws {
        queues = try UnixSocketResource.loadQueues(images)
    }

    deinit { for fd in sockets.values { close(fd) } }

    /// Cryo's fd for socket `file`. A connected pair is made together and both ends get their
    /// queues; a socket connected to a named one, or accepted from a listener, is made by
    /// connecting to that name, so names and peer names come back as they were.
    func descriptor(for file: FileEntry, all files: [UInt32: FileEntry]) throws -> Int32 {
        let u = file.usk
        if let fd = sockets[u.ino] { return fd }
        let peerFile = u.peer == 0 ? nil : files.values.first { $0.hasUsk && $0.usk.ino == u.peer }
        if u.peer != 0 && peerFile == nil {
            throw CryoError("unix socket id \(file.id) (socket:[\(u.ino)]) is connected to socket:[\(u.peer)], which is not in the dump")
        }
        if u.state == UnixSocketResource.listening {
            let fd = try make(u)
            try bind(fd, u)
            guard listen(fd, Int32(u.backlog)) == 0 else { throw CryoError("listen on \(describe(u))", errno: Errno(rawValue: errnoValue)) }
        } else if let peerFile, peerFile.usk.peer == u.ino {
            let p = peerFile.usk
            if u.type != UInt32(SOCK_DGRAM.rawValue) && (!u.name.isEmpty || !p.name.isEmpty) {
                // An accepted connection: the server end carries its listener's name.
                let serverIsPeer = u.name.isEmpty || (!p.name.isEmpty && listeningEntry(named: p.name, files) != nil && listeningEntry(named: u.name, files) == nil)
                let (server, client) = serverIsPeer ? (p, u) : (u, p)
                try connectThroughListener(server: server, client: client, files)
            } else {
                var pair: [Int32] = [-1, -1]
                guard socketpair(AF_UNIX, Int32(u.type) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
                    throw CryoError("socketpair for \(describe(u))", errno: Errno(rawValue: errnoValue))
                }
                sockets[u.ino] = pair[0]
                sockets[p.ino] = pair[1]
                if !u.name.isEmpty { try bind(pair[0], u) }
                if !p.name.isEmpty { try bind(pair[1], p) }
            }
            try configure(sockets[p.ino]!, p)
            // Data waiting for one end is sent again from the other.
            try refill(sockets[u.ino]!, from: sockets[p.ino]!, queue: queues[file.id] ?? [])
            try refill(sockets[p.ino]!, from: sockets[u.ino]!, queue: queues[peerFile.id] ?? [])
        } else {
            let fd = try make(u)
            if !u.name.isEmpty { try bind(fd, u) }
            if let peerFile {
                // A datagram socket connect()ed to a named one (which may have other clients),
                // made here first unless it is outside the dump (--ext-unix-sk).
                if peerFile.usk.uflags & UnixSocketResource.external == 0 { _ = try descriptor(for: peerFile, all: files) }
                try connect(fd, to: peerFile.usk.name, what: describe(u))
            }
            try refillByName(u, queue: queues[file.id] ?? [])
        }
        try configure(sockets[u.ino]!, u)
        return sockets[u.ino]!
    }

    /// A new socket of `u`'s type, recorded as `u`.
    private func make(_ u: UnixSkEntry) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(u.type) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CryoError("socket for \(describe(u))", errno: Errno(rawValue: errnoValue)) }
        sockets[u.ino] = fd
        return fd
    }

    /// The dump's listening socket bound to `name`, if there is one.
    private func listeningEntry(named name: Data, _ files: [UInt32: FileEntry]) -> FileEntry? {
        files.values.first { $0.hasUsk && $0.usk.state == UnixSocketResource.listening && $0.usk.name == name }
    }

    /// Makes the connection `client` -> `server` as the kernel first did: `client` connects to
    /// the server's name and the listener accepts `server`. The listener is the dump's own
    /// when it is still there, or a temporary one bound to the name for the moment.
    private func connectThroughListener(server: UnixSkEntry, client: UnixSkEntry, _ files: [UInt32: FileEntry]) throws {
        var listener: Int32
        var temporary: UnixSkEntry?
        if let real = listeningEntry(named: server.name, files) {
            listener = try descriptor(for: real, all: files)
        } else {
            var t = server
            t.ino = 0
            t.clearFilePerms()
            listener = socket(AF_UNIX, Int32(server.type) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard listener >= 0 else { throw CryoError("socket for \(describe(server))", errno: Errno(rawValue: errnoValue)) }
            temporary = t
            do { try bind(listener, t) } catch { close(listener); throw error }
            guard listen(listener, 1) == 0 else { close(listener); throw CryoError("listen on \(describe(server))", errno: Errno(rawValue: errnoValue)) }
        }
        defer {
            if let t = temporary {
                close(listener)
                // The name stays as the dump saw it: a stale socket file, or none if it was deleted.
                if t.deleted, let path = Self.path(t.name) { unlink(path) }
            }
        }
        let c = try make(client)
        if !client.name.isEmpty { try bind(c, client) }
        try connect(c, to: server.name, what: describe(client))
        // accept4(listener, NULL, NULL, SOCK_CLOEXEC): Glibc's accept4 is not visible from Swift.
        let a = Int32(cl_raw_syscall6(288, Int(listener), 0, 0, Int(SOCK_CLOEXEC.rawValue), 0, 0))
        guard a >= 0 else { throw CryoError("accept of \(describe(server))", errno: Errno(rawValue: -a)) }
        sockets[server.ino] = a
    }

    /// Binds `fd` to `u`'s name. A socket file left at the path by the dumped (now gone)
    /// socket is replaced; one that a live socket still listens on is an error.
    private func bind(_ fd: Int32, _ u: UnixSkEntry) throws {
        if let path = Self.path(u.name) {
            var st = stat()
            if lstat(path, &st) == 0 {
                guard st.st_mode & S_IFMT == S_IFSOCK else {
                    throw CryoError("cannot restore \(describe(u)): \(path) exists and is not a socket")
                }
                if Self.isLive(path, type: Int32(u.type)) {
                    throw CryoError("cannot restore \(describe(u)): a live socket is bound to \(path)")
                }
                unlink(path)
            }
        }
        let r = Self.withAddress(u.name) { Glibc.bind(fd, $0, $1) }
        guard r == 0 else { throw CryoError("cannot bind \(describe(u))", errno: Errno(rawValue: errnoValue)) }
        if let path = Self.path(u.name) {
            if u.hasFilePerms {
                _ = chmod(path, mode_t(u.filePerms.mode & 0o7777))
                _ = lchown(path, u.filePerms.uid, u.filePerms.gid)
            }
            if u.deleted { unlink(path) }
        }
    }

    private func connect(_ fd: Int32, to name: Data, what: String) throws {
        let r = Self.withAddress(name) { Glibc.connect(fd, $0, $1) }
        guard r == 0 else { throw CryoError("cannot connect \(what) to \(Self.printable(name))", errno: Errno(rawValue: errnoValue)) }
    }

    /// Queues the datagrams a named socket had unread, sent to its name from a new socket.
    private func refillByName(_ u: UnixSkEntry, queue: [[UInt8]]) throws {
        guard !queue.isEmpty else { return }
        guard !u.name.isEmpty, u.type != UInt32(SOCK_STREAM.rawValue) else {
            throw CryoError("cannot restore the \(queue.count) unread message(s) of \(describe(u)): it has neither a peer nor a name")
        }
        let sender = socket(AF_UNIX, Int32(u.type) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard sender >= 0 else { throw CryoError("socket", errno: Errno(rawValue: errnoValue)) }
        defer { close(sender) }
        try connect(sender, to: u.name, what: "a socket refilling \(describe(u))")
        try refill(sockets[u.ino]!, from: sender, queue: queue)
    }

    /// Whether a socket listens at `path` (connecting works, or would if the queue had room).
    private static func isLive(_ path: String, type: Int32) -> Bool {
        let probe = socket(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard probe >= 0 else { return false }
        defer { close(probe) }
        let r = withAddress(Data(path.utf8) + [0]) { Glibc.connect(probe, $0, $1) }
        return r == 0 || errnoValue == EAGAIN
    }

    /// The path of a path name; nil for abstract names and none.
    static func path(_ name: Data) -> String? {
        guard let first = name.first, first != 0 else { return nil }
        return String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// A name as people write it: the path, or `@name` for abstract ones.
    static func printable(_ name: Data) -> String {
        if let path = path(name) { return path }
        return "@" + String(decoding: name.dropFirst().map { $0 == 0 ? UInt8(ascii: "@") : $0 }, as: UTF8.self)
    }

    private func describe(_ u: UnixSkEntry) -> String {
        "unix socket socket:[\(u.ino)]" + (u.name.isEmpty ? "" : " (\(Self.printable(u.name)))")
    }

    /// Calls `body` with a `sockaddr_un` holding `name` and its exact length.
    private static func withAddress(_ name: Data, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let count = min(name.count, MemoryLayout.size(ofValue: address.sun_path))
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in name.prefix(count).enumerated() { raw[i] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + count)
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }

    private func configure(_ fd: Int32, _ u: UnixSkEntry) throws {
        try SocketOptions.apply(u.opts, to: fd, tcp: false, what: describe(u))
    }

    private func refill(_ receiver: Int32, from sender: Int32, queue: [[UInt8]]) throws {
        for message in queue {
            let n = message.withUnsafeBytes { send(sender, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            guard n == message.count else {
                throw CryoError("cannot queue \(message.count) bytes on a restored unix socket", errno: Errno(rawValue: errnoValue))
            }
        }
    }
}
