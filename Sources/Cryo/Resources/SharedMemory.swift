import CLinux
import Glibc
import SystemPackage

/// Shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`, seen as `/dev/zero (deleted)`), shared
/// by the processes that map it: one shmem object per inode (the VMA's `shmid`), its pages in
/// `pagemap-shmem-INODE.img` (entries address the object by offset) and a pages file.
///
/// Restore creates each object once, in the first process that maps it (its *owner*), as a
/// spare mapping where the kernel likes; every VMA of every process, the owner's included,
/// then maps it through `/proc/OWNER/map_files/`, so they all share one object, as before.
/// The spare mapping is removed when the tree is complete.
enum SharedMemoryResource {
    /// Whether a mapping is shared anonymous memory.
    static func isSharedAnonymous(_ m: Mapping) -> Bool {
        m.shared && m.device.major == 0 && m.device.minor == 1 && m.name.hasPrefix("/dev/zero")
    }

    /// The pagemap image of object `shmid`.
    static func pagemapName(_ shmid: UInt64) -> String { "pagemap-shmem-\(shmid).img" }

    /// Saves the pages of every shared anonymous object the tree maps. `maps` lists, per object,
    /// the (process, VMA) pairs that map it; pages are read from a process that has them.
    /// Returns the next free pages file id.
    @discardableResult
    static func dump(_ maps: [UInt64: [(RemoteProcess, VmaEntry)]], firstPagesID: UInt32, images: ImageDirectory,
                     stats: inout DumpStatistics) throws -> UInt32 {
        var pagesID = firstPagesID
        for (shmid, users) in maps.sorted(by: { $0.key < $1.key }) {
            // Object page offset -> where to read it.
            var present: [UInt64: (RemoteProcess, UInt64)] = [:]
            for (process, vma) in users {
                let pagemap: FileDescriptor
                do { pagemap = try FileDescriptor.open(FilePath("/proc/\(process.pid)/pagemap"), .readOnly, options: [.closeOnExec]) }
                catch { throw CryoError("cannot open /proc/\(process.pid)/pagemap", errno: error as? Errno ?? .ioError) }
                defer { try? pagemap.close() }
                for range in try MemoryResource.touchedRanges(pagemap: pagemap, start: vma.start, end: vma.end, includeShared: true) {
                    var a = range.lowerBound
                    while a < range.upperBound {
                        let offset = vma.pgoff + (a - vma.start)
                        if present[offset] == nil { present[offset] = (process, a) }
                        a += 4096
                    }
                }
            }
            let offsets = present.keys.sorted()
            try writeObject(shmid: shmid, pagesID: pagesID, offsets: offsets, images: images) { offset in
                let (process, address) = present[offset]!
                return try process.memory.read(address, count: 4096)
            }
            stats.pagesWritten += UInt64(present.count)
            pagesID += 1
        }
        return pagesID
    }

    /// Writes one object's pagemap (`pagemap-shmem-SHMID.img`) and pages file (`pages-ID.img`):
    /// the pages at `offsets` (sorted), each read by `page`.
    static func writeObject(shmid: UInt64, pagesID: UInt32, offsets: [UInt64], images: ImageDirectory,
                            page: (UInt64) throws -> [UInt8]) throws {
        var head = PagemapHead()
        head.pagesID = pagesID
        var pagemapImage = ImageCodec.header(for: .pagemap)
        try ImageCodec.appendEntry(head, to: &pagemapImage)
        var data: [UInt8] = []
        data.reserveCapacity(offsets.count * 4096)
        var run: PagemapEntry?
        for offset in offsets {
            data += try page(offset)
            if var r = run, r.vaddr + UInt64(r.nrPages) * 4096 == offset {
                r.nrPages += 1
                run = r
            } else {
                if let r = run { try ImageCodec.appendEntry(r, to: &pagemapImage) }
                var e = PagemapEntry()
                e.vaddr = offset
                e.nrPages = 1
                e.flags = MemoryResource.pagePresent
                run = e
            }
        }
        if let r = run { try ImageCodec.appendEntry(r, to: &pagemapImage) }
        try images.writeFile("pages-\(pagesID).img", data)
        try images.writeFile(pagemapName(shmid), pagemapImage)
    }

