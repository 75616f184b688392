import CLinux
import Dispatch
import Glibc
import SystemPackage

/// Memory mappings and their pages: dumped to `mm-PID.img` (VMAs), `pagemap-PID.img` and
/// `pages-N.img`, restored by remote mmap/preadv in the new process.
enum MemoryResource {
    // CRIU's VMA status bits (pycriu's pb2dict names them).
    static let areaRegular: UInt32 = 1 << 0
    static let areaStack: UInt32 = 1 << 1
    static let areaVsyscall: UInt32 = 1 << 2
    static let areaVdso: UInt32 = 1 << 3
    static let areaHeap: UInt32 = 1 << 5
    static let filePrivate: UInt32 = 1 << 6
    static let fileShared: UInt32 = 1 << 7
    static let anonShared: UInt32 = 1 << 8
    static let anonPrivate: UInt32 = 1 << 9
    static let areaVvar: UInt32 = 1 << 12

    /// PE_PRESENT in a pagemap entry's flags.
    static let pagePresent: UInt32 = 1 << 2  // PE_PRESENT (1 << 0 is PE_PARENT, 1 << 1 PE_LAZY)
    /// Cryo's extension of the pagemap flags: the entry's pages are not in this process's pages
    /// file because they were the very pages of its parent process (pstree `ppid`) at the same
    /// addresses, shared copy-on-write; the parent's image holds them (stored, or flagged
    /// again for its own parent). Not CRIU's PE_PARENT (pages in a pre-dump's parent images
    /// directory): CRIU cannot restore such an image, crit shows the bit as `0x8`.
    static let pageCOWParent: UInt32 = 1 << 3

    /// What makes a private mapping of a child the same as one of its parent's: a child forked
    /// from its restored parent keeps those, contents and all (`MemoryRestore`).
    struct InheritedMappingKey: Hashable {
        var start, end, pgoff, shmid: UInt64
        var prot, flags, status: UInt32
        init(_ v: VmaEntry) {
            start = v.start; end = v.end; pgoff = v.pgoff; shmid = v.shmid; prot = v.prot; flags = v.flags; status = v.status
        }
    }

    /// The mappings of `vmas` a child forked from a process with `parentVMAs` inherits as they
    /// are: private ones (shared memory is mapped again, `[vsyscall]` cannot be) that the
    /// parent has identically. Dump and restore agree on this through this one function: the
    /// dump marks pages of these mappings as the parent's, the restore keeps these mappings.
    static func inheritedMappings(_ vmas: [VmaEntry], parentVMAs: [VmaEntry]) -> [VmaEntry] {
        let theirs = Set(parentVMAs.map(InheritedMappingKey.init))
        return vmas.filter { v in
            v.status & (anonShared | fileShared | areaVsyscall | SysVSharedMemoryResource.areaSysVIPC) == 0
                && theirs.contains(InheritedMappingKey(v))
        }
    }

    /// The first of the addresses `start`, `start + step`, ... (below `limit`) where `length`
    /// bytes overlap none of `taken`; nil if there is none. Where restore puts what is its own
    /// (the helper, spare shared-memory mappings) so that no dumped mapping is in the way.
    static func freeAddress(length: UInt64, avoiding taken: [Range<UInt64>], from start: UInt64, step: UInt64,
                            startingBelow limit: UInt64) -> UInt64? {
        var candidate = start
        while candidate < limit {
            let range = candidate..<(candidate + length)
            if !taken.contains(where: { $0.overlaps(range) }) { return candidate }
            candidate += step
        }
        return nil
    }

    /// smaps VmFlags → MADV_* advice worth putting back.
    static let adviceFlags: [(flag: String, advice: Int32)] = [
        ("hg", 14 /* MADV_HUGEPAGE */), ("nh", 15 /* MADV_NOHUGEPAGE */), ("dc", 10 /* MADV_DONTFORK */),
        ("dd", 16 /* MADV_DONTDUMP */), ("mg", 12 /* MADV_MERGEABLE */), ("wf", 18 /* MADV_WIPEONFORK */),
    ]

