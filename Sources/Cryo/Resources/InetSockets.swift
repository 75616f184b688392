import Foundation
import Glibc
import SystemPackage

/// Network sockets (AF_INET, AF_INET6) as `files.img` entries of type INETSK: what CRIU keeps
/// without --tcp-established. TCP listeners (address, port, backlog), TCP sockets only created
/// or bound, and UDP sockets bound and/or connected; IPv4, IPv6 and dual-stack, with their
/// options. Anything carrying a connection (established TCP, a connect in progress, a
/// listener with connections not yet accepted) or another protocol (raw, SCTP...) is refused.
///
/// Dump reads everything from a copy of the socket (`pidfd_getfd`): `getsockname`,
/// `getpeername`, `TCP_INFO` (state; a listener's accept queue and backlog). sock_diag would
/// not do: it lists no socket that is not bound yet. Restore makes each socket once in Cryo —
/// it is one open file description however many processes have it — binds it to its address
/// again and listens or connects; the processes get it from `FileObjects`.
enum InetSocketResource {
    /// Socket states as the kernel (and the image) numbers them (`TCP_*` in net/tcp_states.h).
    enum State {
        static let established: UInt32 = 1
        static let close: UInt32 = 7
        static let listen: UInt32 = 10
    }

    /// The entry for fd `fd` of `pid`, socket inode `inode`. Throws, naming the socket and what
    /// it is connected to, when Cryo cannot bring it back; warns in `log` about datagrams
    /// queued unread, which are dropped (as CRIU does).
    static func entry(id: UInt32, flags: UInt32, inode: UInt32, pid: pid_t, fd: Int32, log: Log) throws -> FileEntry {
        let local = try takeDescriptor(pid: pid, fd: fd)
        defer { close(local) }
        let what = "fd \(fd) of process \(pid) (socket:[\(inode)])"
        func int(_ level: Int32, _ name: Int32) -> Int32 { SocketOptions.int(local, level, name) ?? -1 }
        let family = int(SOL_SOCKET, SO_DOMAIN), type = int(SOL_SOCKET, SO_TYPE), proto = int(SOL_SOCKET, SO_PROTOCOL)
        guard family == AF_INET || family == AF_INET6 else {
            throw CryoError("\(what) is \(familyName(family)); Cryo cannot dump it")
        }
        let tcp = type == Int32(SOCK_STREAM.rawValue) && proto == Int32(IPPROTO_TCP)
        let udp = type == Int32(SOCK_DGRAM.rawValue) && proto == Int32(IPPROTO_UDP)
        guard tcp || udp else {
            let version = family == AF_INET6 ? "IPv6" : "IPv4"
            let kind = type == Int32(SOCK_RAW.rawValue) ? "a raw \(version) socket" : "an \(version) socket of type \(type)"
            throw CryoError("\(what) is \(kind), protocol \(proto); Cryo dumps TCP and UDP sockets only")
        }
        var e = InetSkEntry()
        e.id = id
        e.ino = inode
        e.family = UInt32(family)
        e.type = UInt32(type)
        e.proto = UInt32(proto)
        e.flags = flags
        e.fown = FileTable.noOwner
        let source = InetAddress.local(of: local, family: family)
        e.srcAddr = source.words
        e.srcPort = UInt32(source.port)
        let peer = InetAddress.peer(of: local)
        let destination = peer ?? InetAddress(family: family)
        e.dstAddr = destination.words
        e.dstPort = UInt32(destination.port)
        if family == AF_INET6 { e.v6Only = int(Int32(IPPROTO_IPV6), IPV6_V6ONLY) == 1 }
        let scope = source.scopeID != 0 ? source.scopeID : peer?.scopeID ?? 0
        if scope != 0 { e.ifname = try interfaceName(scope, what: what) }
        if int(freebindLevel(family), freebindOption(family)) == 1 {
            var ip = IpOptsEntry()
            ip.freebind = true
            e.ipOpts = ip
        }
        e.opts = SocketOptions.read(local, tcp: tcp)
        e.backlog = 0
        if tcp {
            e.tcpOpts = SocketOptions.readTCP(local, options: e.opts)
            let info = TCPInfo(local)
            e.state = info.state
            if info.state == State.listen {
                e.backlog = info.listenBacklog
                if info.acceptQueue > 0 {
                    throw CryoError("\(what) is \(InetSocketText(e)) with \(info.acceptQueue) connection(s) not yet accepted: those are established TCP connections, which need --tcp-established; not supported")
                }
            } else if info.state != State.close {
                throw CryoError("\(what) is \(InetSocketText(e)): a TCP connection needs --tcp-established; not supported")
            }
        } else {
            // A connected UDP socket is ESTABLISHED to the kernel, any other one CLOSE.
            e.state = peer == nil ? State.close : State.established
            if receiveMemory(local) > 0 {
                log.warn("\(what), \(InetSocketText(e)), has datagrams queued unread; they are not saved, and the restored process will not see them (CRIU drops them too)")
            }
        }
        var file = FileEntry()
        file.type = .inetsk
        file.id = id
        file.isk = e
        return file
    }