    /// One object's saved pages: (offset in the object, bytes).
    static func load(_ images: ImageDirectory, shmid: UInt64) throws -> [(offset: UInt64, data: ArraySlice<UInt8>)] {
        let file = images.url(pagemapName(shmid))
        let (head, entries) = try images.readPagemap(pagemapName(shmid))
        let pagesPath = images.url("pages-\(head.pagesID).img")
        let pages = try images.bytes("pages-\(head.pagesID).img")
        var result: [(UInt64, ArraySlice<UInt8>)] = []
        var position = 0
        for e in entries {
            let length = Int(e.nrPages) * 4096
            guard position + length <= pages.count else {
                throw CryoError("cannot restore: \(pagesPath) is truncated (\(pages.count) bytes, \(file) describes more)")
            }
            result.append((e.vaddr, pages[position..<(position + length)]))
            position += length
        }
        return result
    }
}

/// The shared anonymous objects of one restore: where each lives in its owner.
final class SharedMemoryTable {
    private let images: ImageDirectory
    /// shmid -> (owner process, spare mapping start, length).
    private var objects: [UInt64: (owner: RemoteProcess, start: UInt64, length: UInt64)] = [:]
    /// The size of each object: the furthest any VMA maps it.
    private let sizes: [UInt64: UInt64]

    init(_ tree: TreeImage, images: ImageDirectory) {
        self.images = images
        var sizes: [UInt64: UInt64] = [:]
        for p in tree.processes {
            for v in p.mm.vmas where v.status & MemoryResource.anonShared != 0 {
                sizes[v.shmid] = max(sizes[v.shmid] ?? 0, v.pgoff + v.end - v.start)
            }
        }
        self.sizes = sizes
    }

    /// Maps VMA `v` (shared anonymous) into `process`, creating its object first if needed.
    func map(_ v: VmaEntry, into process: RemoteProcess) throws {
        if objects[v.shmid] == nil {
            let length = sizes[v.shmid]!
            let start = UInt64(try process.checkedSyscall("mmap of shared memory object \(v.shmid)", Syscall.mmap,
                                                          [0, length, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_SHARED | MAP_ANONYMOUS), UInt64.max, 0]))
            objects[v.shmid] = (process, start, length)
            for (offset, data) in try SharedMemoryResource.load(images, shmid: v.shmid) {
                guard offset + UInt64(data.count) <= length else {
                    throw CryoError("\(SharedMemoryResource.pagemapName(v.shmid)) has pages beyond the object's \(length) bytes")
                }
                try data.withUnsafeBytes { try process.memory.write(start + offset, $0) }
            }
        }
        let object = objects[v.shmid]!
        let path = "/proc/\(object.owner.pid)/map_files/\(String(object.start, radix: 16))-\(String(object.start + object.length, radix: 16))"
        let scratch = process.scratch!.address
        try process.memory.write(Array(path.utf8) + [0], at: scratch)
        let fd = UInt64(try process.checkedSyscall("open \(path)", Syscall.openat, [UInt64(bitPattern: -100), scratch, UInt64(O_RDWR), 0]))
        defer { _ = try? process.syscall(Syscall.close, fd) }
        let address = try process.checkedSyscall("mmap of shared memory at 0x\(String(v.start, radix: 16))", Syscall.mmap,
                                                 [v.start, v.end - v.start, UInt64(v.prot), UInt64(MAP_SHARED | MAP_FIXED) | UInt64(v.flags & UInt32(MAP_GROWSDOWN)), fd, v.pgoff])
        guard UInt64(address) == v.start else { throw CryoError("shared memory landed at 0x\(String(address, radix: 16)), not 0x\(String(v.start, radix: 16))") }
    }

    /// Removes the spare mappings from their owners (once every process has mapped its objects).
    func removeSpares() throws {
        for (shmid, o) in objects {
            try o.owner.checkedSyscall("munmap of the spare mapping of shared memory object \(shmid)", Syscall.munmap, [o.start, o.length])
        }
        objects.removeAll()
    }
}