    /// Builds the VMA entries for `mappings`; file mappings get a file id from `files`.
    static func vmaEntries(_ mappings: [Mapping], pid: pid_t, files: inout FileTable) throws -> [VmaEntry] {
        try mappings.map { m in
            var e = VmaEntry()
            e.start = m.start
            e.end = m.end
            e.pgoff = m.offset
            e.prot = UInt32(m.protection)
            e.fd = -1
            e.shmid = 0
            var flags: Int32 = m.shared ? MAP_SHARED : MAP_PRIVATE
            if m.flags.contains("gd") { flags |= MAP_GROWSDOWN }
            var status = areaRegular
            switch m.name {
            case "[vdso]": status |= areaVdso; flags |= MAP_ANONYMOUS
            case "[vvar]", "[vvar_vclock]": status |= areaVvar; flags |= MAP_ANONYMOUS
            case "[vsyscall]": status = areaVsyscall; flags |= MAP_ANONYMOUS
            case "[heap]": status |= areaHeap | anonPrivate; flags |= MAP_ANONYMOUS
            case "[stack]": status |= areaStack | anonPrivate; flags |= MAP_ANONYMOUS
            default:
                if SysVSharedMemoryResource.isSysV(m) {
                    try SysVSharedMemoryResource.checkAttach(m, pid: pid)
                    e.shmid = m.inode
                    status |= SysVSharedMemoryResource.areaSysVIPC
                } else if SharedMemoryResource.isSharedAnonymous(m) {
                    e.shmid = m.inode
                    status |= anonShared
                    flags |= MAP_ANONYMOUS
                } else if m.isFileBacked {
                    let path = try ProcDirectory(pid: pid).link("map_files/\(String(m.start, radix: 16))-\(String(m.end, radix: 16))")
                    e.shmid = UInt64(try files.mappedFile(path: path, pid: pid, mapping: m))
                    status |= m.shared ? fileShared : filePrivate
                    if MemfdResource.isMemfd(path) { status |= MemfdResource.areaMemfd }
                } else if m.shared {
                    throw CryoError("process \(pid) has a shared anonymous mapping at 0x\(String(m.start, radix: 16))-0x\(String(m.end, radix: 16)) (\(m.name.isEmpty ? "MAP_SHARED|MAP_ANONYMOUS" : m.name)); Cryo cannot dump those yet")
                } else {
                    status |= anonPrivate
                    flags |= MAP_ANONYMOUS
                }
            }
            if m.flags.contains("ht") {
                throw CryoError("process \(pid) has a hugetlbfs mapping at 0x\(String(m.start, radix: 16)); Cryo cannot dump those yet")
            }
            e.flags = UInt32(bitPattern: flags)
            e.status = status
            var madv: UInt64 = 0
            for (flag, advice) in adviceFlags where m.flags.contains(flag) { madv |= 1 << UInt64(advice) }
            if madv != 0 { e.madv = madv }
            return e
        }
    }

    /// Whether the pages of a VMA belong in the image (private memory the process may have
    /// changed). Shared file mappings keep their contents in the file; vdso/vvar are the kernel's.
    static func dumpsPages(_ vma: VmaEntry) -> Bool {
        vma.status & (areaVdso | areaVvar | areaVsyscall | fileShared | anonShared | SysVSharedMemoryResource.areaSysVIPC) == 0
            && vma.status & areaRegular != 0
    }