    /// The name of interface `index`, the scope of a link-local IPv6 address. The image
    /// keeps names, as CRIU does: the index may differ where the images are restored.
    private static func interfaceName(_ index: UInt32, what: String) throws -> String {
        var name = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        guard if_indextoname(index, &name) != nil else {
            throw CryoError("\(what) uses the link-local scope of interface \(index), which has no name", errno: Errno(rawValue: errnoValue))
        }
        return String(cString: name)
    }

    /// The index of interface `name` here, for a link-local IPv6 address of socket `what`.
    private static func interfaceIndex(_ name: String, what: String) throws -> UInt32 {
        let index = if_nametoindex(name)
        guard index != 0 else { throw CryoError("cannot restore \(what): its interface \(name) is gone") }
        return index
    }

    /// The level of the IP_FREEBIND option of a socket of `family` (bind to an address the
    /// machine does not have).
    private static func freebindLevel(_ family: Int32) -> Int32 {
        family == AF_INET6 ? Int32(IPPROTO_IPV6) : Int32(IPPROTO_IP)
    }

    /// IP_FREEBIND or IPV6_FREEBIND (78, which Glibc's Swift import lacks).
    private static func freebindOption(_ family: Int32) -> Int32 {
        family == AF_INET6 ? 78 : IP_FREEBIND
    }

    /// SO_MEMINFO (linux/socket.h), not in Glibc.
    private static let memoryInfoOption: Int32 = 55

    /// Bytes the socket's receive queue holds (SK_MEMINFO_RMEM_ALLOC): non-zero while any
    /// datagram, even an empty one, waits. Peeking would consume a pending socket error.
    private static func receiveMemory(_ fd: Int32) -> UInt32 {
        var info = [UInt32](repeating: 0, count: 16)
        var len = socklen_t(4 * info.count)
        return getsockopt(fd, SOL_SOCKET, memoryInfoOption, &info, &len) == 0 ? info[0] : 0
    }

    /// What a socket of family `family` is, for refusals.
    private static func familyName(_ family: Int32) -> String {
        switch family {
        case AF_NETLINK: return "a netlink socket"
        case AF_PACKET: return "a packet socket"
        case AF_UNIX: return "a unix socket sock_diag did not list"
        default: return "a socket of address family \(family)"
        }
    }

    /// Checks, before anything is created, that `file` is an inet socket Cryo can make: a TCP
    /// listener or unconnected TCP socket, or a UDP socket, not shut down. An image written by
    /// another tool (CRIU with --tcp-established: connections and their tcp-stream images) or
    /// edited by hand would otherwise come back as a bare socket on the old port.
    static func verifyForRestore(_ file: FileEntry) throws {
        let e = file.isk
        let inet = e.family == UInt32(AF_INET) || e.family == UInt32(AF_INET6)
        let tcp = e.proto == UInt32(IPPROTO_TCP) && e.type == UInt32(SOCK_STREAM.rawValue)
        let udp = e.proto == UInt32(IPPROTO_UDP) && e.type == UInt32(SOCK_DGRAM.rawValue)
        let what = "inet socket socket:[\(e.ino)] (file id \(file.id))"
        guard inet && (tcp || udp) else {
            throw CryoError("cannot restore \(what): family \(e.family), type \(e.type), protocol \(e.proto) is not a TCP or UDP socket Cryo can make")
        }
        let states: [UInt32] = tcp ? [State.listen, State.close] : [State.close, State.established]
        guard states.contains(e.state) else {
            throw CryoError("cannot restore \(what): \(InetSocketText(e)) (TCP connections need --tcp-established, not supported)")
        }
        if e.hasShutdown && e.shutdown != SkShutdown.none {
            throw CryoError("cannot restore \(what): \(InetSocketText(e)) was shut down (\(e.shutdown)), which Cryo does not restore")
        }
    }

