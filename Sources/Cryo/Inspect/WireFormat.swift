/// Reading protobuf's wire format from a byte array, with every read bounds-checked: a bad
/// varint, a length running past the end or an unknown wire type throws an
/// ``ImageFormatError`` with the absolute offset in the file, never traps.
struct WireReader {
    /// One raw field value as found on the wire.
    enum Value {
        case varint(UInt64)
        case fixed64(UInt64)
        case fixed32(UInt32)
        case bytes(Range<Int>)
    }

    let bytes: [UInt8]
    let file: String
    /// The next byte to read (an index into `bytes`, which is the whole file, so it is also
    /// the file offset).
    var at: Int
    let end: Int

    init(_ bytes: [UInt8], _ range: Range<Int>, file: String) {
        self.bytes = bytes
        self.file = file
        at = range.lowerBound
        end = range.upperBound
    }

    var atEnd: Bool { at >= end }

    func failure(_ kind: ImageFormatError.Kind = .corrupt, at offset: Int? = nil, _ reason: String) -> ImageFormatError {
        ImageFormatError(kind, file: file, offset: offset ?? at, reason)
    }

    mutating func varint() throws -> UInt64 {
        let start = at
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard at < end else { throw failure(.truncated, at: start, "varint runs past the end of its message") }
            let b = bytes[at]
            at += 1
            if shift == 63 && b > 1 { throw failure(.corrupt, at: start, "varint is longer than 64 bits") }
            result |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw failure(.corrupt, at: start, "varint is longer than 10 bytes") }
        }
    }

    mutating func fixed32() throws -> UInt32 {
        guard end - at >= 4 else { throw failure(.truncated, "fixed32 runs past the end of its message") }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[at + i]) << (8 * UInt32(i)) }
        at += 4
        return v
    }

    mutating func fixed64() throws -> UInt64 {
        guard end - at >= 8 else { throw failure(.truncated, "fixed64 runs past the end of its message") }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[at + i]) << (8 * UInt64(i)) }
        at += 8
        return v
    }

    /// A field's tag: its number and wire type.
    mutating func tag() throws -> (number: Int, wireType: Int, offset: Int) {
        let offset = at
        let key = try varint()
        let number = key >> 3
        guard number > 0, number <= 0x1fff_ffff else { throw failure(.corrupt, at: offset, "field number \(number) is invalid") }
        return (Int(number), Int(key & 7), offset)
    }

    /// Reads the value of a field with `wireType`; groups (3) are skipped and give nil.
    mutating func value(wireType: Int, tagOffset: Int) throws -> Value? {
        switch wireType {
        case 0: return .varint(try varint())
        case 1: return .fixed64(try fixed64())
        case 5: return .fixed32(try fixed32())
        case 2:
            let lengthAt = at
            let length = try varint()
            guard length <= UInt64(end - at) else {
                throw failure(.truncated, at: lengthAt, "field of \(length) bytes, only \(end - at) left in its message")
            }
            let r = at..<(at + Int(length))
            at += Int(length)
            return .bytes(r)
        case 3:
            try skipGroup(depth: 0)
            return nil
        default:
            throw failure(.corrupt, at: tagOffset, "wire type \(wireType) is invalid")
        }
    }

    private mutating func skipGroup(depth: Int) throws {
        guard depth < 64 else { throw failure(.corrupt, "groups nested too deeply") }
        while true {
            guard !atEnd else { throw failure(.truncated, "group has no end") }
            let t = try tag()
            if t.wireType == 4 { return }
            if t.wireType == 3 { try skipGroup(depth: depth + 1); continue }
            _ = try value(wireType: t.wireType, tagOffset: t.offset)
        }
    }
}

/// Writing protobuf's wire format.
struct WireWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func tag(_ number: Int, _ wireType: Int) { varint(UInt64(number) << 3 | UInt64(wireType)) }

    mutating func fixed32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(v >> (8 * UInt32(i)) & 0xff)) } }

    mutating func fixed64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(v >> (8 * UInt64(i)) & 0xff)) } }

    mutating func lengthDelimited(_ payload: [UInt8]) {
        varint(UInt64(payload.count))
        bytes += payload
    }
}

/// Little-endian u32 at `offset` of `bytes` (the caller checked the bounds).
func littleEndian32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
    UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
}

/// The four little-endian bytes of `v`.
func littleEndianBytes(_ v: UInt32) -> [UInt8] {
    [UInt8(v & 0xff), UInt8(v >> 8 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 24)]
}
