import Glibc

/// What to look for in a dumped process's memory.
public enum MemoryPattern: Sendable {
    /// These exact bytes.
    case literal([UInt8])
    /// A POSIX extended regular expression (glibc `regcomp`, bytes in the C locale).
    case regex(String)
}

/// One place a pattern occurs.
public struct MemoryMatch: Sendable {
    /// The process.
    public let pid: UInt32
    /// Where the match starts.
    public let address: UInt64
    /// How many bytes matched.
    public let length: Int
}

/// Finds a pattern in the dumped pages of a process, streaming: the pages file is read in
/// 4 MiB chunks into one reused buffer, each chunk overlapping the previous one so that a
/// match across a chunk boundary is found once. Memory use does not grow with the image.
///
/// Only dumped pages are searched (what the image holds); pages that are the unchanged
/// content of a mapped file, or zeros, are not.
public final class MemorySearch {
    /// Bytes read per step.
    public static let chunkSize = 4 << 20
    /// How far a regular-expression match may reach past a chunk and still be found.
    public static let regexReach = 64 << 10

    private let pattern: MemoryPattern
    private var regex = regex_t()
    private let compiled: Bool
    private let buffer: UnsafeMutableRawBufferPointer

    /// Prepares a search; throws if the regular expression does not compile.
    public init(_ pattern: MemoryPattern) throws {
        self.pattern = pattern
        if case .regex(let text) = pattern {
            let rc = regcomp(&regex, text, REG_EXTENDED)
            guard rc == 0 else {
                var message = [CChar](repeating: 0, count: 256)
                regerror(rc, &regex, &message, message.count)
                throw ImageFormatError(.badJSON, file: "--search-regex", offset: nil,
                                       "'\(text)' is not a valid regular expression: \(String(cString: message))")
            }
            compiled = true
        } else {
            compiled = false
        }
        buffer = .allocate(byteCount: Self.chunkSize + Self.regexReach, alignment: 4096)
    }

    deinit {
        if compiled { regfree(&regex) }
        buffer.deallocate()
    }

    private var overlap: Int {
        switch pattern {
        case .literal(let bytes): max(0, bytes.count - 1)
        case .regex: Self.regexReach
        }
    }

    /// Calls `found` for each match in the dumped memory of `memory`, in address order, until
    /// `limit` matches (if given); returns how many were reported.
    @discardableResult
    public func search(_ memory: ProcessMemory, limit: Int? = nil, _ found: (MemoryMatch) throws -> Void) throws -> Int {
        if case .literal(let bytes) = pattern, bytes.isEmpty { return 0 }
        var count = 0
        let overlap = self.overlap
        let step = Self.chunkSize
        for segment in memory.dumpedSegments {
            var offset: UInt64 = 0 // within the segment
            while offset < segment.length {
                let n = Int(min(UInt64(step + overlap), segment.length - offset))
                try segment.file.read(buffer.baseAddress!, offset: segment.fileOffset + offset, count: n)
                let last = offset + UInt64(n) >= segment.length
                // Report only matches that start in this step; later ones come with the next.
                let limitStart = last ? n : step
                var stop = false
                try scan(n, limitStart: limitStart, atSegmentStart: offset == 0) { start, length in
                    try found(MemoryMatch(pid: memory.pid, address: segment.address + offset + UInt64(start), length: length))
                    count += 1
                    if let limit, count >= limit { stop = true }
                    return !stop
                }
                if stop || last { if stop { return count }; break }
                offset += UInt64(step)
            }
        }
        return count
    }

    /// The first occurrence of `needle` in `base[from..<to]`: `memchr` (vectorized in glibc)
    /// for its first byte, then `memcmp`. (glibc's `memmem` is not visible to Swift without
    /// `_GNU_SOURCE`.)
    private func find(_ needle: UnsafeRawBufferPointer, in base: UnsafeMutableRawPointer, from: Int, to: Int) -> Int? {
        let m = needle.count
        let first = Int32(needle[0])
        var at = from
        while to - at >= m {
            guard let hit = memchr(base + at, first, to - at - m + 1) else { return nil }
            let i = base.distance(to: hit)
            if memcmp(hit, needle.baseAddress!, m) == 0 { return i }
            at = i + 1
        }
        return nil
    }

    /// Scans the first `n` bytes of the buffer; `report(start, length)` returns false to stop.
    private func scan(_ n: Int, limitStart: Int, atSegmentStart: Bool, _ report: (Int, Int) throws -> Bool) throws {
        let base = buffer.baseAddress!
        switch pattern {
        case .literal(let needle):
            var at = 0
            try needle.withUnsafeBytes { p in
                while at < limitStart, n - at >= needle.count {
                    guard let start = find(p, in: base, from: at, to: n) else { return }
                    guard start < limitStart else { return }
                    guard try report(start, needle.count) else { return }
                    at = start + 1
                }
            }
        case .regex:
            var at = 0
            var match = regmatch_t()
            let text = base.assumingMemoryBound(to: CChar.self)
            while at < limitStart {
                match.rm_so = regoff_t(at)
                match.rm_eo = regoff_t(n)
                let flags = REG_STARTEND | (at == 0 && atSegmentStart ? 0 : REG_NOTBOL)
                guard regexec(&regex, text, 1, &match, flags) == 0 else { return }
                let start = Int(match.rm_so), end = Int(match.rm_eo)
                guard start < limitStart else { return }
                guard try report(start, end - start) else { return }
                at = max(end, start + 1)
            }
        }
    }
}

/// `hexdump -C`-style lines: address, 16 bytes in hex, and their printable ASCII.
public enum HexDump {
    /// The lines for `bytes`, which start at `address`.
    public static func lines(_ bytes: [UInt8], address: UInt64) -> [String] {
        stride(from: 0, to: bytes.count, by: 16).map { i in
            let row = bytes[i..<min(i + 16, bytes.count)]
            var hex = ""
            for (j, b) in row.enumerated() {
                hex += (b < 16 ? "0" : "") + String(b, radix: 16) + (j == 7 ? "  " : " ")
            }
            hex += String(repeating: " ", count: (16 - row.count) * 3 + (row.count <= 7 ? 1 : 0))
            let ascii = String(row.map { (0x20...0x7e).contains($0) ? Character(Unicode.Scalar($0)) : "." })
            return Explore.hex(address + UInt64(i), width: 12) + "  " + hex + " |" + ascii + "|"
        }
    }
}
