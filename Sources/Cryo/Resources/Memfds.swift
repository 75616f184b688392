import Foundation
import CLinux
import Glibc
import SystemPackage

/// memfd files (`memfd_create`), open or mapped, as CRIU writes them: a `files.img` entry of
/// type MEMFD per open file description (flags, offset, and which memfd), one `MemfdInodeEntry`
/// per memfd in `memfd.img` (name, owner, size, seals), and the contents of each as a shmem
/// object (`pagemap-shmem-INODE.img` + a pages file, holes left out). A VMA that maps a memfd
/// has `VMA_AREA_MEMFD` in its status and the id of a MEMFD file entry as its `shmid`.
///
/// Restore creates each memfd once, in Cryo, and fills it; processes get descriptions reopened
/// from it (their own flags and offset), and map it through Cryo's `/proc/PID/fd/N`, so every
/// fd and mapping of the tree shares the one object, as before. Seals go on last, once every
/// writable mapping exists (`F_SEAL_WRITE`/`F_SEAL_FUTURE_WRITE` would forbid them).
enum MemfdResource {
    /// VMA status bit: the mapping is of a memfd (CRIU's VMA_AREA_MEMFD).
    static let areaMemfd: UInt32 = 1 << 14
    static let sealSeal: UInt32 = 1  // F_SEAL_SEAL
    static let addSeals: Int32 = 1033  // F_ADD_SEALS
    static let getSeals: Int32 = 1034  // F_GET_SEALS

    /// Whether `target` (an fd's or mapping's link) names a memfd: `/memfd:NAME (deleted)`.
    static func isMemfd(_ target: String) -> Bool { target.hasPrefix("/memfd:") && target.hasSuffix(" (deleted)") }

    /// The name given to memfd_create.
    static func name(_ target: String) -> String { String(target.dropFirst(7).dropLast(10)) }

    /// Reads memfd `target` through `openPath` (`/proc/PID/fd/N` or `/proc/PID/map_files/A-B`):
    /// its inode entry (`inodeID`, shmid = inode number) and the offsets of its non-hole pages.
    static func capture(openPath: String, target: String, inodeID: UInt32) throws -> (MemfdInodeEntry, FileDescriptor) {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(FilePath(openPath), .readOnly, options: [.closeOnExec]) }
        catch { throw CryoError("cannot open memfd \(target) through \(openPath)", errno: error as? Errno ?? .ioError) }
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0 else {
            try? fd.close()
            throw CryoError("cannot stat memfd \(target)", errno: Errno(rawValue: errnoValue))
        }
        let seals = fcntl(fd.rawValue, getSeals)
        var e = MemfdInodeEntry()
        e.name = name(target)
        e.uid = st.st_uid
        e.gid = st.st_gid
        e.size = UInt64(st.st_size)
        e.shmid = UInt32(truncatingIfNeeded: st.st_ino)
        e.seals = seals < 0 ? sealSeal : UInt32(seals)
        e.inodeID = UInt64(inodeID)
        return (e, fd)
    }

    /// Writes `memfd.img` and each memfd's contents; page files are numbered from `firstPagesID`.
    static func dump(_ memfds: [(inodeID: UInt32, target: String, openPath: String)], firstPagesID: UInt32, images: ImageDirectory,
                     stats: inout DumpStatistics) throws {
        guard !memfds.isEmpty else { return }
        var entries: [MemfdInodeEntry] = []
        for (index, m) in memfds.enumerated() {
            let (entry, fd) = try capture(openPath: m.openPath, target: m.target, inodeID: m.inodeID)
            defer { try? fd.close() }
            let pages = SharedMemoryResource.dataPages(fd, size: entry.size)
            try SharedMemoryResource.writeObject(shmid: UInt64(entry.shmid), pagesID: firstPagesID + UInt32(index), offsets: pages,
                                                 images: images, page: SharedMemoryResource.pageReader(fd, what: "memfd \(entry.name)"))
            stats.pagesWritten += UInt64(pages.count)
            entries.append(entry)
        }
        try images.write("memfd.img", magic: .memfdInode, entries)
    }
}

