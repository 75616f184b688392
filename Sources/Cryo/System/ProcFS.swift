import Glibc
import SystemPackage

/// Reading a whole file into memory (small /proc and sysfs files, images' metadata).
public func readWholeFile(_ path: String) throws -> [UInt8] {
    let fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
    defer { try? fd.close() }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = try chunk.withUnsafeMutableBytes { try fd.read(into: $0) }
        if n == 0 { return result }
        result += chunk.prefix(n)
    }
}

/// A process's directory in /proc, with parsers for the files Cryo reads.
public struct ProcDirectory: Sendable {
    /// The process (or, for `task(_:)`, thread) id.
    public let pid: pid_t
    /// `/proc/PID` or `/proc/PID/task/TID`.
    public let path: String

    /// `/proc/PID`.
    public init(pid: pid_t) {
        self.pid = pid
        self.path = "/proc/\(pid)"
    }

    private init(pid: pid_t, path: String) {
        self.pid = pid
        self.path = path
    }

    /// `/proc/PID/task/TID`.
    public func task(_ tid: pid_t) -> ProcDirectory {
        ProcDirectory(pid: tid, path: "\(path)/task/\(tid)")
    }

    /// The raw bytes of a file below this directory.
    public func bytes(_ name: String) throws -> [UInt8] {
        do { return try readWholeFile("\(path)/\(name)") }
        catch let e as Errno { throw CryoError("cannot read \(path)/\(name)", errno: e) }
    }

    /// A file below this directory as text.
    public func text(_ name: String) throws -> String {
        String(decoding: try bytes(name), as: UTF8.self)
    }

    /// The target of a symbolic link below this directory (`exe`, `cwd`, `fd/3`).
    public func link(_ name: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("\(path)/\(name)", &buffer, buffer.count - 1)
        if n < 0 { throw CryoError("cannot read link \(path)/\(name)", errno: Errno(rawValue: errnoValue)) }
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Thread ids from `task/`, sorted, leader first.
    public func threadIDs() throws -> [pid_t] {
        guard let dir = opendir("\(path)/task") else {
            throw CryoError("cannot list threads of process \(pid) (\(path)/task)", errno: Errno(rawValue: errnoValue))
        }
        defer { closedir(dir) }
        var ids: [pid_t] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if let id = pid_t(name) { ids.append(id) }
        }
        return ids.sorted { a, b in a == pid ? true : b == pid ? false : a < b }
    }

    /// Open fd numbers from `fd/`, sorted.
    public func fdNumbers() throws -> [Int32] {
        guard let dir = opendir("\(path)/fd") else {
            throw CryoError("cannot list open files of process \(pid)", errno: Errno(rawValue: errnoValue))
        }
        defer { closedir(dir) }
        var fds: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if let fd = Int32(name) { fds.append(fd) }
        }
        return fds.sorted()
    }

    /// `status` as key → value.
    public func status() throws -> [String: String] {
        var result: [String: String] = [:]
        for line in try text("status").split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            result[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
        }
        return result
    }

    /// `stat`, split into fields after the command name; index 0 is field 3 (`state`) of proc(5).
    public func statFields() throws -> [String] {
        let s = try text("stat")
        guard let close = s.lastIndex(of: ")") else { throw CryoError("malformed \(path)/stat") }
        return s[s.index(after: close)...].split(separator: " ").map(String.init)
    }

    /// The memory mappings, from `smaps` (for VmFlags).
    public func mappings() throws -> [Mapping] {
        try Mapping.parse(smaps: bytes("smaps"))
    }

    /// `fdinfo/FD` as key → value (first line of each key).
    public func fdInfo(_ fd: Int32) throws -> [String: String] {
        FdInfoText.fields(try text("fdinfo/\(fd)"))
    }
}

/// The two shapes of lines in `/proc/PID/fdinfo/N`: `key:\tvalue` lines (pos, flags, and
/// per-kind ones such as `eventfd-count`), and one record line per watch or mark of epoll,
/// inotify and fanotify files (`tfd:  4 events: 19 data: 4d ...`, `inotify wd:1 ino:... ...`).
public enum FdInfoText {
    /// The `key:\tvalue` lines; the first line with a key wins.
    public static func fields(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[..<colon])
            if result[key] == nil {
                result[key] = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
            }
        }
        return result
    }

    /// The record lines starting with `prefix`, each as its `key:value` pairs. The kernel pads
    /// some values (`tfd:        4`), so a word ending in `:` takes the next word as its value;
    /// words without a colon (the `inotify` tag) are skipped.
    public static func records(_ text: String, startingWith prefix: String) -> [[String: String]] {
        text.split(separator: "\n").filter { $0.hasPrefix(prefix) }.map { line in
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            var record: [String: String] = [:]
            var i = 0
            while i < words.count {
                let word = words[i]
                if word.hasSuffix(":"), i + 1 < words.count {
                    record[String(word.dropLast())] = String(words[i + 1])
                    i += 2
                    continue
                }
                if let colon = word.firstIndex(of: ":") {
                    record[String(word[..<colon])] = String(word[word.index(after: colon)...])
                }
                i += 1
            }
            return record
        }
    }
}

