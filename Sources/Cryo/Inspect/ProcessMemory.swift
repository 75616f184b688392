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

/// The memory of one dumped process, read from its images: `mm-PID.img` (the mappings),
/// `pagemap-PID.img` (which pages were dumped) and `pages-N.img` (their contents, in pagemap
/// order). A page that was not dumped reads as the mapped file's content (file mappings whose
/// file still exists) or as zeros (never touched).
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
        /// The first address.
        public let start: UInt64
        /// The number of pages.
        public let pages: UInt64
        /// Where the run's bytes are in the pages file; nil if they are not in this image (in
        /// a parent image or served lazily).
        public let fileOffset: UInt64?
        /// The address after the run.
        public var end: UInt64 { start &+ pages &* ProcessMemory.pageSize }
    }

    /// Where the bytes of an address come from.
    public enum Source: Equatable, Sendable {
        /// Dumped: in the pages file.
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
    /// The mappings, by start address.
    public let vmas: [VmaEntry]
    /// The dumped runs, by address.
    public let runs: [Run]
    /// The pages file (`pages-N.img`), if there is a pagemap.
    public let pagesPath: String?
    /// The pagemap file.
    public let pagemapPath: String
    /// The size of the pages file.
    public let pagesFileSize: UInt64
    private let pagesFD: Int32
    private let runStarts: [UInt64]
    private let vmaStarts: [UInt64]
    private let files: [UInt32: FileEntry]
    private var mappedFiles: [UInt32: Int32] = [:]

    /// Opens the memory of process `process` of `dump`.
    public init(_ dump: DumpImages, _ process: ProcessImages) throws {
        pid = process.pid
        let mmPath = dump.path("mm-\(process.pid).img")
        for v in process.mm?.vmas ?? [] where !(v.start < v.end && (v.end <= Self.userSpaceEnd || v.status & VMAStatus.vsyscall != 0)) {
            throw ImageFormatError(.corrupt, file: mmPath, offset: nil,
                                   "mapping \(hexString(v.start))-\(hexString(v.end)) is not a valid user-space range")
        }
        vmas = (process.mm?.vmas ?? []).sorted { $0.start < $1.start }
        files = dump.files
        pagemapPath = dump.path("pagemap-\(process.pid).img")
        var runs: [Run] = []
        if let pagemap = process.pagemap {
            let path = dump.path("pages-\(pagemap.head.pagesID).img")
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw ImageFormatError(.inconsistent, file: path, offset: nil,
                                       "cannot open the pages named by \(pagemapPath): \(String(cString: strerror(errno)))")
            }
            var st = stat()
            fstat(fd, &st)
            pagesPath = path
            pagesFD = fd
            pagesFileSize = UInt64(st.st_size)
            // CRIU: PE_PARENT 1 (pages in the parent image), PE_LAZY 2 (may be restored lazily),
            // PE_PRESENT 4 (in this pages file); without flags, in_parent means PE_PARENT and
            // otherwise PE_PRESENT. Some Cryo dumps mark their pages PE_LAZY alone although
            // they are in the file: when the file holds more than the PE_PRESENT entries
            // account for, the lazy ones are in it too (a lazy CRIU dump leaves it empty). A
            // pages file shorter than that is then reported when read, not taken as "no pages".
            let flags = pagemap.entries.map { e -> UInt32 in e.hasFlags ? e.flags : (e.inParent ? 1 : 4) }
            func bytes(_ included: (UInt32) -> Bool) -> UInt64 {
                zip(pagemap.entries, flags).reduce(0) { included($1.1) ? $0 &+ UInt64($1.0.nrPages) &* Self.pageSize : $0 }
            }
            let strict = bytes { $0 & 4 != 0 }
            let lazyInFile = pagesFileSize > strict
            var offset: UInt64 = 0
            for (e, f) in zip(pagemap.entries, flags) {
                guard e.vaddr % Self.pageSize == 0, e.vaddr < Self.userSpaceEnd,
                      UInt64(e.nrPages) <= (Self.userSpaceEnd - e.vaddr) / Self.pageSize else {
                    throw ImageFormatError(.corrupt, file: pagemapPath, offset: nil,
                                           "entry \(hexString(e.vaddr, prefix: true)) + \(e.nrPages) pages is not a valid user-space range")
                }
                let present = f & 4 != 0 || (lazyInFile && f & 1 == 0 && f & 2 != 0)
                runs.append(Run(start: e.vaddr, pages: UInt64(e.nrPages), fileOffset: present ? offset : nil))
                if present { offset = offset &+ UInt64(e.nrPages) &* Self.pageSize }
            }
            posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        } else {
            pagesPath = nil
            pagesFD = -1
            pagesFileSize = 0
        }
        self.runs = runs.sorted { $0.start < $1.start }
        runStarts = self.runs.map(\.start)
        vmaStarts = vmas.map(\.start)
    }

    deinit {
        if pagesFD >= 0 { close(pagesFD) }
        for fd in mappedFiles.values where fd >= 0 { close(fd) }
    }

    /// The bytes the pagemap says the pages file holds.
    public var dumpedBytes: UInt64 { runs.reduce(0) { $0 &+ ($1.fileOffset == nil ? 0 : $1.pages &* Self.pageSize) } }

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
    func runIndex(containing address: UInt64) -> Int? {
        var lo = 0, hi = runs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if runs[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo < runs.count && runs[lo].start <= address ? lo : nil
    }

    /// The first of the sorted `starts` above `address` (or UInt64.max).
    private func firstStart(after address: UInt64, in starts: [UInt64]) -> UInt64 {
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

    /// Where the bytes at `address` come from.
    public func source(of address: UInt64) -> Source {
        guard let vma = vma(containing: address) else { return .unmapped }
        if let i = runIndex(containing: address) { return runs[i].fileOffset == nil ? .unavailable : .dumped }
        if let path = mappedFile(vma) { return access(path, R_OK) == 0 ? .file(path) : .unavailable }
        return .zero
    }

    /// Reads `count` bytes of the pages file at `offset` into `buffer`.
    func readPages(_ buffer: UnsafeMutableRawPointer, offset: UInt64, count: Int) throws {
        guard let pagesPath else { return }
        guard offset <= pagesFileSize, UInt64(count) <= pagesFileSize - offset else {
            throw ImageFormatError(.truncated, file: pagesPath, offset: Int(clamping: pagesFileSize),
                                   "\(pagemapPath) describes pages up to byte \(offset &+ UInt64(count)), the file has \(pagesFileSize)")
        }
        var done = 0
        while done < count {
            let n = pread(pagesFD, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw ImageFormatError(.io, file: pagesPath, offset: Int(offset) + done,
                                       n == 0 ? "unexpected end of file" : "cannot read: \(String(cString: strerror(errno)))")
            }
            done += n
        }
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

    /// Fills `buffer` with the bytes at `address` (see ``read(_:count:)``); the buffer must be
    /// zeroed by the caller or is zeroed where nothing is read.
    public func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var at = address
        var done = 0
        while done < buffer.count {
            let want = buffer.count - done
            let dest = buffer.baseAddress! + done
            if let i = runIndex(containing: at) {
                let run = runs[i]
                let n = Int(min(UInt64(want), run.end - at))
                if let base = run.fileOffset {
                    try readPages(dest, offset: base + (at - run.start), count: n)
                } else {
                    memset(dest, 0, n)
                }
                at += UInt64(n); done += n
                continue
            }
            // Not dumped: up to the next run or the end of the mapping.
            let nextRun = firstStart(after: at, in: runStarts)
            guard let vma = vma(containing: at) else {
                let nextVMA = firstStart(after: at, in: vmaStarts)
                let n = Int(min(UInt64(want), min(nextRun, nextVMA) &- at))
                memset(dest, 0, n)
                at += UInt64(n); done += n
                continue
            }
            let n = Int(min(UInt64(want), min(nextRun, vma.end) - at))
            memset(dest, 0, n)
            if mappedFile(vma) != nil {
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
            at += UInt64(n); done += n
        }
    }

    /// The parts of `vma` that can hold something other than zeros: its dumped runs and, for
    /// a file mapping whose file is there, the part the file covers. Sorted, may overlap.
    public func dataRanges(_ vma: VmaEntry) -> [(start: UInt64, end: UInt64)] {
        var out: [(start: UInt64, end: UInt64)] = []
        if let path = mappedFile(vma) {
            var st = stat()
            if stat(path, &st) == 0, UInt64(st.st_size) > vma.pgoff {
                let covered = UInt64(st.st_size) - vma.pgoff
                out.append((vma.start, vma.end - vma.start <= covered ? vma.end : vma.start + (covered + Self.pageSize - 1) / Self.pageSize * Self.pageSize))
            }
        }
        var i = runIndex(containing: vma.start) ?? runs.firstIndex { $0.start >= vma.start } ?? runs.count
        while i < runs.count, runs[i].start < vma.end {
            if runs[i].fileOffset != nil { out.append((max(runs[i].start, vma.start), min(runs[i].end, vma.end))) }
            i += 1
        }
        return out.sorted { $0.start < $1.start }
    }

    /// The dumped memory as segments contiguous both in the address space and in the pages
    /// file: (first address, pages-file offset, length).
    public var dumpedSegments: [(address: UInt64, fileOffset: UInt64, length: UInt64)] {
        var out: [(address: UInt64, fileOffset: UInt64, length: UInt64)] = []
        for r in runs {
            guard let off = r.fileOffset, r.pages > 0 else { continue }
            let len = r.pages &* Self.pageSize
            if let last = out.last, last.address &+ last.length == r.start, last.fileOffset &+ last.length == off {
                out[out.count - 1].length += len
            } else {
                out.append((r.start, off, len))
            }
        }
        return out
    }
}