/// The memfds of one restore, made in Cryo on first use.
final class MemfdTable {
    /// Processes are built on several threads at once: each memfd is made once.
    private let lock = NSLock()
    private let images: ImageDirectory
    private var inodes: [UInt64: MemfdInodeEntry] = [:]
    /// inode id -> Cryo's fd on the memfd.
    private var created: [UInt64: Int32] = [:]
    /// file id -> Cryo's fd for that description.
    private var descriptions: [UInt32: Int32] = [:]

    init(_ images: ImageDirectory) throws {
        self.images = images
        if images.contains("memfd.img") {
            for e in try images.read("memfd.img", magic: .memfdInode, as: MemfdInodeEntry.self) { inodes[e.inodeID] = e }
        }
    }

    deinit {
        for fd in created.values { close(fd) }
        for fd in descriptions.values { close(fd) }
    }

    /// Cryo's fd for the description `file` (a MEMFD entry): its flags, at its offset.
    func descriptor(for file: FileEntry) throws -> Int32 {
        lock.lock()
        defer { lock.unlock() }
        if let fd = descriptions[file.id] { return fd }
        let m = file.memfd
        let memfd = try self.memfd(m.inodeID)
        let flags = Int32(bitPattern: m.flags) & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY)
        let fd = open("/proc/self/fd/\(memfd)", flags | O_CLOEXEC)
        guard fd >= 0 else { throw CryoError("cannot reopen memfd id \(file.id)", errno: Errno(rawValue: errnoValue)) }
        descriptions[file.id] = fd
        if m.pos != 0 && lseek(fd, Int(m.pos), SEEK_SET) < 0 {
            throw CryoError("cannot set the offset of memfd id \(file.id) to \(m.pos)", errno: Errno(rawValue: errnoValue))
        }
        return fd
    }

    /// A path the restored processes can open to map the memfd of entry `file`.
    func pathToMap(_ file: FileEntry) throws -> String {
        "/proc/\(getpid())/fd/\(try lock.withLock { try memfd(file.memfd.inodeID) })"
    }

    /// Adds every memfd's seals (once all mappings are made).
    func applySeals() throws {
        lock.lock()
        defer { lock.unlock() }
        for (id, fd) in created.sorted(by: { $0.key < $1.key }) {
            let seals = inodes[id]!.seals
            guard seals != MemfdResource.sealSeal, seals != 0 else { continue }
            guard fcntl(fd, MemfdResource.addSeals, Int32(bitPattern: seals)) == 0 else {
                throw CryoError("cannot seal memfd \(inodes[id]!.name) with \(seals)", errno: Errno(rawValue: errnoValue))
            }
        }
    }

    private func memfd(_ inodeID: UInt32) throws -> Int32 {
        let id = UInt64(inodeID)
        if let fd = created[id] { return fd }
        guard let e = inodes[id] else { throw CryoError("cannot restore: memfd.img has no memfd \(inodeID)") }
        // MFD_CLOEXEC (1) | MFD_ALLOW_SEALING (2) unless the memfd could never be sealed.
        let flags = e.seals == MemfdResource.sealSeal ? 1 : 3
        let fd = Array(e.name.utf8CString).withUnsafeBufferPointer { Int32(cl_raw_syscall6(Syscall.memfd_create, Int(bitPattern: $0.baseAddress), flags, 0, 0, 0, 0)) }
        guard fd >= 0 else { throw CryoError("cannot create memfd \(e.name)", errno: Errno(rawValue: -fd)) }
        created[id] = fd
        guard ftruncate(fd, Int(e.size)) == 0 else { throw CryoError("cannot size memfd \(e.name) to \(e.size) bytes", errno: Errno(rawValue: errnoValue)) }
        for (offset, data) in try SharedMemoryResource.load(images, shmid: UInt64(e.shmid)) {
            // The last page may go past the end of the file: that part is not written.
            let length = min(UInt64(data.count), e.size > offset ? e.size - offset : 0)
            let n = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, Int(length), Int(offset)) }
            guard n == Int(length) else { throw CryoError("cannot fill memfd \(e.name)", errno: Errno(rawValue: errnoValue)) }
        }
        guard fchown(fd, e.uid, e.gid) == 0 else { throw CryoError("cannot give memfd \(e.name) its owner \(e.uid):\(e.gid)", errno: Errno(rawValue: errnoValue)) }
        return fd
    }
}
