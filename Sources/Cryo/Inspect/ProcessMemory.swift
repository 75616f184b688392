import Glibc

/// CRIU's VMA status bits (`vma_entry.status`).
public enum VMAStatus {
    /// A mapping CRIU handles (not a kernel-only one such as `[vsyscall]`).
    public static let regular: UInt32 = 1 << 0
    /// `[stack]`.
    public static let stack: UInt32 = 1 << 1
    /// `[vsyscall]`.
    public static let vsyscall: UInt32 = 1 << 2
    /// `[vdso]`.
    public static let vdso: UInt32 = 1 << 3
    /// `[heap]`.
    public static let heap: UInt32 = 1 << 5
    /// A private file mapping: its pages are the file's unless written (then dumped).
    public static let filePrivate: UInt32 = 1 << 6
    /// A shared file mapping: its pages are the file's.
    public static let fileShared: UInt32 = 1 << 7
    /// Shared anonymous memory.
    public static let anonShared: UInt32 = 1 << 8
    /// Private anonymous memory.
    public static let anonPrivate: UInt32 = 1 << 9
    /// SysV shared memory.
    public static let sysvipc: UInt32 = 1 << 10
    /// A packet socket's ring.
    public static let socket: UInt32 = 1 << 11
    /// `[vvar]`.
    public static let vvar: UInt32 = 1 << 12
    /// An AIO ring.
    public static let aioring: UInt32 = 1 << 13
}

/// A raw pages image (`pages-N.img`) opened for reading, with the pagemap that describes it.
public final class PagesFile {
    /// The pages file.
    public let path: String
    /// The pagemap image that names it (for error messages).
    public let pagemapPath: String
    /// Its size.
    public let size: UInt64
    private let fd: Int32