    /// Makes the socket of `file` in Cryo: options, the same local address, then listen or
    /// connect as it was. A port another socket holds is an error naming the address.
    static func create(_ file: FileEntry) throws -> Int32 {
        let e = file.isk
        let what = "\(InetSocketText(e)) (socket:[\(e.ino)], file id \(file.id))"
        let tcp = e.proto == UInt32(IPPROTO_TCP)
        let fd = socket(Int32(e.family), Int32(e.type) | Int32(SOCK_CLOEXEC.rawValue), Int32(e.proto))
        guard fd >= 0 else { throw CryoError("cannot make the socket for \(what)", errno: Errno(rawValue: errnoValue)) }
        do {
            if e.family == UInt32(AF_INET6) {
                try SocketOptions.set(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, Int32(e.v6Only ? 1 : 0), "IPV6_V6ONLY", on: what)
            }
            if e.hasIpOpts && e.ipOpts.freebind {
                try SocketOptions.set(fd, freebindLevel(Int32(e.family)), freebindOption(Int32(e.family)), Int32(1), "IP_FREEBIND", on: what)
            }
            let scope = e.hasIfname ? try interfaceIndex(e.ifname, what: what) : 0
            try SocketOptions.apply(e.opts, to: fd, tcp: tcp, what: what)
            if e.hasTcpOpts { try SocketOptions.applyTCP(e.tcpOpts, to: fd, what: what) }
            let source = InetAddress(family: Int32(e.family), words: e.srcAddr, port: UInt16(truncatingIfNeeded: e.srcPort), scopeID: scope)
            if !source.isUnspecified {
                // As CRIU: bind with SO_REUSEADDR, so TIME_WAIT connections the dead original
                // left on its port (made while it had SO_REUSEADDR) are no obstacle, and put
                // the socket's own setting back once it listens (listen checks the port
                // again). A live listener on the port still makes the bind fail.
                var yes: Int32 = 1
                if tcp { _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, 4) }
                guard source.withSockaddr({ Glibc.bind(fd, $0, $1) }) == 0 else {
                    let err = errnoValue
                    if err == EADDRINUSE {
                        throw CryoError("cannot restore \(what): \(source) is in use by another socket; free it and restore again")
                    }
                    throw CryoError("cannot bind \(what) to \(source)", errno: Errno(rawValue: err))
                }
            }
            if tcp && e.state == State.listen {
                guard listen(fd, Int32(bitPattern: e.backlog)) == 0 else {
                    throw CryoError("cannot listen on \(what)", errno: Errno(rawValue: errnoValue))
                }
            }
            if tcp && !e.opts.reuseaddr {
                var no: Int32 = 0
                _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &no, 4)
            }
            if !tcp && e.state == State.established {
                let peer = InetAddress(family: Int32(e.family), words: e.dstAddr, port: UInt16(truncatingIfNeeded: e.dstPort), scopeID: scope)
                guard peer.withSockaddr({ Glibc.connect(fd, $0, $1) }) == 0 else {
                    throw CryoError("cannot connect \(what) to \(peer)", errno: Errno(rawValue: errnoValue))
                }
            }
            // O_NONBLOCK lives in the open file description, which this fd already is.
            guard fcntl(fd, F_SETFL, Int32(bitPattern: e.flags)) == 0 else {
                throw CryoError("cannot set the flags of \(what)", errno: Errno(rawValue: errnoValue))
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }
}

