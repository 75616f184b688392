import Foundation
import Glibc
import SystemPackage

/// The socket options every kind of socket saves (`sk_opts_entry`, shared by unix and inet
/// socket entries), read from Cryo's copy of a dumped socket and set on a restored one.
enum SocketOptions {
    /// SO_BUF_LOCK (linux/socket.h, 5.14+): which of the two buffer sizes were set by hand.
    /// Glibc does not define it yet.
    static let bufferLockOption: Int32 = 72

    /// An int-sized option of socket `fd`, nil when the kernel does not have it.
    static func int(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32? {
        var v: Int32 = 0
        var len = socklen_t(4)
        return getsockopt(fd, level, name, &v, &len) == 0 ? v : nil
    }

    /// Sets option `name` at `level` of socket `fd` to `value` (an int, a `timeval`, a
    /// `linger`...); the error names the option (`label`) and the socket (`what`).
    static func set<T>(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: T, _ label: String, on what: String) throws {
        var v = value
        guard setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<T>.size)) == 0 else {
            throw CryoError("cannot set \(label) on \(what)", errno: Errno(rawValue: errnoValue))
        }
    }

    /// The options of socket `fd`; `tcp` adds the TCP keepalive timings.
    static func read(_ fd: Int32, tcp: Bool) -> SkOptsEntry {
        func int(_ level: Int32, _ name: Int32) -> Int32? { SocketOptions.int(fd, level, name) }
        func flag(_ name: Int32) -> Bool { (int(SOL_SOCKET, name) ?? 0) != 0 }
        func timeout(_ name: Int32) -> timeval {
            var t = timeval()
            var len = socklen_t(MemoryLayout<timeval>.size)
            _ = getsockopt(fd, SOL_SOCKET, name, &t, &len)
            return t
        }
        var o = SkOptsEntry()
        o.soSndbuf = UInt32(bitPattern: int(SOL_SOCKET, SO_SNDBUF) ?? 0)
        o.soRcvbuf = UInt32(bitPattern: int(SOL_SOCKET, SO_RCVBUF) ?? 0)
        let send = timeout(SO_SNDTIMEO), receive = timeout(SO_RCVTIMEO)
        o.soSndTmoSec = UInt64(send.tv_sec); o.soSndTmoUsec = UInt64(send.tv_usec)
        o.soRcvTmoSec = UInt64(receive.tv_sec); o.soRcvTmoUsec = UInt64(receive.tv_usec)
        o.reuseaddr = flag(SO_REUSEADDR)
        o.soReuseport = flag(SO_REUSEPORT)
        o.soPriority = UInt32(bitPattern: int(SOL_SOCKET, SO_PRIORITY) ?? 0)
        o.soRcvlowat = UInt32(bitPattern: int(SOL_SOCKET, SO_RCVLOWAT) ?? 1)
        o.soMark = UInt32(bitPattern: int(SOL_SOCKET, SO_MARK) ?? 0)
        o.soPasscred = flag(SO_PASSCRED)
        o.soPasssec = flag(SO_PASSSEC)
        o.soDontroute = flag(SO_DONTROUTE)
        o.soNoCheck = flag(SO_NO_CHECK)
        o.soBroadcast = flag(SO_BROADCAST)
        o.soKeepalive = flag(SO_KEEPALIVE)
        o.soOobinline = flag(SO_OOBINLINE) ? 1 : 0
        if let lock = int(SOL_SOCKET, bufferLockOption) { o.soBufLock = UInt32(bitPattern: lock) }
        var linger = Glibc.linger()
        var len = socklen_t(MemoryLayout<Glibc.linger>.size)
        if getsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, &len) == 0 && linger.l_onoff != 0 {
            o.soLinger = UInt32(bitPattern: linger.l_linger)
        }
        var device = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        len = socklen_t(device.count)
        if getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, &device, &len) == 0 && len > 0 && device[0] != 0 {
            o.soBoundDev = String(cString: device)
        }
        if tcp {
            let level = Int32(IPPROTO_TCP)
            if let v = int(level, TCP_KEEPCNT) { o.tcpKeepcnt = UInt32(bitPattern: v) }
            if let v = int(level, TCP_KEEPIDLE) { o.tcpKeepidle = UInt32(bitPattern: v) }
            if let v = int(level, TCP_KEEPINTVL) { o.tcpKeepintvl = UInt32(bitPattern: v) }
        }
        return o
    }

    /// The TCP-level options of TCP socket `fd` that newer CRIU keeps in `tcp_opts`. The
    /// keepalive timings are also in `sk_opts_entry` (where CRIU 3.17 reads them): they are
    /// taken from `options`, `read(fd, tcp: true)`, not asked for again.
    static func readTCP(_ fd: Int32, options o: SkOptsEntry) -> TcpOptsEntry {
        func int(_ name: Int32) -> Int32? { SocketOptions.int(fd, Int32(IPPROTO_TCP), name) }
        var t = TcpOptsEntry()
        t.cork = (int(TCP_CORK) ?? 0) != 0
        t.nodelay = (int(TCP_NODELAY) ?? 0) != 0
        if o.hasTcpKeepcnt { t.keepcnt = o.tcpKeepcnt }
        if o.hasTcpKeepidle { t.keepidle = o.tcpKeepidle }
        if o.hasTcpKeepintvl { t.keepintvl = o.tcpKeepintvl }
        return t
    }

    /// Sets TCP_CORK and TCP_NODELAY of `t` on the new TCP socket `fd` (the keepalive
    /// timings come with `apply`).
    static func applyTCP(_ t: TcpOptsEntry, to fd: Int32, what: String) throws {
        for (on, name, label) in [(t.cork, TCP_CORK, "TCP_CORK"), (t.nodelay, TCP_NODELAY, "TCP_NODELAY")] where on {
            try set(fd, Int32(IPPROTO_TCP), name, Int32(1), label, on: what)
        }
    }

    /// Sets `o` on the new socket `fd` (`what` names it in errors). Options still at their
    /// default are left alone: some need privileges even to be set to what they already are.
    static func apply(_ o: SkOptsEntry, to fd: Int32, tcp: Bool, what: String) throws {
        func set(_ level: Int32, _ name: Int32, _ value: Int32, _ label: String) throws {
            try SocketOptions.set(fd, level, name, value, label, on: what)
        }
        func setTimeout(_ name: Int32, _ sec: UInt64, _ usec: UInt64, _ label: String) throws {
            guard sec != 0 || usec != 0 else { return }
            try SocketOptions.set(fd, SOL_SOCKET, name, timeval(tv_sec: Int(sec), tv_usec: Int(usec)), label, on: what)
        }
        // getsockopt reports twice what setsockopt was given (the kernel doubles it for its
        // bookkeeping); the FORCE variants ignore the sysctl maxima, as the sizes once fit.
        // Without CAP_NET_ADMIN the FORCE variants are refused: the plain ones then do what
        // the sysctl maxima allow.
        func setBuffer(_ force: Int32, _ plain: Int32, _ size: UInt32, _ label: String) throws {
            guard size > 0 else { return }
            var v = Int32(bitPattern: size / 2)
            if setsockopt(fd, SOL_SOCKET, force, &v, 4) == 0 { return }
            if errnoValue == EPERM { try set(SOL_SOCKET, plain, v, label) } else {
                throw CryoError("cannot set \(label) on \(what)", errno: Errno(rawValue: errnoValue))
            }
        }
        try setBuffer(SO_SNDBUFFORCE, SO_SNDBUF, o.soSndbuf, "SO_SNDBUF")
        try setBuffer(SO_RCVBUFFORCE, SO_RCVBUF, o.soRcvbuf, "SO_RCVBUF")
        // Setting the sizes locked them; unlock what the kernel was still free to tune.
        if o.hasSoBufLock { try set(SOL_SOCKET, bufferLockOption, Int32(bitPattern: o.soBufLock), "SO_BUF_LOCK") }
        try setTimeout(SO_SNDTIMEO, o.soSndTmoSec, o.soSndTmoUsec, "SO_SNDTIMEO")
        try setTimeout(SO_RCVTIMEO, o.soRcvTmoSec, o.soRcvTmoUsec, "SO_RCVTIMEO")
        let flags: [(Bool, Int32, String)] = [
            (o.reuseaddr, SO_REUSEADDR, "SO_REUSEADDR"), (o.soReuseport, SO_REUSEPORT, "SO_REUSEPORT"),
            (o.soPasscred, SO_PASSCRED, "SO_PASSCRED"), (o.soPasssec, SO_PASSSEC, "SO_PASSSEC"),
            (o.soDontroute, SO_DONTROUTE, "SO_DONTROUTE"), (o.soNoCheck, SO_NO_CHECK, "SO_NO_CHECK"),
            (o.soBroadcast, SO_BROADCAST, "SO_BROADCAST"), (o.soKeepalive, SO_KEEPALIVE, "SO_KEEPALIVE"),
            (o.soOobinline != 0, SO_OOBINLINE, "SO_OOBINLINE"),
        ]
        for (on, name, label) in flags where on { try set(SOL_SOCKET, name, 1, label) }
        if o.soPriority != 0 { try set(SOL_SOCKET, SO_PRIORITY, Int32(bitPattern: o.soPriority), "SO_PRIORITY") }
        if o.soRcvlowat > 1 { try set(SOL_SOCKET, SO_RCVLOWAT, Int32(bitPattern: o.soRcvlowat), "SO_RCVLOWAT") }
        if o.soMark != 0 { try set(SOL_SOCKET, SO_MARK, Int32(bitPattern: o.soMark), "SO_MARK") }
        if o.hasSoLinger {
            try SocketOptions.set(fd, SOL_SOCKET, SO_LINGER, Glibc.linger(l_onoff: 1, l_linger: Int32(bitPattern: o.soLinger)), "SO_LINGER", on: what)
        }
        if o.hasSoBoundDev && !o.soBoundDev.isEmpty {
            let r = o.soBoundDev.withCString { setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0, socklen_t(strlen($0) + 1)) }
            guard r == 0 else {
                throw CryoError("cannot bind \(what) to device \(o.soBoundDev) (SO_BINDTODEVICE)", errno: Errno(rawValue: errnoValue))
            }
        }
        if tcp {
            let level = Int32(IPPROTO_TCP)
            if o.hasTcpKeepcnt { try set(level, TCP_KEEPCNT, Int32(bitPattern: o.tcpKeepcnt), "TCP_KEEPCNT") }
            if o.hasTcpKeepidle { try set(level, TCP_KEEPIDLE, Int32(bitPattern: o.tcpKeepidle), "TCP_KEEPIDLE") }
            if o.hasTcpKeepintvl { try set(level, TCP_KEEPINTVL, Int32(bitPattern: o.tcpKeepintvl), "TCP_KEEPINTVL") }
        }
    }
}