    init(path: String, pagemapPath: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ImageFormatError(.inconsistent, file: path, offset: nil,
                                   "cannot open the pages named by \(pagemapPath): \(String(cString: strerror(errno)))")
        }
        var st = stat()
        fstat(fd, &st)
        self.fd = fd
        self.path = path
        self.pagemapPath = pagemapPath
        size = UInt64(st.st_size)
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
    }

    deinit { close(fd) }

    /// Reads `count` bytes at `offset` into `buffer`; a file shorter than its pagemap says is
    /// reported as truncated.
    public func read(_ buffer: UnsafeMutableRawPointer, offset: UInt64, count: Int) throws {
        guard offset <= size, UInt64(count) <= size - offset else {
            throw ImageFormatError(.truncated, file: path, offset: Int(clamping: size),
                                   "\(pagemapPath) describes pages up to byte \(offset &+ UInt64(count)), the file has \(size)")
        }
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw ImageFormatError(.io, file: path, offset: Int(offset) + done,
                                       n == 0 ? "unexpected end of file" : "cannot read: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
}

/// The memory of one dumped process, read from its images: `mm-PID.img` (the mappings),
/// `pagemap-PID.img` (which pages were dumped) and `pages-N.img` (their contents, in pagemap
/// order); shared anonymous memory from `pagemap-shmem-SHMID.img` and its pages file (entries
/// there address the object by offset). A page that was not dumped reads as the mapped file's
/// content (file mappings whose file still exists) or as zeros (never touched).
///
/// Nothing is loaded up front: pages are read with `pread` when asked for, so a 1 GiB image
/// costs no memory until it is read.
public final class ProcessMemory {
    /// The page size of the images (x86_64).
    public static let pageSize: UInt64 = 4096
    /// The end of x86_64 user space (57-bit addresses with 5-level paging).
    public static let userSpaceEnd: UInt64 = 1 << 56

    /// A run of dumped pages.
    public struct Run: Sendable {
        /// The first address (for shared memory: the offset in the object).
        public let start: UInt64
        /// The number of pages.
        public let pages: UInt64
        /// Where the run's bytes are in the pages file; nil if they are not in this image (in
        /// a parent image, the parent process's, or served lazily).
        public let fileOffset: UInt64?
        /// Whether the run's pages are the parent process's at the same addresses (Cryo's
        /// flag 0x8: shared copy-on-write, stored once in the parent's images).
        public var fromParentProcess = false
        /// The address after the run.
        public var end: UInt64 { start &+ pages &* ProcessMemory.pageSize }
    }

    /// A stretch of dumped memory, contiguous in the address space and in its pages file.
    public struct Segment {
        /// Its first address.
        public let address: UInt64
        /// Its length.
        public var length: UInt64
        /// The pages file holding it.
        public let file: PagesFile
        /// Where in that file.
        public let fileOffset: UInt64

        /// The part of the segment inside `range`, if any.
        func clipped(to range: Range<UInt64>) -> Segment? {
            let start = max(address, range.lowerBound), end = min(address + length, range.upperBound)
            guard start < end else { return nil }
            return Segment(address: start, length: end - start, file: file, fileOffset: fileOffset + (start - address))
        }
    }

    /// Where the bytes of an address come from.
    public enum Source: Equatable, Sendable {
        /// Dumped: in a pages file.
        case dumped
        /// Not dumped; the mapped file holds them (the path).
        case file(String)
        /// Not dumped and not file-backed: zeros.
        case zero
        /// Dumped but not in this image (`in_parent` / lazy), or the mapped file is gone.
        case unavailable
        /// Not mapped at all.
        case unmapped
    }

    /// The pid.
    public let pid: UInt32
    /// The memory of the parent process (pstree `ppid`), opened when some runs are its pages
    /// (``Run/fromParentProcess``); nil otherwise or when the parent is not in the dump.
    public let parent: ProcessMemory?
    /// The mappings, by start address.
    public let vmas: [VmaEntry]
    /// The dumped runs of private memory, by address.
    public let runs: [Run]
    /// The pages file of private memory, if there is a pagemap.
    public let pages: PagesFile?
    /// The pagemap file.
    public let pagemapPath: String
    /// Shared anonymous objects mapped by the process, by shmid: their runs (by offset in
    /// the object) and pages file.
    public let sharedObjects: [UInt64: (runs: [Run], pages: PagesFile)]
    private let runStarts: [UInt64]
    private let vmaStarts: [UInt64]
    private let files: [UInt32: FileEntry]
    private var mappedFiles: [UInt32: Int32] = [:]

    /// Opens the memory of process `process` of `dump`.
    public convenience init(_ dump: DumpImages, _ process: ProcessImages) throws {
        try self.init(dump, process, descendants: [])
    }

    /// Opens the memory of `process`; `descendants` are the processes whose memory asked for
    /// it, which a broken pstree could name as its ancestor again.
    private init(_ dump: DumpImages, _ process: ProcessImages, descendants: Set<UInt32>) throws {
        pid = process.pid
        let mmPath = dump.path("mm-\(process.pid).img")
        for v in process.mm?.vmas ?? [] where !(v.start < v.end && (v.end <= Self.userSpaceEnd || v.status & VMAStatus.vsyscall != 0)) {
            throw ImageFormatError(.corrupt, file: mmPath, offset: nil,
                                   "mapping \(hexString(v.start))-\(hexString(v.end)) is not a valid user-space range")
        }
        vmas = (process.mm?.vmas ?? []).sorted { $0.start < $1.start }
        files = dump.files
        pagemapPath = dump.path("pagemap-\(process.pid).img")
        if let pagemap = process.pagemap {
            let file = try PagesFile(path: dump.path("pages-\(pagemap.head.pagesID).img"), pagemapPath: pagemapPath)
            pages = file
            runs = try Self.runs(pagemap.entries, file, pagemapPath)
        } else {
            pages = nil
            runs = []
        }
        var shared: [UInt64: (runs: [Run], pages: PagesFile)] = [:]
        for v in vmas where v.status & VMAStatus.anonShared != 0 && shared[v.shmid] == nil {
            let name = "pagemap-shmem-\(v.shmid).img"
            guard dump.contains(name) else { continue }
            let pagemap = try ImageReader.pagemap(dump.path(name))
            let file = try PagesFile(path: dump.path("pages-\(pagemap.head.pagesID).img"), pagemapPath: dump.path(name))
            shared[v.shmid] = (try Self.runs(pagemap.entries, file, dump.path(name)), file)
        }
        sharedObjects = shared
        let ppid = process.entry.ppid
        let needsParent = runs.contains(where: \.fromParentProcess) && !descendants.contains(ppid) && dump.pids.contains(ppid)
        let parentImages = needsParent ? try dump.process(ppid) : nil
        let asking = descendants.union([process.pid])
        parent = try parentImages.flatMap { $0.isZombie ? nil : try ProcessMemory(dump, $0, descendants: asking) }
        runStarts = runs.map(\.start)
        vmaStarts = vmas.map(\.start)
    }

    /// The runs of a pagemap, sorted, with their offsets in `file`.
    ///
    /// CRIU: PE_PARENT 1 (pages in the parent image), PE_LAZY 2 (may be restored lazily),
    /// PE_PRESENT 4 (in this pages file); without flags, in_parent means PE_PARENT and
    /// otherwise PE_PRESENT. Cryo's 8 (`MemoryResource.pageCOWParent`): the parent process's
    /// pages. Some Cryo dumps mark their pages PE_LAZY alone although they are in the file:
    /// when the file holds more than the PE_PRESENT entries account for, the lazy ones are in
    /// it too (a lazy CRIU dump leaves it empty). A pages file shorter than that is
    /// then reported when read, not taken as "no pages".
    private static func runs(_ entries: [PagemapEntry], _ file: PagesFile, _ pagemapPath: String) throws -> [Run] {
        let flags = entries.map { e -> UInt32 in e.hasFlags ? e.flags : (e.inParent ? 1 : 4) }
        let strict = zip(entries, flags).reduce(UInt64(0)) { $1.1 & 4 != 0 ? $0 &+ UInt64($1.0.nrPages) &* pageSize : $0 }
        let lazyInFile = file.size > strict
        var runs: [Run] = []
        var offset: UInt64 = 0
        for (e, f) in zip(entries, flags) {
            guard e.vaddr % pageSize == 0, e.vaddr < userSpaceEnd, UInt64(e.nrPages) <= (userSpaceEnd - e.vaddr) / pageSize else {
                throw ImageFormatError(.corrupt, file: pagemapPath, offset: nil,
                                       "entry \(hexString(e.vaddr, prefix: true)) + \(e.nrPages) pages is not a valid user-space range")
            }
            let present = f & 4 != 0 || (lazyInFile && f & 1 == 0 && f & 2 != 0)
            var run = Run(start: e.vaddr, pages: UInt64(e.nrPages), fileOffset: present ? offset : nil)
            run.fromParentProcess = !present && f & MemoryResource.pageCOWParent != 0
            runs.append(run)
            if present { offset = offset &+ UInt64(e.nrPages) &* pageSize }
        }
        return runs.sorted { $0.start < $1.start }
    }

    deinit {
        for fd in mappedFiles.values where fd >= 0 { close(fd) }
    }

    /// The bytes of the process's mappings that the images hold.
    public var dumpedBytes: UInt64 { vmas.reduce(0) { $0 &+ dumped(in: $1) } }

    /// The bytes of `vma` that the images hold.
    public func dumped(in vma: VmaEntry) -> UInt64 {
        dumpedRanges(vma).reduce(0) { $0 &+ ($1.end - $1.start) }
    }

    /// Whether some of the memory is in a parent image or served lazily (not in these files,
    /// nor in the parent process's).
    public var hasMissingPages: Bool {
        runs.contains { $0.fileOffset == nil && !($0.fromParentProcess && parent != nil) }
            || parent?.hasMissingPages == true
            || sharedObjects.values.contains { $0.runs.contains { $0.fileOffset == nil } }
    }

    /// The mapping that contains `address`.
    public func vma(containing address: UInt64) -> VmaEntry? {
        var lo = 0, hi = vmas.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if vmas[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo < vmas.count && vmas[lo].start <= address ? vmas[lo] : nil
    }

    /// The index in `runs` of the run that contains `address`.
    static func runIndex(_ runs: [Run], containing address: UInt64) -> Int? {
        var lo = 0, hi = runs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if runs[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo < runs.count && runs[lo].start <= address ? lo : nil
    }

    /// The first of the sorted `starts` above `address` (or UInt64.max).
    private static func firstStart(after address: UInt64, in starts: [UInt64]) -> UInt64 {
        var lo = 0, hi = starts.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if starts[mid] <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo < starts.count ? starts[lo] : UInt64.max
    }

    /// The path of the file a file mapping maps, if it is one.
    public func mappedFile(_ vma: VmaEntry) -> String? {
        guard vma.status & (VMAStatus.filePrivate | VMAStatus.fileShared) != 0,
              let f = files[UInt32(truncatingIfNeeded: vma.shmid)], f.hasReg else { return nil }
        return f.reg.name
    }

    /// How a mapping is shown: its file, or `[stack]`, `[heap]`, `[vdso]`, `[anon]`...
    public func backing(_ vma: VmaEntry) -> String {
        if let path = mappedFile(vma) { return path }
        let s = vma.status
        if s & VMAStatus.stack != 0 { return "[stack]" }
        if s & VMAStatus.heap != 0 { return "[heap]" }
        if s & VMAStatus.vdso != 0 { return "[vdso]" }
        if s & VMAStatus.vvar != 0 { return "[vvar]" }
        if s & VMAStatus.vsyscall != 0 { return "[vsyscall]" }
        if s & VMAStatus.sysvipc != 0 { return "[sysv-shm \(vma.shmid)]" }
        if s & VMAStatus.anonShared != 0 { return "[shared-anon \(vma.shmid)]" }
        if s & VMAStatus.socket != 0 { return "[packet-ring]" }
        if s & VMAStatus.aioring != 0 { return "[aio]" }
        if vma.flags & 0x100 != 0 { return "[stack?]" }
        return "[anon]"
    }

    /// `rwxp`/`rwxs` for a mapping.
    public static func permissions(_ vma: VmaEntry) -> String {
        (vma.prot & 1 != 0 ? "r" : "-") + (vma.prot & 2 != 0 ? "w" : "-") + (vma.prot & 4 != 0 ? "x" : "-")
            + (vma.flags & 1 != 0 ? "s" : "p")
    }

    /// The shared object offset of `address` in `vma` (no overflow for valid VMAs).
    private func objectOffset(_ vma: VmaEntry, _ address: UInt64) -> UInt64 { vma.pgoff &+ (address - vma.start) }

    /// Where the bytes at `address` come from.
    public func source(of address: UInt64) -> Source {
        guard let vma = vma(containing: address) else { return .unmapped }
        if let i = Self.runIndex(runs, containing: address) {
            if runs[i].fromParentProcess { return parent?.source(of: address) ?? .unavailable }
            return runs[i].fileOffset == nil ? .unavailable : .dumped
        }
        if vma.status & VMAStatus.anonShared != 0, let object = sharedObjects[vma.shmid],
           let i = Self.runIndex(object.runs, containing: objectOffset(vma, address)) {
            return object.runs[i].fileOffset == nil ? .unavailable : .dumped
        }
        if let path = mappedFile(vma) { return access(path, R_OK) == 0 ? .file(path) : .unavailable }
        return .zero
    }

    private func fileDescriptor(_ vma: VmaEntry) -> Int32 {
        let id = UInt32(truncatingIfNeeded: vma.shmid)
        if let fd = mappedFiles[id] { return fd }
        let fd = mappedFile(vma).map { open($0, O_RDONLY | O_CLOEXEC) } ?? -1
        mappedFiles[id] = fd
        return fd
    }

    /// Reads `count` bytes at `address` as the process saw them: dumped pages from the image,
    /// other pages of file mappings from the file, the rest zeros (also for unmapped gaps).
    public func read(_ address: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(address, into: $0) }
        return out
    }

    /// Fills `buffer` with the bytes at `address` (see ``read(_:count:)``).
    public func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var at = address
        var done = 0
        while done < buffer.count {
            let want = UInt64(buffer.count - done)
            let dest = buffer.baseAddress! + done
            var n: Int
            defer { at += UInt64(n); done += n }
            if let i = Self.runIndex(runs, containing: at) {
                let run = runs[i]
                n = Int(min(want, run.end - at))
                if let base = run.fileOffset, let pages { try pages.read(dest, offset: base + (at - run.start), count: n) }
                else if run.fromParentProcess, let parent { try parent.read(at, into: UnsafeMutableRawBufferPointer(start: dest, count: n)) }
                else { memset(dest, 0, n) }
                continue
            }
            // Not in the private pagemap: up to its next run, within the mapping.
            let nextRun = Self.firstStart(after: at, in: runStarts)
            guard let vma = vma(containing: at) else {
                n = Int(min(want, min(nextRun, Self.firstStart(after: at, in: vmaStarts)) &- at))
                memset(dest, 0, n)
                continue
            }
            n = Int(min(want, min(nextRun, vma.end) - at))
            memset(dest, 0, n)
            if vma.status & VMAStatus.anonShared != 0, let object = sharedObjects[vma.shmid] {
                let offset = objectOffset(vma, at)
                if let i = Self.runIndex(object.runs, containing: offset) {
                    let run = object.runs[i]
                    n = Int(min(UInt64(n), run.end - offset))
                    if let base = run.fileOffset { try object.pages.read(dest, offset: base + (offset - run.start), count: n) }
                } else {
                    let next = Self.firstStart(after: offset, in: object.runs.map(\.start))
                    n = Int(min(UInt64(n), next &- offset))
                }
            } else if mappedFile(vma) != nil {
                let fd = fileDescriptor(vma)
                let fileOffset = vma.pgoff.addingReportingOverflow(at - vma.start)
                if fd >= 0, !fileOffset.overflow, fileOffset.partialValue < UInt64(Int64.max) - UInt64(n) {
                    var got = 0
                    while got < n {
                        let r = pread(fd, dest + got, n - got, off_t(fileOffset.partialValue) + off_t(got))
                        if r < 0 && errno == EINTR { continue }
                        if r <= 0 { break }
                        got += r
                    }
                }
            }
        }
    }

    /// The dumped parts of `vma` (private runs and, for shared anonymous memory, the object's
    /// runs), as address ranges, sorted.
    private func dumpedRanges(_ vma: VmaEntry) -> [(start: UInt64, end: UInt64)] {
        segments(of: vma).map { ($0.address, $0.address + $0.length) }
    }

    /// The dumped segments inside `vma`.
    private func segments(of vma: VmaEntry) -> [Segment] {
        var out: [Segment] = []
        if let pages {
            // The parent's segments of the same mapping, for runs that are its pages.
            var parentSegments: [Segment]?
            var i = Self.runIndex(runs, containing: vma.start) ?? runs.firstIndex { $0.start >= vma.start } ?? runs.count
            while i < runs.count, runs[i].start < vma.end {
                let r = runs[i]
                let start = max(r.start, vma.start), end = min(r.end, vma.end)
                if let off = r.fileOffset {
                    if start < end { out.append(Segment(address: start, length: end - start, file: pages, fileOffset: off + (start - r.start))) }
                } else if r.fromParentProcess, let parent {
                    if parentSegments == nil { parentSegments = parent.segments(of: vma) }
                    out += parentSegments!.compactMap { $0.clipped(to: start..<end) }
                }
                i += 1
            }
        }
        if vma.status & VMAStatus.anonShared != 0, let object = sharedObjects[vma.shmid] {
            let first = vma.pgoff, last = vma.pgoff &+ (vma.end - vma.start)
            for r in object.runs where r.start < last && r.end > first {
                guard let off = r.fileOffset else { continue }
                let start = max(r.start, first), end = min(r.end, last)
                let address = vma.start + (start - first)
                // Private runs win where both exist (they are what the process saw).
                if out.contains(where: { $0.address < address + (end - start) && address < $0.address + $0.length }) { continue }
                out.append(Segment(address: address, length: end - start, file: object.pages, fileOffset: off + (start - r.start)))
            }
        }
        return out.sorted { $0.address < $1.address }
    }

    /// The parts of `vma` that can hold something other than zeros: its dumped pages and, for
    /// a file mapping whose file is there, the part the file covers. Sorted, may overlap.
    public func dataRanges(_ vma: VmaEntry) -> [(start: UInt64, end: UInt64)] {
        var out = dumpedRanges(vma)
        if let path = mappedFile(vma) {
            var st = stat()
            if stat(path, &st) == 0, UInt64(st.st_size) > vma.pgoff {
                let covered = UInt64(st.st_size) - vma.pgoff
                out.append((vma.start, vma.end - vma.start <= covered ? vma.end : vma.start + (covered + Self.pageSize - 1) / Self.pageSize * Self.pageSize))
            }
        }
        return out.sorted { $0.start < $1.start }
    }

    /// All dumped memory as segments contiguous both in the address space and in a pages
    /// file, by address.
    public var dumpedSegments: [Segment] {
        var out: [Segment] = []
        for vma in vmas {
            for s in segments(of: vma) {
                if let last = out.last, last.file === s.file, last.address &+ last.length == s.address,
                   last.fileOffset &+ last.length == s.fileOffset {
                    out[out.count - 1].length += s.length
                } else {
                    out.append(s)
                }
            }
        }
        return out
    }
}
