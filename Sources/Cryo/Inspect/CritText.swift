import Foundation

/// crit's text conventions for values (pycriu `pb2dict.py`): base64 with line breaks,
/// quoted-printable socket names, named flag bits, `major:minor` devices, IP addresses, value
/// names, and Python's `int(s, 0)` for reading them back. Each function mirrors the Python
/// function named in its comment, so that `cryo` prints what crit prints.
enum CritText {
    // MARK: base64 (base64.encodebytes / decodebytes)

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let reverse: [Int8] = {
        var r = [Int8](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { r[Int(c)] = Int8(i) }
        return r
    }()

    /// `base64.encodebytes(b).decode()`: base64 in lines of 76 characters, each ending in
    /// `\n` (and the empty string for no bytes).
    static func base64Lines<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 4 / 3 + bytes.count / 57 + 4)
        var line = 0
        var it = bytes.makeIterator()
        while let b0 = it.next() {
            let b1 = it.next(), b2 = it.next()
            let n = UInt32(b0) << 16 | UInt32(b1 ?? 0) << 8 | UInt32(b2 ?? 0)
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(b1 == nil ? UInt8(ascii: "=") : alphabet[Int(n >> 6 & 63)])
            out.append(b2 == nil ? UInt8(ascii: "=") : alphabet[Int(n & 63)])
            line += 4
            if line == 76 { out.append(10); line = 0 }
            if b1 == nil || b2 == nil { break }
        }
        if line > 0 { out.append(10) }
        return String(decoding: out, as: UTF8.self)
    }

    /// `base64.decodebytes`: characters outside the alphabet (line breaks) are skipped, and
    /// decoding stops at padding. Nil if the data has a dangling character.
    static func decodeBase64(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var acc: UInt32 = 0
        var count = 0
        for c in text.utf8 {
            if c == UInt8(ascii: "=") { break }
            let v = reverse[Int(c)]
            if v < 0 { continue }
            acc = acc << 6 | UInt32(v)
            count += 1
            if count == 4 {
                out += [UInt8(acc >> 16 & 0xff), UInt8(acc >> 8 & 0xff), UInt8(acc & 0xff)]
                acc = 0
                count = 0
            }
        }
        switch count {
        case 0: break
        case 2: out.append(UInt8(acc >> 4 & 0xff))
        case 3: out += [UInt8(acc >> 10 & 0xff), UInt8(acc >> 2 & 0xff)]
        default: return nil
        }
        return out
    }

    // MARK: quoted-printable (quopri.encodestring / decodestring = binascii.b2a_qp / a2b_qp)

    private static let upperHex = Array("0123456789ABCDEF".utf8)

    /// `binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)`, line for line.
    static func quotedPrintable(_ data: [UInt8]) -> String {
        let maxLine = 76
        var crlf = false
        if let nl = data.firstIndex(of: 10), nl > 0, data[nl - 1] == 13 { crlf = true }
        var out: [UInt8] = []
        var i = 0
        var lineLength = 0
        let n = data.count
        func softBreak() {
            out.append(UInt8(ascii: "="))
            if crlf { out.append(13) }
            out.append(10)
            lineLength = 0
        }
        while i < n {
            let c = data[i]
            let next: UInt8? = i + 1 < n ? data[i + 1] : nil
            let mustQuote = c > 126 || c == UInt8(ascii: "=")
                || (c == UInt8(ascii: ".") && lineLength == 0 && (next == nil || next == 10 || next == 13 || next == 0))
                || ((c == 9 || c == 32) && next == nil)
                || (c < 33 && c != 13 && c != 10 && c != 9 && c != 32)
            if mustQuote {
                if lineLength + 3 >= maxLine { softBreak() }
                out += [UInt8(ascii: "="), upperHex[Int(c >> 4)], upperHex[Int(c & 15)]]
                i += 1
                lineLength += 3
            } else if c == 10 || (c == 13 && next == 10) {
                lineLength = 0
                if let last = out.last, last == 32 || last == 9 {
                    out.removeLast()
                    out += [UInt8(ascii: "="), upperHex[Int(last >> 4)], upperHex[Int(last & 15)]]
                }
                if crlf { out.append(13) }
                out.append(10)
                i += crlf ? 2 : 1
            } else {
                if i + 1 != n, next != 10, lineLength + 1 >= maxLine { softBreak() }
                lineLength += 1
                out.append(c)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `binascii.a2b_qp(data)`: `=XX` is a byte, `=` at a line end is a soft break.
    static func decodeQuotedPrintable(_ text: String) -> [UInt8] {
        let d = Array(text.utf8)
        var out: [UInt8] = []
        var i = 0
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        while i < d.count {
            if d[i] == UInt8(ascii: "=") {
                if i + 1 >= d.count { i += 1; continue }
                if d[i + 1] == 10 { i += 2; continue }
                if d[i + 1] == 13, i + 2 < d.count, d[i + 2] == 10 { i += 3; continue }
                if i + 2 < d.count, let h = hex(d[i + 1]), let l = hex(d[i + 2]) {
                    out.append(h << 4 | l)
                    i += 3
                    continue
                }
                out.append(d[i])
                i += 1
            } else {
                out.append(d[i])
                i += 1
            }
        }
        return out
    }

    // MARK: flags, devices, dictionaries

    /// pycriu's `flags_maps`: bit names per `(criu).flags` table.
    static let flagMaps: [String: [(String, UInt64)]] = [
        "mmap.prot": [("PROT_READ", 0x1), ("PROT_WRITE", 0x2), ("PROT_EXEC", 0x4)],
        "mmap.flags": [("MAP_SHARED", 0x1), ("MAP_PRIVATE", 0x2), ("MAP_ANON", 0x20), ("MAP_GROWSDOWN", 0x0100)],
        "mmap.status": [
            ("VMA_AREA_NONE", 0), ("VMA_AREA_REGULAR", 1 << 0), ("VMA_AREA_STACK", 1 << 1),
            ("VMA_AREA_VSYSCALL", 1 << 2), ("VMA_AREA_VDSO", 1 << 3), ("VMA_AREA_HEAP", 1 << 5),
            ("VMA_FILE_PRIVATE", 1 << 6), ("VMA_FILE_SHARED", 1 << 7), ("VMA_ANON_SHARED", 1 << 8),
            ("VMA_ANON_PRIVATE", 1 << 9), ("VMA_AREA_SYSVIPC", 1 << 10), ("VMA_AREA_SOCKET", 1 << 11),
            ("VMA_AREA_VVAR", 1 << 12), ("VMA_AREA_AIORING", 1 << 13), ("VMA_UNSUPP", 1 << 31),
        ],
        "rfile.flags": [
            ("O_WRONLY", 0o1), ("O_RDWR", 0o2), ("O_CREAT", 0o100), ("O_EXCL", 0o200), ("O_NOCTTY", 0o400),
            ("O_TRUNC", 0o1000), ("O_APPEND", 0o2000), ("O_NONBLOCK", 0o4000), ("O_DSYNC", 0o10000),
            ("FASYNC", 0o20000), ("O_DIRECT", 0o40000), ("O_LARGEFILE", 0o100000), ("O_DIRECTORY", 0o200000),
            ("O_NOFOLLOW", 0o400000), ("O_NOATIME", 0o1000000), ("O_CLOEXEC", 0o2000000),
        ],
        "pmap.flags": [("PE_PARENT", 1 << 0), ("PE_LAZY", 1 << 1), ("PE_PRESENT", 1 << 2)],
        "seals.flags": [
            ("F_SEAL_SEAL", 0x1), ("F_SEAL_SHRINK", 0x2), ("F_SEAL_GROW", 0x4), ("F_SEAL_WRITE", 0x8),
            ("F_SEAL_FUTURE_WRITE", 0x10),
        ],
    ]

    /// `map_flags`: the names of the set bits joined by ` | `, unknown bits last in hex.
    static func flagNames(_ value: UInt64, _ map: [(String, UInt64)]) -> String {
        var names = map.filter { value & $0.1 != 0 }.map(\.0)
        let known = map.reduce(UInt64(0)) { $0 | $1.1 }
        let rest = value & ~known
        if rest != 0 { names.append("0x" + String(rest, radix: 16)) }
        return names.joined(separator: " | ")
    }

    /// `unmap_flags`: the sum of named bits and numbers (`int(x, 0)`); nil if a part is neither.
    static func parseFlags(_ text: String, _ map: [(String, UInt64)]) -> Int64? {
        if text.isEmpty { return 0 }
        var sum: Int64 = 0
        for part in text.split(separator: "|", omittingEmptySubsequences: false) {
            let name = part.trimmingCharacters(in: " \t\n\r")
            if let bit = map.first(where: { $0.0 == name }) {
                sum &+= Int64(bitPattern: bit.1)
            } else if let v = pythonInt(name) {
                sum &+= v
            } else {
                return nil
            }
        }
        return sum
    }

    /// `decode_dev`: `major:minor`, new kernel encoding (20 minor bits) or glibc's old one.
    static func device(_ value: Int64, old: Bool) -> String {
        if old {
            let v = UInt64(bitPattern: value)
            let major = (v >> 8) & 0xfff | (v >> 32) & ~UInt64(0xfff)
            let minor = v & 0xff | (v >> 12) & ~UInt64(0xff)
            return "\(major):\(minor)"
        }
        return "\(value >> 20):\(value & ((1 << 20) - 1))"
    }

    /// `encode_dev`: the number for `major:minor`.
    static func parseDevice(_ text: String, old: Bool) -> Int64? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map { pythonInt(String($0), base: 10) }
        guard parts.count == 2, let major = parts[0], let minor = parts[1] else { return nil }
        if old {
            let ma = UInt64(bitPattern: major), mi = UInt64(bitPattern: minor)
            return Int64(bitPattern: (mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & ~0xff) << 12) | ((ma & ~0xfff) << 32))
        }
        return major << 20 | minor
    }

    /// pycriu's `dict_maps`: value names per `(criu).dict` table, then per field name.
    static let dictMaps: [String: [String: [Int64: String]]] = [
        "gen": ["task_state": [1: "Alive", 3: "Zombie", 6: "Stopped"]],
        "sk": [
            "family": [1: "UNIX", 2: "INET", 10: "INET6", 16: "NETLINK", 17: "PACKET"],
            "type": [1: "STREAM", 2: "DGRAM", 3: "RAW", 5: "SEQPACKET", 10: "PACKET"],
            "state": [1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
                      7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN"],
            "proto": [0: "IP", 6: "TCP", 17: "UDP", 136: "UDPLITE"],
        ],
    ]

    /// `"0x%x" % value` in Python (a negative value is `-0x...`).
    static func hex(_ value: Int64) -> String {
        value < 0 ? "-0x" + String(value.magnitude, radix: 16) : "0x" + String(value, radix: 16)
    }

    /// `"0x%x"` of an unsigned value.
    static func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

    /// Python's `int(text, 0)` (also `int(text, 10)` with `base: 10`): optional sign, `0x`/`0o`/
    /// `0b` prefixes, underscores between digits, surrounding white space. Nil if it is not one
    /// or does not fit 64 bits (signed, or unsigned for a positive value).
    static func pythonInt(_ text: String, base: Int = 0) -> Int64? {
        var s = Substring(text.trimmingCharacters(in: " \t\n\r\u{0b}\u{0c}"))
        var negative = false
        if s.first == "-" || s.first == "+" { negative = s.first == "-"; s = s.dropFirst() }
        var radix = base == 0 ? 10 : base
        let lower = s.lowercased()
        if base == 0 || base == 16, lower.hasPrefix("0x") { radix = 16; s = s.dropFirst(2) }
        else if base == 0 || base == 8, lower.hasPrefix("0o") { radix = 8; s = s.dropFirst(2) }
        else if base == 0 || base == 2, lower.hasPrefix("0b") { radix = 2; s = s.dropFirst(2) }
        else if base == 0, s.count > 1, s.first == "0", s.contains(where: { $0 != "0" && $0 != "_" }) { return nil }
        if s.first == "_" { s = s.dropFirst() }
        guard !s.isEmpty, !s.hasSuffix("_"), !s.contains("__") else { return nil }
        guard let magnitude = UInt64(s.filter { $0 != "_" }, radix: radix) else { return nil }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        return Int64(bitPattern: magnitude)
    }

    // MARK: IP addresses (ipaddress.IPv4Address / IPv6Address .compressed)

    /// The text of an address kept as network-order u32 words: one word is IPv4, four IPv6.
    static func ipAddress(_ words: [UInt32]) -> String? {
        let host = words.map { $0.byteSwapped } // socket.ntohl on little-endian
        if host.count == 1 {
            let v = host[0]
            return "\(v >> 24).\(v >> 16 & 0xff).\(v >> 8 & 0xff).\(v & 0xff)"
        }
        guard host.count >= 4 else { return nil }
        var groups: [UInt16] = []
        for w in host.prefix(4) { groups += [UInt16(w >> 16), UInt16(w & 0xffff)] }
        // Python: the longest run of zero groups (first one on ties), if longer than one.
        var bestStart = -1, bestLength = 0, runStart = -1
        for i in 0...8 {
            if i < 8, groups[i] == 0 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                if i - runStart > bestLength { bestStart = runStart; bestLength = i - runStart }
                runStart = -1
            }
        }
        let text = groups.map { String($0, radix: 16) }
        guard bestLength > 1 else { return text.joined(separator: ":") }
        let head = text[0..<bestStart].joined(separator: ":")
        let tail = text[(bestStart + bestLength)...].joined(separator: ":")
        return head + "::" + tail
    }

    /// The network-order u32 words of an IPv4 or IPv6 address (`ip_address` + `htonl`).
    static func parseIPAddress(_ text: String) -> [UInt32]? {
        if text.contains(":") {
            guard let groups = parseIPv6(text) else { return nil }
            return (0..<4).map { (UInt32(groups[2 * $0]) << 16 | UInt32(groups[2 * $0 + 1])).byteSwapped }
        }
        guard let v = parseIPv4(text) else { return nil }
        return [v.byteSwapped]
    }

    private static func parseIPv4(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isASCII), let n = UInt32(p), n <= 255,
                  p.count == 1 || p.first != "0" else { return nil }
            v = v << 8 | n
        }
        return v
    }

    private static func parseIPv6(_ text: String) -> [UInt16]? {
        var s = text
        var tail4: [UInt16] = []
        if let lastColon = s.lastIndex(of: ":"), s[s.index(after: lastColon)...].contains(".") {
            guard let v4 = parseIPv4(String(s[s.index(after: lastColon)...])) else { return nil }
            tail4 = [UInt16(v4 >> 16), UInt16(v4 & 0xffff)]
            s = String(s[...lastColon]) + "0"
        }
        func groups(_ part: Substring) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            for g in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard !g.isEmpty, g.count <= 4, let n = UInt16(g, radix: 16) else { return nil }
                out.append(n)
            }
            return out
        }
        var result: [UInt16]
        let halves = s.components(separatedBy: "::")
        if halves.count == 2 {
            guard let head = groups(Substring(halves[0])), let tail = groups(Substring(halves[1])) else { return nil }
            var tailGroups = tail
            if !tail4.isEmpty { tailGroups.removeLast(); tailGroups += tail4 }
            guard head.count + tailGroups.count < 8 else { return nil }
            result = head + [UInt16](repeating: 0, count: 8 - head.count - tailGroups.count) + tailGroups
        } else if halves.count == 1 {
            guard var all = groups(Substring(s)) else { return nil }
            if !tail4.isEmpty { all.removeLast(); all += tail4 }
            result = all
        } else {
            return nil
        }
        return result.count == 8 ? result : nil
    }

    // MARK: sizes

    /// crit's `human_readable` for `--nopl` (`1KB`, `4.5MB`...).
    static func humanSize(_ bytes: UInt64) -> String {
        var num = Double(bytes)
        for unit in ["", "K", "M", "G", "T", "P", "E", "Z"] {
            if num < 1024 {
                if num == num.rounded(.towardZero) { return "\(Int64(num))\(unit)B" }
                return String(format: "%.1f", num) + unit + "B"
            }
            num /= 1024
        }
        return String(format: "%.1fYB", num)
    }
}