/// A socket's TCP_INFO, of which Cryo needs the first fields only. Read as bytes: the C
/// struct has bitfields, and its layout up to `tcpi_sacked` has not changed since 2.6.
private struct TCPInfo {
    /// TCP_* state.
    let state: UInt32
    /// For a listener, connections waiting to be accepted (`tcpi_unacked`).
    let acceptQueue: UInt32
    /// For a listener, the backlog it was given, as capped by the kernel (`tcpi_sacked`).
    let listenBacklog: UInt32

    init(_ fd: Int32) {
        var raw = [UInt8](repeating: 0, count: 256)
        var len = socklen_t(raw.count)
        _ = getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &raw, &len)
        func u32(_ offset: Int) -> UInt32 {
            raw[offset..<offset + 4].enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        }
        state = UInt32(raw[0])
        acceptQueue = u32(24)
        listenBacklog = u32(28)
    }
}

/// An IPv4 or IPv6 address and port as the image keeps them: the address as u32 words in
/// network byte order (one for IPv4, four for IPv6), the port as a number.
struct InetAddress: CustomStringConvertible {
    /// AF_INET or AF_INET6.
    let family: Int32
    /// The address, in network byte order.
    let words: [UInt32]
    /// The port.
    let port: UInt16
    /// IPv6: the index of the interface a link-local address belongs to (0: none).
    let scopeID: UInt32

    /// The unspecified address (0.0.0.0 or ::), port 0.
    init(family: Int32) {
        self.init(family: family, words: [], port: 0)
    }

    /// The address `words` (padded to the family's size), port `port`.
    init(family: Int32, words: [UInt32], port: UInt16, scopeID: UInt32 = 0) {
        self.family = family
        let count = family == AF_INET6 ? 4 : 1
        self.words = Array((words + [UInt32](repeating: 0, count: count)).prefix(count))
        self.port = port
        self.scopeID = scopeID
    }

    /// Whether the socket this is the name of was never bound.
    var isUnspecified: Bool { port == 0 && words.allSatisfy { $0 == 0 } }

    /// `getsockname` of `fd` (unspecified if it fails).
    static func local(of fd: Int32, family: Int32) -> InetAddress {
        read(fd, getsockname) ?? InetAddress(family: family)
    }

    /// `getpeername` of `fd`; nil when it is not connected.
    static func peer(of fd: Int32) -> InetAddress? {
        read(fd, getpeername)
    }

    /// `getsockname` or `getpeername` of `fd`, if it succeeds and gives an inet address.
    private static func read(_ fd: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32) -> InetAddress? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &len) } }
        guard r == 0 else { return nil }
        return withUnsafeBytes(of: storage) { raw in
            switch Int32(storage.ss_family) {
            case AF_INET:
                let a = raw.load(as: sockaddr_in.self)
                return InetAddress(family: AF_INET, words: [a.sin_addr.s_addr], port: UInt16(bigEndian: a.sin_port))
            case AF_INET6:
                let a = raw.load(as: sockaddr_in6.self)
                let words = withUnsafeBytes(of: a.sin6_addr) { b in (0..<4).map { b.load(fromByteOffset: 4 * $0, as: UInt32.self) } }
                return InetAddress(family: AF_INET6, words: words, port: UInt16(bigEndian: a.sin6_port), scopeID: a.sin6_scope_id)
            default:
                return nil
            }
        }
    }

    /// Calls `body` with this address as a `sockaddr` and its length.
    func withSockaddr(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        if family == AF_INET6 {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            a.sin6_scope_id = scopeID
            withUnsafeMutableBytes(of: &a.sin6_addr) { b in
                for (i, w) in words.enumerated() { b.storeBytes(of: w, toByteOffset: 4 * i, as: UInt32.self) }
            }
            return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = words[0]
        return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    }

    /// `127.0.0.1:5000`, `[::1]:5000`, as crit prints addresses.
    var description: String {
        let text = CritText.ipAddress(words) ?? "?"
        return family == AF_INET6 ? "[\(text)]:\(port)" : "\(text):\(port)"
    }
}
