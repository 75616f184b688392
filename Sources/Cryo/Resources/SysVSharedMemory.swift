import Foundation
import CLinux
import Glibc
import SystemPackage

/// System V shared memory segments (`shmget`/`shmat`) attached by the tree, in Cryo's host IPC
/// namespace: `ipcns-shm-1.img` holds each segment's `IpcShmEntry` (key, id, owner, mode, size)
/// followed by its contents inline (padded to 4 bytes, the layout `crit` reads); a VMA that
/// attaches one has `VMA_AREA_SYSVIPC` in its status and the segment id as its `shmid`.
///
/// CRIU dumps SysV IPC only with the IPC namespace. Cryo works in the host one: a segment that
/// still exists at restore (a segment outlives its processes unless removed) is attached again
/// — refilled from the image when nobody has it attached, left as it is when others use it;
/// one that is gone is made again with its id (`/proc/sys/kernel/shm_next_id`), key, owner and
/// mode. A segment removed (IPC_RMID) while attached is made and removed again once attached.
/// The creator's uid/gid become root's; only whole-segment attaches are supported.
enum SysVSharedMemoryResource {
    /// VMA status bit: the mapping attaches a SysV segment (CRIU's VMA_AREA_SYSVIPC).
    static let areaSysVIPC: UInt32 = 1 << 10
    /// The image: one IPC namespace, the host's.
    static let imageName = "ipcns-shm-1.img"
    static let shmDest: UInt32 = 0o1000  // SHM_DEST in shm_perm.mode: removed, still attached

    /// Whether a mapping attaches a SysV segment (`/SYSV<key> (deleted)`; its inode is the id).
    static func isSysV(_ m: Mapping) -> Bool { m.shared && m.name.hasPrefix("/SYSV") && m.name.hasSuffix(" (deleted)") }

    /// The kernel's view of segment `id`, or nil when there is none.
    static func status(_ id: Int32) -> shmid_ds? {
        var ds = shmid_ds()
        return shmctl(id, IPC_STAT, &ds) == 0 ? ds : nil
    }

    /// Refuses what Cryo cannot restore: an attach of part of a segment.
    static func checkAttach(_ m: Mapping, pid: pid_t) throws {
        guard let ds = status(Int32(truncatingIfNeeded: m.inode)) else {
            throw CryoError("process \(pid) attaches SysV shared memory segment \(m.inode), which IPC_STAT cannot see", errno: Errno(rawValue: errnoValue))
        }
        let size = (UInt64(ds.shm_segsz) + 4095) & ~4095
        guard m.offset == 0 && m.length == size else {
            throw CryoError("process \(pid) maps part of SysV shared memory segment \(m.inode) at 0x\(String(m.start, radix: 16)); Cryo restores whole-segment attaches only")
        }
    }

    /// Writes the image for the segments `users` attach: segment id -> a (pid, VMA) that does.
    static func dump(_ users: [UInt64: (pid: pid_t, vma: VmaEntry)], images: ImageDirectory) throws {
        guard !users.isEmpty else { return }
        var image = ImageCodec.header(for: .ipcnsShm)
        for (id, user) in users.sorted(by: { $0.key < $1.key }) {
            guard let ds = status(Int32(truncatingIfNeeded: id)) else {
                throw CryoError("SysV shared memory segment \(id) vanished during the dump", errno: Errno(rawValue: errnoValue))
            }
            var desc = IpcDescEntry()
            desc.key = UInt32(bitPattern: ds.shm_perm.__key)
            desc.uid = ds.shm_perm.uid; desc.gid = ds.shm_perm.gid
            desc.cuid = ds.shm_perm.cuid; desc.cgid = ds.shm_perm.cgid
            desc.mode = UInt32(ds.shm_perm.mode)
            desc.id = UInt32(id)
            var e = IpcShmEntry()
            e.desc = desc
            e.size = UInt64(ds.shm_segsz)
            // Read through the attach's mapping file: this leaves the segment's atime and lpid alone.
            let path = "/proc/\(user.pid)/map_files/\(String(user.vma.start, radix: 16))-\(String(user.vma.end, radix: 16))"
            var data: [UInt8]
            do { data = try readWholeFile(path) } catch let error as Errno { throw CryoError("cannot read SysV shared memory segment \(id)", errno: error) }
            guard data.count >= Int(e.size) else { throw CryoError("SysV shared memory segment \(id): read \(data.count) of \(e.size) bytes") }
            data.removeLast(data.count - Int(e.size))
            try ImageCodec.appendEntry(e, to: &image)
            image += data + [UInt8](repeating: 0, count: (4 - data.count % 4) % 4)
        }
        try images.writeFile(imageName, image)
    }
}

/// The SysV segments of one restore: found or made again, then attached.
final class SysVSegmentTable {
    private let lock = NSLock()
    private var segments: [UInt32: (entry: IpcShmEntry, data: ArraySlice<UInt8>)] = [:]
    private var ready = Set<UInt32>()
    /// Segments this restore made: removed again if the restore fails.
    private var made: [Int32] = []