    /// Finds the pages worth saving in `[start, end)`: present or swapped, not the zero page,
    /// and not still identical to the file (PAGEMAP_SCAN, one ioctl for many ranges).
    static func touchedRanges(pagemap: FileDescriptor, start: UInt64, end: UInt64) throws -> [Range<UInt64>] {
        var result: [Range<UInt64>] = []
        var regions = [cl_page_region](repeating: cl_page_region(), count: 512)
        var cursor = start
        while cursor < end {
            var arg = cl_pm_scan_arg()
            arg.size = UInt64(MemoryLayout<cl_pm_scan_arg>.size)
            arg.start = cursor
            arg.end = end
            arg.vec_len = UInt64(regions.count)
            // Want: (PRESENT or SWAPPED) and not FILE and not PFNZERO.
            let excluded = CL_PAGE_IS_FILE | CL_PAGE_IS_PFNZERO
            arg.category_inverted = UInt64(excluded)
            arg.category_mask = UInt64(excluded)
            arg.category_anyof_mask = UInt64(CL_PAGE_IS_PRESENT | CL_PAGE_IS_SWAPPED)
            arg.return_mask = UInt64(CL_PAGE_IS_PRESENT | CL_PAGE_IS_SWAPPED)
            let n = regions.withUnsafeMutableBufferPointer { buf -> Int32 in
                arg.vec = UInt64(UInt(bitPattern: buf.baseAddress))
                return cl_ioctl_ptr(pagemap.rawValue, UInt(CL_PAGEMAP_SCAN), &arg)
            }
            if n < 0 { throw CryoError("PAGEMAP_SCAN of 0x\(String(cursor, radix: 16))-0x\(String(end, radix: 16))", errno: Errno(rawValue: errnoValue)) }
            for r in regions.prefix(Int(n)) {
                if let last = result.last, last.upperBound == r.start { result[result.count - 1] = last.lowerBound..<r.end }
                else { result.append(r.start..<r.end) }
            }
            if arg.walk_end <= cursor { break }
            cursor = arg.walk_end
        }
        return result
    }

    /// The parent process of a process being dumped, for copy-on-write deduplication: its
    /// mappings (as dumped) and its pagemap.
    struct COWParent {
        /// The parent's mappings, as in its `mm` image.
        var vmas: [VmaEntry]
        /// The parent's `/proc/PID/pagemap`.
        var pagemap: ProcPagemap
    }

    /// Writes the pages of `vmas` into `pages` and returns the pagemap entries describing them.
    /// With `parent`, pages of inherited mappings that are physically the parent's page at the
    /// same address (same page frame: copy-on-write, never written since the fork) are not
    /// stored but marked `pageCOWParent`. The tree is frozen, so frames do not change under
    /// the comparison (but see `sameFrames`), and reading pages shared with other processes
    /// leaves them shared (`ProcMemFile`), so the order in which a tree's processes are dumped
    /// does not matter.
    static func dumpPages(process: RemoteProcess, vmas: [VmaEntry], to pages: FileDescriptor, parent: COWParent?,
                          stats: inout DumpStatistics, log: Log) throws -> [PagemapEntry] {
        let pagemap = try ProcPagemap(pid: process.pid)
        let inherited = Set(parent.map { inheritedMappings(vmas, parentVMAs: $0.vmas).map(\.start) } ?? [])
        var entries: [PagemapEntry] = []
        var segments: [PageCopier.Segment] = []
        var fileOffset: UInt64 = 0
        var deduplicated: UInt64 = 0
        for vma in vmas where dumpsPages(vma) {
            stats.pagesScanned += (vma.end - vma.start) / 4096
            // At most 256 MiB at a time, to bound the pagemap words held (8 bytes a page).
            let ranges = try touchedRanges(pagemap: pagemap.descriptor, start: vma.start, end: vma.end).flatMap { r in
                stride(from: r.lowerBound, to: r.upperBound, by: 256 << 20).map { $0..<min($0 + (256 << 20), r.upperBound) }
            }
            for range in ranges {
                let words = try pagemap.words(range)
                func address(_ page: Int) -> UInt64 { range.lowerBound + UInt64(page) * 4096 }
                var fromParent = [Bool](repeating: false, count: words.count)
                if let parent, inherited.contains(vma.start) {
                    fromParent = try sameFrames(range, words, pagemap, parent.pagemap)
                }
                for (pages, isParents) in runs(fromParent) {
                    var e = PagemapEntry()
                    e.vaddr = address(pages.lowerBound)
                    e.nrPages = UInt32(pages.count)
                    e.flags = isParents ? pageCOWParent : pagePresent
                    entries.append(e)
                    if isParents { deduplicated += UInt64(pages.count); continue }
                    stats.pagesWritten += UInt64(pages.count)
                    for (part, shared) in runs(pages.map { words[$0].isPresent && !words[$0].isExclusive }) {
                        let length = UInt64(part.count) * 4096
                        segments.append(.init(address: address(pages.lowerBound + part.lowerBound), length: length, fileOffset: fileOffset,
                                              keepsShared: shared))
                        fileOffset += length
                    }
                }
            }
        }
        try PageCopier.dump(from: process.memory, segments, to: pages)
        stats.pagesSkippedParent += deduplicated
        if deduplicated > 0 {
            log.debug("process \(process.pid): \(deduplicated) pages are its parent's (copy-on-write), not stored again")
        }
        return entries
    }

