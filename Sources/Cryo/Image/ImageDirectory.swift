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

    /// The raw bytes of an image file; a missing file is an error naming it.
    public func bytes(_ name: String) throws -> [UInt8] {
        do { return try readWholeFile(url(name)) } catch let e as Errno {
            throw CryoError("cannot read image \(url(name))", errno: e)
        } catch { throw CryoError("cannot read image \(url(name)): \(error)") }
    }

    /// Reads an image whose entries are each followed by raw bytes (pipes-data, sk-queues),
    /// `payloadLength` telling how many.
    public func readWithPayloads<M: SwiftProtobuf.Message>(_ name: String, magic: ImageMagic, as type: M.Type = M.self,
                                                          payloadLength: (M) -> Int) throws -> [(entry: M, payload: [UInt8])] {
        let file = url(name)
        let bytes = try self.bytes(name)
        let (found, start) = try ImageCodec.readHeader(bytes, file: file)
        guard found == magic else { throw CryoError("image \(file) is not a \(magic.name ?? "?") image") }
        var result: [(M, [UInt8])] = []
        var offset = start
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else { throw CryoError("image \(file) is truncated at offset \(offset)") }
            let frame = (offset + 4)..<(offset + 4 + Int(readLE32(bytes, offset)))
            guard frame.upperBound <= bytes.count else { throw CryoError("image \(file) is truncated at offset \(offset)") }
            let entry: M
            do { entry = try M(serializedBytes: Array(bytes[frame])) }
            catch { throw CryoError("image \(file) is corrupt at offset \(offset): \(error)") }
            let end = frame.upperBound + payloadLength(entry)
            guard end <= bytes.count else {
                throw CryoError("image \(file) is truncated at offset \(frame.upperBound): \(payloadLength(entry)) bytes of data expected")
            }
            result.append((entry, Array(bytes[frame.upperBound..<end])))
            offset = end
        }
        return result
    }

    /// Reads a pagemap image: its head, then its entries.
    public func readPagemap(_ name: String) throws -> (head: PagemapHead, entries: [PagemapEntry]) {
        let file = url(name)
        let bytes = try self.bytes(name)
        let (magic, start) = try ImageCodec.readHeader(bytes, file: file)
        guard magic == .pagemap else { throw CryoError("image \(file) is not a pagemap image") }
        let frames = try ImageCodec.frames(bytes, from: start, file: file)
        guard let first = frames.first else { throw CryoError("image \(file) is empty") }
        do {
            let head = try PagemapHead(serializedBytes: Array(bytes[first]))
            let entries = try frames.dropFirst().map { try PagemapEntry(serializedBytes: Array(bytes[$0])) }
            return (head, entries)
        } catch { throw CryoError("image \(file) is corrupt: \(error)") }
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
