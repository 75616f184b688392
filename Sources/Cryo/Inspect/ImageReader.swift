import Glibc
import SwiftProtobuf

/// Reads typed entries from image files for the inspection tools, reporting bad files with an
/// ``ImageFormatError`` (file and offset) rather than a generic error.
///
/// Messages are decoded `partial`: an entry missing a required field still reads (its field
/// is zero), so a tool can show what is there instead of refusing the whole dump.
public enum ImageReader {
    /// The whole contents of a file.
    public static func bytes(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ImageFormatError(.io, file: path, offset: nil, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        var out: [UInt8] = []
        if fstat(fd, &st) == 0, st.st_size > 0 { out.reserveCapacity(Int(st.st_size)) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ImageFormatError(.io, file: path, offset: out.count, "cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { return out }
            out += buffer[0..<n]
        }
    }

    /// The payload ranges of an image of kind `magic`, after checking its magic.
    public static func frames(_ bytes: [UInt8], magic: ImageMagic, file: String) throws -> [Range<Int>] {
        let (name, start) = try ImageJSON.magic(bytes, file: file)
        guard name == magic.name else {
            throw ImageFormatError(.inconsistent, file: file, offset: start - 4, "holds \(name) entries, expected \(magic)")
        }
        var result: [Range<Int>] = []
        var at = start
        while at < bytes.count {
            guard bytes.count - at >= 4 else {
                throw ImageFormatError(.truncated, file: file, offset: at, "incomplete entry size: \(bytes.count - at) bytes left")
            }
            let size = Int(littleEndian32(bytes, at))
            guard size <= bytes.count - at - 4 else {
                throw ImageFormatError(.truncated, file: file, offset: at, "entry of \(size) bytes, only \(bytes.count - at - 4) left")
            }
            result.append((at + 4)..<(at + 4 + size))
            at += 4 + size
        }
        return result
    }

    /// Decodes one entry.
    public static func message<M: SwiftProtobuf.Message>(_ bytes: [UInt8], _ range: Range<Int>, as type: M.Type, file: String) throws -> M {
        do {
            return try M(serializedBytes: Array(bytes[range]), partial: true)
        } catch {
            throw ImageFormatError(.corrupt, file: file, offset: range.lowerBound - 4,
                                   "entry does not decode as \(M.protoMessageName): \(error)")
        }
    }

    /// Every entry of the image file at `path`, which must be of kind `magic`.
    public static func entries<M: SwiftProtobuf.Message>(_ path: String, magic: ImageMagic, as type: M.Type = M.self) throws -> [M] {
        let bytes = try bytes(path)
        return try frames(bytes, magic: magic, file: path).map { try message(bytes, $0, as: M.self, file: path) }
    }

    /// The single (first) entry of the image file at `path`.
    public static func first<M: SwiftProtobuf.Message>(_ path: String, magic: ImageMagic, as type: M.Type = M.self) throws -> M {
        let bytes = try bytes(path)
        guard let r = try frames(bytes, magic: magic, file: path).first else {
            throw ImageFormatError(.inconsistent, file: path, offset: bytes.count, "holds no entry")
        }
        return try message(bytes, r, as: M.self, file: path)
    }

    /// A pagemap image: its head (naming the pages file) and its entries.
    public static func pagemap(_ path: String) throws -> (head: PagemapHead, entries: [PagemapEntry]) {
        let bytes = try bytes(path)
        let frames = try frames(bytes, magic: .pagemap, file: path)
        guard let first = frames.first else {
            throw ImageFormatError(.inconsistent, file: path, offset: bytes.count, "has no pagemap head")
        }
        let head = try message(bytes, first, as: PagemapHead.self, file: path)
        let entries = try frames.dropFirst().map { try message(bytes, $0, as: PagemapEntry.self, file: path) }
        return (head, entries)
    }
}