    /// The runs of equal values in `values`: index ranges and their value, in order.
    private static func runs<T: Equatable>(_ values: [T]) -> [(Range<Int>, T)] {
        var result: [(Range<Int>, T)] = []
        var start = 0
        for i in values.indices.dropFirst() where values[i] != values[start] {
            result.append((start..<i, values[start]))
            start = i
        }
        if !values.isEmpty { result.append((start..<values.count, values[start])) }
        return result
    }

    /// For each page of `range` (whose pagemap words in the child are `mine`): whether the
    /// child's page is the parent's physical page. The child's words are read again after the
    /// parent's, so a page the kernel migrated in between (compaction moves pages even of
    /// stopped processes) counts as not shared rather than matching a frame another page took
    /// meanwhile. Pages whose frames are hidden (no CAP_SYS_ADMIN) never match: everything is
    /// stored then.
    private static func sameFrames(_ range: Range<UInt64>, _ mine: [PagemapWord], _ child: ProcPagemap,
                                   _ parent: ProcPagemap) throws -> [Bool] {
        let theirs = try parent.words(range)
        let again = try child.words(range)
        return mine.indices.map { i in
            guard let frame = mine[i].frame else { return false }
            return theirs[i].frame == frame && again[i].frame == frame
        }
    }
}

extension PagemapEntry {
    /// Whether the entry's pages are in this process's pages file (not its parent's pages,
    /// `MemoryResource.pageCOWParent`).
    var isStored: Bool { flags & MemoryResource.pageCOWParent == 0 }
    /// The bytes the entry takes in the pages file.
    var storedBytes: UInt64 { isStored ? UInt64(nrPages) * 4096 : 0 }
}

/// Moves pages between a process and a pages image on all cores at once.
///
/// Page movement dominates checkpoint time, and both directions are dominated by the kernel
/// allocating pages (page cache on dump, anonymous memory on restore), which scales with
/// cores. Work is cut into chunks that worker threads take in turn; each chunk is one
/// process_vm_readv (or, for pages shared with other processes, /proc/PID/mem) + pwrite (dump) or one process_vm_writev straight from the mapped image
/// (restore: a single copy from page cache into the process). No ptrace is used here, so
/// any thread may do it.
enum PageCopier {
    /// A run of pages: where it is in the process and in the image.
    struct Segment: Sendable {
        var address: UInt64
        var length: UInt64
        var fileOffset: UInt64
        /// Dump: the pages are mapped by other processes too (copy-on-write); they are read
        /// through `ProcMemFile`, which leaves them shared.
        var keepsShared = false
    }

