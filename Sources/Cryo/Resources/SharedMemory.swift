import Foundation
import CLinux
import Glibc
import SystemPackage

/// Shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`, seen as `/dev/zero (deleted)`), shared
/// by the processes that map it: one shmem object per inode (the VMA's `shmid`), its pages in
/// `pagemap-shmem-INODE.img` (entries address the object by offset) and a pages file.
///
/// Restore creates each object once, in the first process that maps it (its *owner*), as a
/// spare mapping where no process of the tree maps anything; every VMA of every process, the owner's included,
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
    /// the (process, VMA) pairs that map it. Each object is read as the file it is (through
    /// `/proc/PID/map_files/`), with its holes skipped: a page some process wrote and no process
    /// has in its page tables any more (it unmapped it, or exited) is still saved.
    /// Returns the next free pages file id.
    @discardableResult
    static func dump(_ maps: [UInt64: [(RemoteProcess, VmaEntry)]], firstPagesID: UInt32, images: ImageDirectory,
                     stats: inout DumpStatistics) throws -> UInt32 {
        var pagesID = firstPagesID
        for (shmid, users) in maps.sorted(by: { $0.key < $1.key }) {
            let (process, vma) = users[0]
            let path = "/proc/\(process.pid)/map_files/\(String(vma.start, radix: 16))-\(String(vma.end, radix: 16))"
            let object: FileDescriptor
            do { object = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec]) }
            catch { throw CryoError("cannot open shared memory object \(shmid) through \(path)", errno: error as? Errno ?? .ioError) }
            defer { try? object.close() }
            let size = users.map { $0.1.pgoff + $0.1.end - $0.1.start }.max()!
            let offsets = dataPages(object, size: size)
            try writeObject(shmid: shmid, pagesID: pagesID, offsets: offsets, images: images, page: pageReader(object, what: "shared memory object \(shmid)"))
            stats.pagesWritten += UInt64(offsets.count)
            pagesID += 1
        }
        return pagesID
    }

    /// The page offsets of a shmem file below `size` that hold data (SEEK_DATA/SEEK_HOLE).
    static func dataPages(_ fd: FileDescriptor, size: UInt64) -> [UInt64] {
        let seekData: Int32 = 3, seekHole: Int32 = 4  // SEEK_DATA, SEEK_HOLE
        var pages: [UInt64] = []
        var position = 0
        while UInt64(position) < size {
            let data = lseek(fd.rawValue, position, seekData)
            if data < 0 { break }
            var hole = lseek(fd.rawValue, data, seekHole)
            if hole < 0 || UInt64(hole) > size { hole = Int(size) }
            var page = UInt64(data) & ~4095
            while page < UInt64(hole) { pages.append(page); page += 4096 }
            position = Int(page)
        }
        return pages
    }

    /// Reads 4 KiB pages of `fd` by offset (zero past its end), for `writeObject`.
    static func pageReader(_ fd: FileDescriptor, what: String) -> (UInt64) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        return { offset in
            let n = buffer.withUnsafeMutableBytes { pread(fd.rawValue, $0.baseAddress, 4096, Int(offset)) }
            guard n >= 0 else { throw CryoError("cannot read \(what) at offset \(offset)", errno: Errno(rawValue: errnoValue)) }
            if n < 4096 { for i in n..<4096 { buffer[i] = 0 } }
            return buffer
        }
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
///
/// Processes are built on several threads at once: the table is locked while an object is
/// looked up or made, so that each is made once, by the first process that maps it.
final class SharedMemoryTable {
    private let lock = NSLock()
    private let images: ImageDirectory
    /// shmid -> (owner process, spare mapping start, length).
    private var objects: [UInt64: (owner: RemoteProcess, start: UInt64, length: UInt64)] = [:]
    /// The size of each object: the furthest any VMA maps it.
    private let sizes: [UInt64: UInt64]
    /// Address ranges a spare mapping must not use: every VMA of the tree, and the spares
    /// made so far.
    private var taken: [Range<UInt64>]
    /// System V segments, attached rather than mapped.
    let sysv: SysVSegmentTable

    init(_ tree: TreeImage, images: ImageDirectory) throws {
        self.images = images
        sysv = try SysVSegmentTable(images)
        var sizes: [UInt64: UInt64] = [:]
        for p in tree.processes {
            for v in p.mm.vmas where v.status & MemoryResource.anonShared != 0 {
                sizes[v.shmid] = max(sizes[v.shmid] ?? 0, v.pgoff + v.end - v.start)
            }
        }
        self.sizes = sizes
        taken = tree.processes.flatMap { $0.mm.vmas.map { $0.start..<$0.end } }
    }

    /// An address for a spare mapping of `length` bytes that no process of the tree uses. Were
    /// the kernel to choose, it could pick the hole where one of the owner's own mappings is
    /// about to be made with MAP_FIXED — which would then replace part of the spare.
    private func spareAddress(_ length: UInt64) throws -> UInt64 {
        let gib: UInt64 = 1 << 30, end: UInt64 = 0x7fff_0000_0000
        guard length <= end, let address = MemoryResource.freeAddress(length: length, avoiding: taken, from: 0x4000_0000_0000,
                                                                     step: (length + gib - 1) / gib * gib,
                                                                     startingBelow: end - length + 1) else {
            throw CryoError("no free address range of \(length) bytes for a shared memory object")
        }
        taken.append(address..<(address + length))
        return address
    }

    /// Maps VMA `v` (shared anonymous) into `process`, creating its object first if needed.
    func map(_ v: VmaEntry, into process: RemoteProcess) throws {
        lock.lock()
        defer { lock.unlock() }
        if objects[v.shmid] == nil {
            let length = sizes[v.shmid]!
            let hint = try spareAddress(length)
            let mapFixedNoReplace: Int32 = 0x100000
            let start = UInt64(try process.checkedSyscall("mmap of shared memory object \(v.shmid)", Syscall.mmap,
                                                          [hint, length, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_SHARED | MAP_ANONYMOUS | mapFixedNoReplace), UInt64.max, 0]))
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

    /// Removes the spare mappings `owner` holds (once every process has mapped its objects).
    /// Called from the thread that traces `owner`.
    func removeSpares(of owner: RemoteProcess) throws {
        let mine = lock.withLock { objects.filter { $0.value.owner === owner } }
        for (shmid, o) in mine.sorted(by: { $0.key < $1.key }) {
            try owner.checkedSyscall("munmap of the spare mapping of shared memory object \(shmid)", Syscall.munmap, [o.start, o.length])
        }
    }
}
