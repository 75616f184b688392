import Glibc
import SwiftProtobuf
import SystemPackage

/// A directory of CRIU-format image files (`-D DIR`).
///
/// Files are written whole, through a temporary name and a rename, so a reader never sees a
/// half-written image; `inventory.img` is written last by the dumper, so a directory without
/// it is an incomplete dump.
public struct ImageDirectory: Sendable {
    /// The directory's path.
    public let path: String

    /// Opens (and with `create`, makes) an images directory, checking that it can be used.
    public init(path: String, create: Bool = false, writable: Bool = false) throws {
        self.path = path
        var st = stat()
        if stat(path, &st) != 0 {
            if create && errnoValue == ENOENT && mkdir(path, 0o755) == 0 {
                _ = stat(path, &st)
            } else {
                throw CryoError("images directory \(path)", errno: Errno(rawValue: errnoValue))
            }
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw CryoError("images directory \(path) is not a directory") }
        if writable && access(path, W_OK) != 0 {
            throw CryoError("images directory \(path) is not writable", errno: Errno(rawValue: errnoValue))
        }
    }

    /// The full path of an image file.
    public func url(_ name: String) -> String { "\(path)/\(name)" }

    /// Whether an image file exists.
    public func contains(_ name: String) -> Bool { access(url(name), F_OK) == 0 }

    /// Writes an image file: CRIU's leading magics, then each entry as `u32 size` + payload.
    public func write<M: SwiftProtobuf.Message>(_ name: String, magic: ImageMagic, _ entries: [M]) throws {
        var data = ImageCodec.header(for: magic)
        for entry in entries {
            do { try ImageCodec.appendEntry(entry, to: &data) } catch {
                throw CryoError("cannot encode an entry of \(name): \(error)")
            }
        }
        try writeFile(name, data)
    }

    /// Writes a single-entry image file.
    public func write<M: SwiftProtobuf.Message>(_ name: String, magic: ImageMagic, _ entry: M) throws {
        try write(name, magic: magic, [entry])
    }

    /// Reads every entry of an image file, checking its magic.
    public func read<M: SwiftProtobuf.Message>(_ name: String, magic: ImageMagic, as type: M.Type = M.self) throws -> [M] {
        let bytes: [UInt8]
        do { bytes = try readWholeFile(url(name)) } catch let e as Errno {
            throw CryoError("cannot read image \(url(name))", errno: e)
        }
        return try ImageCodec.decode(bytes, magic: magic, as: M.self, file: url(name))
    }

    /// Reads an image file that must hold exactly one entry.
    public func readOne<M: SwiftProtobuf.Message>(_ name: String, magic: ImageMagic, as type: M.Type = M.self) throws -> M {
        let entries: [M] = try read(name, magic: magic)
        guard entries.count == 1 else {
            throw CryoError("image \(url(name)) holds \(entries.count) entries, expected one")
        }
        return entries[0]
    }

    /// Writes raw bytes to `name` through a temporary file and a rename.
    public func writeFile(_ name: String, _ bytes: [UInt8]) throws {
        let temporary = url(".\(name).partial")
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(temporary), .writeOnly, options: [.create, .truncate, .closeOnExec],
                                         permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch { throw CryoError("cannot create image \(url(name))", errno: error as! Errno) }
        do {
            try fd.closeAfter { _ = try fd.writeAll(bytes) }
        } catch {
            unlink(temporary)
            throw CryoError("cannot write image \(url(name)) (\(bytes.count) bytes)", errno: error as? Errno ?? .ioError)
        }
        if rename(temporary, url(name)) != 0 {
            let e = Errno(rawValue: errnoValue)
            unlink(temporary)
            throw CryoError("cannot rename image into place: \(url(name))", errno: e)
        }
    }
}

/// CRIU's image framing, shared by the directory reader and the `show`/`decode` tools.
///
/// An image is: u32 `IMG_COMMON` (or `IMG_SERVICE` for stats), u32 type magic, then entries
/// framed as little-endian u32 size + protobuf payload. `inventory.img` has no leading
/// common magic.
public enum ImageCodec {
    /// The leading magic words for an image of type `magic`.
    public static func header(for magic: ImageMagic) -> [UInt8] {
        var words: [UInt32] = []
        if magic != .inventory {
            words.append(magic == .stats || magic == .irmapCache ? ImageMagic.imgService.rawValue : ImageMagic.imgCommon.rawValue)
        }
        words.append(magic.rawValue)
        return words.flatMap { le32($0) }
    }

    /// Appends one `u32 size` + payload frame.
    public static func appendEntry<M: SwiftProtobuf.Message>(_ entry: M, to data: inout [UInt8]) throws {
        let payload: [UInt8] = try entry.serializedBytes()
        data += le32(UInt32(payload.count))
        data += payload
    }

    /// Reads the leading magics; returns the type magic and the offset of the first entry.
    public static func readHeader(_ bytes: [UInt8], file: String) throws -> (ImageMagic, Int) {
        guard bytes.count >= 4 else { throw CryoError("image \(file) is truncated at offset 0: no magic") }
        var magic = readLE32(bytes, 0)
        var offset = 4
        if magic == ImageMagic.imgCommon.rawValue || magic == ImageMagic.imgService.rawValue {
            guard bytes.count >= 8 else { throw CryoError("image \(file) is truncated at offset 4: no type magic") }
            magic = readLE32(bytes, 4)
            offset = 8
        }
        return (ImageMagic(rawValue: magic), offset)
    }

    /// Splits the entries of an image into their payload ranges, checking every frame.
    public static func frames(_ bytes: [UInt8], from start: Int, file: String) throws -> [Range<Int>] {
        var result: [Range<Int>] = []
        var offset = start
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else {
                throw CryoError("image \(file) is truncated at offset \(offset): incomplete entry size")
            }
            let size = Int(readLE32(bytes, offset))
            guard size <= bytes.count - offset - 4 else {
                throw CryoError("image \(file) is truncated at offset \(offset): entry of \(size) bytes, only \(bytes.count - offset - 4) left")
            }
            result.append((offset + 4)..<(offset + 4 + size))
            offset += 4 + size
        }
        return result
    }

    /// Decodes every entry of an image of type `magic`.
    public static func decode<M: SwiftProtobuf.Message>(_ bytes: [UInt8], magic: ImageMagic, as: M.Type, file: String) throws -> [M] {
        let (found, start) = try readHeader(bytes, file: file)
        guard found == magic else {
            throw CryoError("image \(file) has magic 0x\(String(found.rawValue, radix: 16)) (\(found.name ?? "unknown")), expected \(magic.name ?? "?")")
        }
        return try frames(bytes, from: start, file: file).map { range in
            do { return try M(serializedBytes: Array(bytes[range])) } catch {
                throw CryoError("image \(file) is corrupt: entry at offset \(range.lowerBound - 4) does not decode as \(M.protoMessageName) (\(error))")
            }
        }
    }
}

func le32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 24)] }
func readLE32(_ b: [UInt8], _ o: Int) -> UInt32 {
    UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
}