    static let chunkSize: UInt64 = 4 << 20
    static var workers: Int { max(1, min(4, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))) }

    private static func chunks(_ segments: [Segment]) -> [Segment] {
        var result: [Segment] = []
        for s in segments {
            var done: UInt64 = 0
            while done < s.length {
                let n = min(chunkSize, s.length - done)
                result.append(Segment(address: s.address + done, length: n, fileOffset: s.fileOffset + done, keepsShared: s.keepsShared))
                done += n
            }
        }
        return result
    }

    /// Runs `body` on every chunk from `workers` threads; the first error wins.
    private static func parallel(_ chunks: [Segment], _ body: @escaping @Sendable (Segment, UnsafeMutableRawBufferPointer) throws -> Void) throws {
        let next = ManagedAtomicCounter()
        let failure = FirstError()
        // Small jobs (most processes of a tree) are not worth waking other threads for.
        let threads = chunks.count > 2 ? workers : 1
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunkSize), alignment: 4096)
            defer { buffer.deallocate() }
            while !failure.isSet {
                let i = next.increment()
                guard i < chunks.count else { return }
                do { try body(chunks[i], buffer) } catch { failure.set(error) }
            }
        }
        if let error = failure.error { throw error }
    }

    static func dump(from memory: RemoteMemory, _ segments: [Segment], to file: FileDescriptor) throws {
        let memFile = segments.contains(where: \.keepsShared) ? try ProcMemFile(pid: memory.pid) : nil
        defer { memFile?.close() }
        try parallel(chunks(segments)) { c, buffer in
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(c.length)])
            if c.keepsShared, let memFile { try memFile.read(c.address, into: slice) } else { try memory.read(c.address, into: slice) }
            do { _ = try file.writeAll(toAbsoluteOffset: Int64(c.fileOffset), UnsafeRawBufferPointer(slice)) }
            catch { throw CryoError("cannot write the pages image at offset \(c.fileOffset)", errno: error as? Errno ?? .ioError) }
        }
    }

    static func restore(to memory: RemoteMemory, _ segments: [Segment], from path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CryoError("cannot open \(path)", errno: Errno(rawValue: errnoValue)) }
        defer { close(fd) }
        let total = segments.map { $0.fileOffset + $0.length }.max() ?? 0
        guard total > 0 else { return }
        guard let base = mmap(nil, Int(total), PROT_READ, MAP_SHARED, fd, 0), base != MAP_FAILED else {
            throw CryoError("cannot map \(path)", errno: Errno(rawValue: errnoValue))
        }
        defer { munmap(base, Int(total)) }
        madvise(base, Int(total), 3 /* MADV_WILLNEED */)
        let address = UInt(bitPattern: base)
        try parallel(chunks(segments)) { c, _ in
            let source = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: address + UInt(c.fileOffset)), count: Int(c.length))
            try memory.write(c.address, source)
        }
    }
}

/// A counter several threads take numbers from.
final class ManagedAtomicCounter: @unchecked Sendable {
    private var value = 0
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }
    deinit { pthread_mutex_destroy(&lock) }
    /// Returns the current value and adds one.
    func increment() -> Int {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        value += 1
        return value - 1
    }
}

/// The first error any of several threads met.
final class FirstError: @unchecked Sendable {
    private var stored: (any Error)?
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }
    deinit { pthread_mutex_destroy(&lock) }
    var isSet: Bool { error != nil }
    var error: (any Error)? { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return stored }
    func set(_ e: any Error) { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; if stored == nil { stored = e } }
}

/// CRIU's dump statistics (`stats-dump.img`), in microseconds and pages.
public struct DumpStatistics: Sendable {
    public var freezingTime: UInt32 = 0
    public var frozenTime: UInt32 = 0
    public var memdumpTime: UInt32 = 0
    public var memwriteTime: UInt32 = 0
    public var pagesScanned: UInt64 = 0
    /// Pages not written because they are the parent process's, shared copy-on-write (in
    /// CRIU: pages found in a pre-dump's parent images; the same field and the same idea).
    public var pagesSkippedParent: UInt64 = 0
    public var pagesWritten: UInt64 = 0

    var entry: StatsEntry {
        var d = DumpStatsEntry()
        d.freezingTime = freezingTime
        d.frozenTime = frozenTime
        d.memdumpTime = memdumpTime
        d.memwriteTime = memwriteTime
        d.pagesScanned = pagesScanned
        d.pagesSkippedParent = pagesSkippedParent
        d.pagesWritten = pagesWritten
        d.pagesLazy = 0
        var s = StatsEntry()
        s.dump = d
        return s
    }
}