/// One line of /proc/PID/maps with the VmFlags of its smaps block.
public struct Mapping: Sendable, Equatable {
    public var start: UInt64
    public var end: UInt64
    public var readable: Bool
    public var writable: Bool
    public var executable: Bool
    public var shared: Bool
    public var offset: UInt64
    public var device: (major: UInt32, minor: UInt32)
    public var inode: UInt64
    /// The path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`, `/lib/... (deleted)`), or "".
    public var name: String
    /// Two-letter flags from smaps' VmFlags (`gd`, `sh`, `dd`...).
    public var flags: Set<String>

    public static func == (a: Mapping, b: Mapping) -> Bool {
        a.start == b.start && a.end == b.end && a.name == b.name && a.offset == b.offset
    }

    public var length: UInt64 { end - start }
    public var isFileBacked: Bool { inode != 0 }

    /// PROT_* bits.
    public var protection: Int32 {
        (readable ? PROT_READ : 0) | (writable ? PROT_WRITE : 0) | (executable ? PROT_EXEC : 0)
    }

    /// Parses `/proc/PID/maps` or `/proc/PID/smaps` text.
    public static func parse(smaps text: String) throws -> [Mapping] {
        try parse(smaps: Array(text.utf8))
    }

    /// Parses `/proc/PID/maps` or `/proc/PID/smaps` as bytes. A process has thousands of smaps
    /// lines: they are told apart by their first byte (a header starts with a hex digit, the
    /// key lines with a capital letter), and only headers and `VmFlags:` are looked into.
    public static func parse(smaps text: [UInt8]) throws -> [Mapping] {
        var result: [Mapping] = []
        try text.withUnsafeBufferPointer { buffer in
            var lineStart = 0
            while lineStart < buffer.count {
                var lineEnd = lineStart
                while lineEnd < buffer.count && buffer[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
                defer { lineStart = lineEnd + 1 }
                guard lineEnd > lineStart else { continue }
                let line = UnsafeBufferPointer(rebasing: buffer[lineStart..<lineEnd])
                let first = line[0]
                if first == UInt8(ascii: "V") {
                    let prefix = Array("VmFlags:".utf8)
                    guard line.count >= prefix.count, line.starts(with: prefix), !result.isEmpty else { continue }
                    result[result.count - 1].flags = Set(line[prefix.count...].split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) })
                    continue
                }
                // Key lines start with a capital letter ("AnonHugePages:" too): headers with a
                // digit or a lowercase hex letter, as the kernel prints addresses.
                guard (first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9")) || (first >= UInt8(ascii: "a") && first <= UInt8(ascii: "f")) else { continue }
                result.append(try header(line))
            }
        }
        return result
    }

    /// One header line: `start-end perms offset major:minor inode [name]`.
    private static func header(_ line: UnsafeBufferPointer<UInt8>) throws -> Mapping {
        var i = 0
        func malformed() -> CryoError { CryoError("malformed mapping line: \(String(decoding: line, as: UTF8.self))") }
        func hex(until stop: UInt8) throws -> UInt64 {
            var v: UInt64 = 0
            var digits = 0
            while i < line.count, let d = hexValue(line[i]) { v = v << 4 | UInt64(d); i += 1; digits += 1 }
            guard digits > 0, i < line.count, line[i] == stop else { throw malformed() }
            i += 1
            return v
        }
        let start = try hex(until: UInt8(ascii: "-"))
        let end = try hex(until: UInt8(ascii: " "))
        guard i + 5 <= line.count else { throw malformed() }
        let perms = Array(line[i..<(i + 4)])
        i += 5
        let offset = try hex(until: UInt8(ascii: " "))
        let major = try hex(until: UInt8(ascii: ":"))
        let minor = try hex(until: UInt8(ascii: " "))
        var inode: UInt64 = 0
        var digits = 0
        while i < line.count, line[i] >= UInt8(ascii: "0"), line[i] <= UInt8(ascii: "9") {
            inode = inode * 10 + UInt64(line[i] - UInt8(ascii: "0")); i += 1; digits += 1
        }
        guard digits > 0 else { throw malformed() }
        while i < line.count, line[i] == UInt8(ascii: " ") { i += 1 }
        var nameEnd = line.count
        while nameEnd > i, line[nameEnd - 1] == UInt8(ascii: " ") { nameEnd -= 1 }
        let name = String(decoding: line[i..<nameEnd], as: UTF8.self)
        return Mapping(start: start, end: end, readable: perms[0] == UInt8(ascii: "r"), writable: perms[1] == UInt8(ascii: "w"),
                       executable: perms[2] == UInt8(ascii: "x"), shared: perms[3] == UInt8(ascii: "s"), offset: offset,
                       device: (UInt32(truncatingIfNeeded: major), UInt32(truncatingIfNeeded: minor)), inode: inode, name: name, flags: [])
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        default: return nil
        }
    }
}

extension StringProtocol {
    /// The string without leading and trailing characters from `set`.
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
