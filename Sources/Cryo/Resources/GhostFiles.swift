import Foundation
import Glibc
import SystemPackage

/// Files deleted while still open or mapped ("ghost" files, CRIU's word): their contents go
/// into `ghost-file-N.img` (a `GhostFileEntry`, then the raw bytes), and `remap-fpath.img`
/// says which file entry each ghost stands for. Up to `--ghost-limit` bytes each (1 MiB by
/// default, as in CRIU).
///
/// Restore recreates each ghost (at its old path when that is free, so `/proc/PID/fd` reads
/// as before once it is unlinked), lets the processes open or map it, and deletes it again.
enum GhostFileResource {
    /// Default `--ghost-limit`.
    public static let defaultLimit = 1 << 20

    /// Reads a deleted file through `openPath` (`/proc/PID/fd/N` or `/proc/PID/map_files/A-B`).
    static func capture(openPath: String, shownAs target: String, st: stat, limit: Int) throws -> (GhostFileEntry, [UInt8]) {
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw CryoError("\(target) was deleted and is not a regular file; Cryo cannot dump it")
        }
        guard Int(st.st_size) <= limit else {
            throw CryoError("\(target) was deleted while open and holds \(st.st_size) bytes, more than the ghost limit of \(limit); raise it with --ghost-limit")
        }
        let data: [UInt8]
        do { data = try readWholeFile(openPath) } catch let e as Errno { throw CryoError("cannot read deleted file \(target)", errno: e) }
        var g = GhostFileEntry()
        g.uid = st.st_uid
        g.gid = st.st_gid
        g.mode = st.st_mode
        g.dev = UInt32(truncatingIfNeeded: st.st_dev)
        g.ino = UInt64(st.st_ino)
        g.size = UInt64(data.count)
        return (g, data)
    }

    /// The ghost's original path: the link text without " (deleted)".
    static func originalPath(_ target: String) -> String {
        target.hasSuffix(" (deleted)") ? String(target.dropLast(10)) : target
    }

    static func write(_ ghosts: [(origID: UInt32, entry: GhostFileEntry, data: [UInt8])], to images: ImageDirectory) throws {
        guard !ghosts.isEmpty else { return }
        var remaps: [RemapFilePathEntry] = []
        for (index, g) in ghosts.enumerated() {
            let ghostID = UInt32(index + 1)
            var image = ImageCodec.header(for: .ghostFile)
            try ImageCodec.appendEntry(g.entry, to: &image)
            image += g.data
            try images.writeFile("ghost-file-\(ghostID).img", image)
            var r = RemapFilePathEntry()
            r.origID = g.origID
            r.remapID = ghostID
            r.remapType = .ghost
            remaps.append(r)
        }
        try images.write("remap-fpath.img", magic: .remapFpath, remaps)
    }
}

/// The ghosts of one restore, recreated on disk until every process has opened them.
final class GhostFiles {
    private var created: [String] = []

    /// Recreates every ghost of the dump and points its file entry at it.
    init(_ images: ImageDirectory, files: inout [UInt32: FileEntry]) throws {
        guard images.contains("remap-fpath.img") else { return }
        let remaps: [RemapFilePathEntry] = try images.read("remap-fpath.img", magic: .remapFpath)
        // One deleted inode seen through several entries (an fd and a mapping) is one file again.
        var byInode: [String: String] = [:]
        for r in remaps where r.remapType == .ghost {
            guard var file = files[r.origID], file.hasReg else {
                throw CryoError("\(images.url("remap-fpath.img")): no regular file with id \(r.origID)")
            }
            let name = "ghost-file-\(r.remapID).img"
            let bytes = try images.bytes(name)
            let (magic, start) = try ImageCodec.readHeader(bytes, file: images.url(name))
            guard magic == .ghostFile, start + 4 <= bytes.count else { throw CryoError("image \(images.url(name)) is not a ghost file image") }
            let size = Int(readLE32(bytes, start))
            guard start + 4 + size <= bytes.count else { throw CryoError("image \(images.url(name)) is truncated at offset \(start)") }
            let entry: GhostFileEntry
            do { entry = try GhostFileEntry(serializedBytes: Array(bytes[(start + 4)..<(start + 4 + size)])) }
            catch { throw CryoError("image \(images.url(name)) is corrupt at offset \(start): \(error)") }
            let data = bytes[(start + 4 + size)...]
            guard !entry.hasSize || entry.size == UInt64(data.count) else {
                throw CryoError("image \(images.url(name)) is truncated: \(data.count) of \(entry.size) bytes")
            }
            let original = file.reg.name
            let inode = "\(entry.dev):\(entry.ino)"
            if entry.hasIno, let path = byInode[inode] {
                file.reg.name = path
                file.reg.clearSize()
                files[r.origID] = file
                continue
            }
            var path = original
            if access(path, F_OK) == 0 { path = "\(original).cryo-ghost-\(r.remapID)" }
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(entry.mode & 0o7777))
            guard fd >= 0 else { throw CryoError("cannot recreate deleted file \(original) as \(path)", errno: Errno(rawValue: errnoValue)) }
            created.append(path)
            if entry.hasIno { byInode[inode] = path }
            defer { close(fd) }
            var done = 0
            while done < data.count {
                let n = data.withUnsafeBytes { write(fd, $0.baseAddress! + done, data.count - done) }
                guard n > 0 else { throw CryoError("cannot write deleted file \(path)", errno: Errno(rawValue: errnoValue)) }
                done += n
            }
            _ = fchown(fd, entry.uid, entry.gid)
            _ = fchmod(fd, mode_t(entry.mode & 0o7777))
            file.reg.name = path
            file.reg.clearSize()
            files[r.origID] = file
        }
    }

    /// Deletes the recreated files again (the processes keep them open).
    func removeAll() {
        for path in created { unlink(path) }
        created.removeAll()
    }

    deinit { removeAll() }
}