/// Microseconds since an arbitrary start, for statistics.
func monotonicMicroseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
}

/// The restore half of `MemoryResource`: empties the new process's address space, recreates
/// each VMA at its address, and has the process read its own pages from `pages-N.img`.
enum MemoryRestore {
    static let archMapVdso64: UInt64 = 0x2003

    /// Copy-on-write sharing with the parent, for the restore statistics.
    struct Sharing {
        var pagesCompared: UInt64 = 0
        /// Pages kept from the parent: equal to the parent's in the images, or marked as the
        /// parent's own (`pageCOWParent`, compared by page frame at dump time; those count as
        /// compared too).
        var pagesSkipped: UInt64 = 0
    }

    /// Rebuilds the address space of `process` from `image`. A process forked from its restored
    /// `parent` keeps the private mappings it has exactly as the parent, and only the pages that
    /// differ are written, so pages the two shared stay shared (and memory use stays as it was).
    static func restore(_ process: RemoteProcess, _ image: ProcessImage, parent: ProcessImage?, files: [UInt32: FileEntry],
                        shared: SharedMemoryTable, memfds: MemfdTable, sharing: inout Sharing,
                        log: Log) throws -> UInt64 {
        let helper = process.gadget
        let helperEnd = helper + UInt64(Restorer.helperSize)
        func call(_ what: String, _ nr: Int, _ args: UInt64...) throws -> Int64 {
            try process.checkedSyscall(what, nr, args)
        }
        let vmas = image.mm.vmas
        var kept: [VmaEntry] = []
        if let parent {
            kept = MemoryResource.inheritedMappings(vmas, parentVMAs: parent.mm.vmas).filter { !($0.start < helperEnd && helper < $0.end) }
        }
        let keptStarts = Set(kept.map(\.start))
        // 1. Everything but the helper and the kept mappings goes.
        var cursor: UInt64 = 0
        let keep = (kept.map { $0.start..<$0.end } + [helper..<helperEnd]).sorted { $0.lowerBound < $1.lowerBound }
        var unmaps = try SyscallBatch(for: process)
        for range in keep + [0x7fff_ffff_f000..<0x7fff_ffff_f000] {
            if range.lowerBound > cursor { unmaps.add("munmap 0x\(String(cursor, radix: 16))", Syscall.munmap, cursor, range.lowerBound - cursor) }
            cursor = max(cursor, range.upperBound)
        }
        try process.run(unmaps)

        log.debug("address space emptied (\(kept.count) mappings kept from the parent)")
        // 2. The vDSO and its data pages, at their dumped address.
        let special = vmas.filter { $0.status & (MemoryResource.areaVdso | MemoryResource.areaVvar) != 0 && !keptStarts.contains($0.start) }
        if let low = special.map(\.start).min() {
            _ = try call("arch_prctl(ARCH_MAP_VDSO_64, 0x\(String(low, radix: 16)))", Syscall.arch_prctl, archMapVdso64, low)
            let now = try process.proc.mappings()
            for v in special where !now.contains(where: { $0.start == v.start && $0.end == v.end }) {
                throw CryoError("this kernel's vDSO does not fit the dumped one at 0x\(String(v.start, radix: 16))-0x\(String(v.end, radix: 16)); restoring on another kernel is not supported yet")
            }
        }

        log.debug("vDSO mapped")
        // 3. Every other mapping, writable for now if it gets pages.
        var withPages = Set<UInt64>()
        for e in image.pagemap {
            if let v = vmas.first(where: { $0.start <= e.vaddr && e.vaddr < $0.end }) { withPages.insert(v.start) }
        }
        // Files to map: all opened in one batch, mapped in the next, closed in a third.
        let specials = MemoryResource.areaVdso | MemoryResource.areaVvar | MemoryResource.areaVsyscall
        let toMap = vmas.filter { $0.status & (specials | MemoryResource.anonShared | SysVSharedMemoryResource.areaSysVIPC) == 0 && !keptStarts.contains($0.start) }
        var fileFDs: [UInt32: UInt64] = [:]
        var opens = try SyscallBatch(for: process)
        var opened: [UInt32] = []
        for v in toMap where v.status & (MemoryResource.filePrivate | MemoryResource.fileShared) != 0 {
            let id = UInt32(v.shmid)
            if opened.contains(id) { continue }
            let file = files[id]!
            let path = file.hasMemfd ? try memfds.pathToMap(file) : file.reg.name
            let writable = v.status & MemoryResource.fileShared != 0 && v.prot & UInt32(PROT_WRITE) != 0
            opens.add("open \(path)", Syscall.openat, UInt64(bitPattern: -100), try opens.place(path), UInt64(writable ? O_RDWR : O_RDONLY), 0)
            opened.append(id)
        }
        for (id, fd) in zip(opened, try process.run(opens)) { fileFDs[id] = UInt64(fd) }
        defer {
            var closes = try? SyscallBatch(for: process)
            for fd in fileFDs.values { closes?.add("close", Syscall.close, fd, mayFail: true) }
            if let closes { _ = try? process.run(closes) }
        }
        var maps = try SyscallBatch(for: process)
        for v in toMap {
            var prot = v.prot
            if withPages.contains(v.start) { prot |= UInt32(PROT_WRITE) }
            let flags = UInt64(v.flags) | UInt64(MAP_FIXED)
            let fd = v.status & (MemoryResource.filePrivate | MemoryResource.fileShared) != 0 ? fileFDs[UInt32(v.shmid)]! : UInt64.max
            maps.add("mmap of 0x\(String(v.start, radix: 16))-0x\(String(v.end, radix: 16))", Syscall.mmap,
                     v.start, v.end - v.start, UInt64(prot), flags, fd, v.pgoff)
        }
        for (v, address) in zip(toMap, try process.run(maps)) where UInt64(address) != v.start {
            throw CryoError("mmap put 0x\(String(v.start, radix: 16)) at 0x\(String(address, radix: 16))")
        }

        // Shared memory after the private mappings, so a spare object mapping the kernel places
        // cannot sit where one of them must go.
        for v in vmas where v.status & MemoryResource.anonShared != 0 && v.status & specials == 0 {
            try shared.map(v, into: process)
        }
        for v in vmas where v.status & SysVSharedMemoryResource.areaSysVIPC != 0 {
            try shared.sysv.attach(v, into: process, log: log)
        }
        log.debug("\(vmas.count) mappings made")
        // 4. Pages, copied straight from the image's page cache into the process; in kept
        //    mappings only those that differ from the parent's, and the parent's pages this
        //    process does not have are dropped (back to zero or to the file). Pages marked as
        //    the parent's own (copy-on-write at dump time) are already there: the parent's
        //    memory was complete when this process was forked from it.
        //    parentOffsets: the parent's pages in kept mappings, by address, with their offset
        //    in its pages file (nil: the parent has it from its own parent, not comparable).
        var parentOffsets: [UInt64: UInt64?] = [:]
        if let parent, !kept.isEmpty {
            var offset: UInt64 = 0
            for e in parent.pagemap {
                // A pagemap entry never crosses a mapping.
                if kept.contains(where: { $0.start <= e.vaddr && e.vaddr < $0.end }) {
                    for i in 0..<UInt64(e.nrPages) { parentOffsets[e.vaddr + i * 4096] = e.isStored ? offset + i * 4096 : nil }
                }
                offset += e.storedBytes
            }
        }
        let mine = try MappedFile(image.pagesPath)
        let theirs = parent.flatMap { parentOffsets.isEmpty ? nil : try? MappedFile($0.pagesPath) }
        var segments: [PageCopier.Segment] = []
        var offset: UInt64 = 0
        var pages: UInt64 = 0
        var writtenInKept = Set<UInt64>()
        for e in image.pagemap {
            let keptVMA = kept.first { $0.start <= e.vaddr && e.vaddr < $0.end }
            if !e.isStored {
                // TreeImage checked these lie in inherited mappings the parent has pages in;
                // only the helper's place, chosen now, can have taken one.
                guard keptVMA != nil else {
                    throw CryoError("cannot restore process \(image.pid): its pages at 0x\(String(e.vaddr, radix: 16)) are its parent's, but that mapping cannot be inherited from the parent")
                }
                for i in 0..<UInt64(e.nrPages) { parentOffsets.removeValue(forKey: e.vaddr + i * 4096) }
                sharing.pagesCompared += UInt64(e.nrPages)
                sharing.pagesSkipped += UInt64(e.nrPages)
                continue
            }
            for i in 0..<UInt64(e.nrPages) {
                let address = e.vaddr + i * 4096
                let fileOffset = offset + i * 4096
                if let theirs, let other = parentOffsets.removeValue(forKey: address), let other {
                    sharing.pagesCompared += 1
                    if mine.page(at: fileOffset) == theirs.page(at: other) { sharing.pagesSkipped += 1; continue }
                }
                if let keptVMA { writtenInKept.insert(keptVMA.start) }
                if let last = segments.last, last.address + last.length == address, last.fileOffset + last.length == fileOffset {
                    segments[segments.count - 1].length += 4096
                } else {
                    segments.append(.init(address: address, length: 4096, fileOffset: fileOffset))
                }
                pages += 1
            }
            offset += UInt64(e.nrPages) * 4096
        }
        var before = try SyscallBatch(for: process)
        for address in parentOffsets.keys.sorted() {
            before.add("madvise(MADV_DONTNEED) 0x\(String(address, radix: 16))", Syscall.madvise, address, 4096, 4)
        }
        let readOnlyKept = kept.filter { writtenInKept.contains($0.start) && $0.prot & UInt32(PROT_WRITE) == 0 }
        for v in readOnlyKept {
            before.add("mprotect 0x\(String(v.start, radix: 16))", Syscall.mprotect, v.start, v.end - v.start, UInt64(v.prot | UInt32(PROT_WRITE)))
        }
        try process.run(before)
        try PageCopier.restore(to: process.memory, segments, from: image.pagesPath)

        // 5. Final protections and advice.
        var after = try SyscallBatch(for: process)
        for v in readOnlyKept {
            after.add("mprotect 0x\(String(v.start, radix: 16))", Syscall.mprotect, v.start, v.end - v.start, UInt64(v.prot))
        }
        for v in vmas where withPages.contains(v.start) && v.prot & UInt32(PROT_WRITE) == 0 && !keptStarts.contains(v.start) {
            after.add("mprotect 0x\(String(v.start, radix: 16))", Syscall.mprotect, v.start, v.end - v.start, UInt64(v.prot))
        }
        var advices: [(UInt64, Int)] = []
        for v in vmas where v.hasMadv && !keptStarts.contains(v.start) {
            for advice in 0..<64 where v.madv & (1 << UInt64(advice)) != 0 {
                advices.append((v.start, after.add("madvise(\(advice))", Syscall.madvise, v.start, v.end - v.start, UInt64(advice), mayFail: true)))
            }
        }
        let results = try process.run(after)
        for (start, index) in advices where results[index] < 0 {
            log.warn("madvise on 0x\(String(start, radix: 16)) failed: errno \(-results[index])")
        }
        return pages
    }
}

/// A read-only view of an image file, page by page.
final class MappedFile {
    private let base: UnsafeRawPointer?
    private let size: Int

    init(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CryoError("cannot open \(path)", errno: Errno(rawValue: errnoValue)) }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        size = Int(st.st_size)
        if size == 0 { base = nil; return }
        guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw CryoError("cannot map \(path)", errno: Errno(rawValue: errnoValue))
        }
        base = UnsafeRawPointer(p)
    }

    deinit { if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) } }

    /// The 4 KiB page at `offset`.
    func page(at offset: UInt64) -> UnsafeRawBufferPointer {
        guard let base, Int(offset) + 4096 <= size else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + Int(offset), count: 4096)
    }
}

extension UnsafeRawBufferPointer {
    static func == (a: UnsafeRawBufferPointer, b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
    }
}