    init(_ images: ImageDirectory) throws {
        guard images.contains(SysVSharedMemoryResource.imageName) else { return }
        let name = SysVSharedMemoryResource.imageName
        for (entry, data) in try images.readWithPayloads(name, magic: .ipcnsShm, as: IpcShmEntry.self,
                                                         payloadLength: { (Int($0.size) + 3) & ~3 }) {
            segments[entry.desc.id] = (entry, data.prefix(Int(entry.size)))
        }
    }

    /// Attaches segment `v.shmid` at its address in `process`.
    func attach(_ v: VmaEntry, into process: RemoteProcess, log: Log?) throws {
        let id = UInt32(truncatingIfNeeded: v.shmid)
        // Processes are built on several threads: one makes the segment, the others wait.
        try lock.withLock { try prepare(id, log: log) }
        // SHM_RDONLY (010000) without PROT_WRITE, SHM_EXEC (0100000) with PROT_EXEC.
        var flags: UInt64 = v.prot & UInt32(PROT_WRITE) == 0 ? 0o10000 : 0
        if v.prot & UInt32(PROT_EXEC) != 0 { flags |= 0o100000 }
        let address = try process.checkedSyscall("shmat of SysV shared memory segment \(id)", Syscall.shmat, [UInt64(id), v.start, flags])
        guard UInt64(address) == v.start else { throw CryoError("SysV shared memory segment \(id) attached at 0x\(String(address, radix: 16)), not 0x\(String(v.start, radix: 16))") }
    }

    /// Removes again the segments that were removed while attached (once all attaches exist).
    func removeDestroyed() throws {
        for (id, s) in segments where ready.contains(id) && s.entry.desc.mode & SysVSharedMemoryResource.shmDest != 0 {
            guard shmctl(Int32(bitPattern: id), IPC_RMID, nil) == 0 else {
                throw CryoError("cannot remove SysV shared memory segment \(id) again", errno: Errno(rawValue: errnoValue))
            }
        }
        made.removeAll()
    }

    /// After a failed restore: the segments it made go.
    func abandon() {
        for id in made { _ = shmctl(id, IPC_RMID, nil) }
        made.removeAll()
    }

    private func prepare(_ id: UInt32, log: Log?) throws {
        if ready.contains(id) { return }
        guard let s = segments[id] else { throw CryoError("cannot restore: \(SysVSharedMemoryResource.imageName) has no SysV shared memory segment \(id)") }
        let d = s.entry.desc
        let what = "SysV shared memory segment \(id) (key 0x\(String(d.key, radix: 16)))"
        if let ds = SysVSharedMemoryResource.status(Int32(bitPattern: id)) {
            guard UInt32(bitPattern: ds.shm_perm.__key) == d.key, UInt64(ds.shm_segsz) == s.entry.size else {
                throw CryoError("cannot restore \(what): id \(id) now belongs to a segment with key 0x\(String(UInt32(bitPattern: ds.shm_perm.__key), radix: 16)) of \(ds.shm_segsz) bytes")
            }
            if ds.shm_nattch == 0 {
                try fill(Int32(bitPattern: id), s.data, what: what)
            } else {
                log?.warn("\(what) is attached by \(ds.shm_nattch) other process(es): attached as it is now, not as dumped")
            }
        } else {
            if d.key != 0 {
                let other = shmget(key_t(bitPattern: d.key), 0, 0)
                if other >= 0 { throw CryoError("cannot restore \(what): key 0x\(String(d.key, radix: 16)) now belongs to segment \(other)") }
            }
            guard let next = fopen("/proc/sys/kernel/shm_next_id", "w") else {
                throw CryoError("cannot restore \(what): cannot open /proc/sys/kernel/shm_next_id", errno: Errno(rawValue: errnoValue))
            }
            fputs("\(id)\n", next)
            guard fclose(next) == 0 else { throw CryoError("cannot restore \(what): cannot write /proc/sys/kernel/shm_next_id", errno: Errno(rawValue: errnoValue)) }
            let made = shmget(key_t(bitPattern: d.key), Int(s.entry.size), IPC_CREAT | IPC_EXCL | Int32(d.mode & 0o777))
            guard made >= 0 else { throw CryoError("cannot make \(what) again", errno: Errno(rawValue: errnoValue)) }
            self.made.append(made)
            guard made == Int32(bitPattern: id) else { throw CryoError("cannot restore \(what): the kernel gave it id \(made)") }
            var ds = SysVSharedMemoryResource.status(made)!
            ds.shm_perm.uid = d.uid; ds.shm_perm.gid = d.gid
            ds.shm_perm.mode = d.mode & 0o777
            guard shmctl(made, IPC_SET, &ds) == 0 else { throw CryoError("cannot give \(what) its owner and mode", errno: Errno(rawValue: errnoValue)) }
            try fill(made, s.data, what: what)
        }
        ready.insert(id)
    }

    /// Copies the dumped contents in through an attach of Cryo's own.
    private func fill(_ id: Int32, _ data: ArraySlice<UInt8>, what: String) throws {
        guard let base = shmat(id, nil, 0), base != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw CryoError("cannot attach \(what) to fill it", errno: Errno(rawValue: errnoValue))
        }
        defer { shmdt(base) }
        data.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }
}
