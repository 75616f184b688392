import CLinux
import Foundation
import Glibc
import SystemPackage

/// Unix sockets connected inside the tree (socketpairs and connected stream, datagram and
/// seqpacket sockets) and unconnected datagram sockets: `files.img` entries of type UNIXSK and
/// `sk-queues.img` (unread data, per receiving socket).
///
/// Peers come from sock_diag. Unread data is peeked, not consumed, through a copy of the
/// socket (SO_PEEK_OFF, put back afterwards). Restore makes each pair in Cryo, sends the
/// queued data again from the peer's side, and hands the ends to the processes.
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

    /// The file entry for fd `fd` of `pid`, the socket `s`.
    static func entry(id: UInt32, flags: UInt32, socket s: cl_unix_socket, pid: pid_t, fd: Int32) throws -> FileEntry {
        let what = "fd \(fd) of process \(pid) is a unix socket (socket:[\(s.inode)])"
        if s.name_length > 0 { throw CryoError("\(what) bound to a name; Cryo cannot dump bound or listening unix sockets yet") }
        if s.state == 10 { throw CryoError("\(what) that listens; Cryo cannot dump listening unix sockets yet") }
        if s.peer == 0 && s.type != UInt8(SOCK_DGRAM.rawValue) {
            throw CryoError("\(what) with no peer (closed or never connected); Cryo cannot dump it yet")
        }
        let local = try takeDescriptor(pid: pid, fd: fd)
        defer { close(local) }
        func option(_ name: Int32) -> UInt32 {
            var v: Int32 = 0
            var len = socklen_t(4)
            _ = getsockopt(local, SOL_SOCKET, name, &v, &len)
            return UInt32(bitPattern: v)
        }
        var opts = SkOptsEntry()
        opts.soSndbuf = option(SO_SNDBUF)
        opts.soRcvbuf = option(SO_RCVBUF)
        opts.soSndTmoSec = 0; opts.soSndTmoUsec = 0; opts.soRcvTmoSec = 0; opts.soRcvTmoUsec = 0
        opts.soPasscred = option(SO_PASSCRED) != 0
        var u = UnixSkEntry()
        u.id = id
        u.ino = s.inode
        u.type = UInt32(s.type)
        u.state = UInt32(s.state)
        u.flags = flags
        u.uflags = 0
        u.backlog = 0
        u.peer = s.peer
        u.fown = FileTable.noOwner
        u.opts = opts
        u.name = Data()
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

    /// Cryo's fd for socket `file`; the peer is made with it, and both get their queues.
    func descriptor(for file: FileEntry, all files: [UInt32: FileEntry]) throws -> Int32 {
        let u = file.usk
        if let fd = sockets[u.ino] { return fd }
        let type = Int32(u.type)
        let peerFile = files.values.first { $0.hasUsk && $0.usk.ino == u.peer && u.peer != 0 }
        if u.peer != 0 && peerFile == nil {
            throw CryoError("unix socket id \(file.id) (socket:[\(u.ino)]) is connected to socket:[\(u.peer)], which is not in the dump")
        }
        var pair: [Int32] = [-1, -1]
        if let peerFile {
            guard socketpair(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
                throw CryoError("socketpair for socket:[\(u.ino)]", errno: Errno(rawValue: errnoValue))
            }
            sockets[u.ino] = pair[0]
            sockets[peerFile.usk.ino] = pair[1]
            try configure(pair[0], file.usk)
            try configure(pair[1], peerFile.usk)
            // Data waiting for one end is sent again from the other.
            try refill(pair[0], from: pair[1], queue: queues[file.id] ?? [])
            try refill(pair[1], from: pair[0], queue: queues[peerFile.id] ?? [])
        } else {
            let fd = socket(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw CryoError("socket for socket:[\(u.ino)]", errno: Errno(rawValue: errnoValue)) }
            sockets[u.ino] = fd
            try configure(fd, u)
        }
        return sockets[u.ino]!
    }

    private func configure(_ fd: Int32, _ u: UnixSkEntry) throws {
        if u.opts.soPasscred {
            var one: Int32 = 1
            guard setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, 4) == 0 else {
                throw CryoError("SO_PASSCRED on socket:[\(u.ino)]", errno: Errno(rawValue: errnoValue))
            }
        }
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
