import Glibc

/// Writes an ELF core file for a dumped process (what `criu-coredump` does), so that
/// `gdb PROGRAM core.PID` shows its threads, their backtraces and the values of variables at
/// the moment of the dump.
///
/// Notes, in the kernel's order: for the first thread (the leader) `NT_PRSTATUS`, then the
/// process's `NT_PRPSINFO`, `NT_SIGINFO`, `NT_AUXV`, `NT_FILE`, then its `NT_FPREGSET` and
/// `NT_X86_XSTATE`; for every other thread `NT_PRSTATUS`, `NT_FPREGSET`, `NT_X86_XSTATE`.
/// Then one `PT_LOAD` per mapping with its contents as the process saw them: dumped pages,
/// the mapped file's contents for pages that were not dumped, zeros for untouched memory
/// (left as holes in the file, so the core takes no disk for them).
///
/// The process was frozen, not killed by a signal: the signal in the notes is 0.
public enum CoreDump {
    /// What was written.
    public struct Summary: Sendable {
        /// The core file.
        public let path: String
        /// The process.
        public let pid: UInt32
        /// Its threads' ids, leader first.
        public let threads: [UInt32]
        /// Number of `PT_LOAD` segments.
        public let segments: Int
        /// The size of the core file (apparent; zero pages are holes).
        public let size: UInt64
    }

    /// Writes the core of process `pid` of `dump` to `path`.
    public static func write(_ dump: DumpImages, pid: UInt32, to path: String) throws -> Summary {
        let process = try dump.process(pid)
        guard !process.isZombie, let mm = process.mm else {
            throw ImageFormatError(.inconsistent, file: dump.path("core-\(pid).img"), offset: nil,
                                   "process \(pid) is a zombie: it has no memory or registers to put in a core")
        }
        for (tid, core) in process.cores {
            guard core.mtype == .x8664, core.hasThreadInfo else {
                throw ImageFormatError(.unsupportedKind, file: dump.path("core-\(tid).img"), offset: nil,
                                       "thread \(tid) is not an x86_64 thread with registers (\(core.mtype))")
            }
            guard core.threadInfo.gpregs.mode != .compat else {
                throw ImageFormatError(.unsupportedKind, file: dump.path("core-\(tid).img"), offset: nil,
                                       "thread \(tid) runs 32-bit code; only 64-bit cores are written")
            }
        }
        let memory = try ProcessMemory(dump, process)
        let threads = process.cores.filter { $0.tid == pid } + process.cores.filter { $0.tid != pid }
        let leader = process.leader

        // Notes.
        var notes: [ElfCore.Note] = []
        let entry = process.entry
        for (index, thread) in threads.enumerated() {
            let tc = thread.core.threadCore
            let blocked = tc.hasBlkSigset ? tc.blkSigset : (leader.hasTc ? leader.tc.blkSigset : 0)
            notes.append(ElfCore.Note(name: "CORE", type: ElfCore.ntPrstatus, desc: ElfCore.prstatus(
                signal: 0, pending: 0, blocked: blocked, pid: thread.tid, ppid: entry.ppid, pgrp: entry.pgid, sid: entry.sid,
                registers: thread.core.threadInfo.gpregs)))
            if index == 0 {
                notes.append(ElfCore.Note(name: "CORE", type: ElfCore.ntPrpsinfo, desc: psinfo(process, memory, mm)))
                notes.append(ElfCore.Note(name: "CORE", type: ElfCore.ntSiginfo, desc: [UInt8](repeating: 0, count: 128)))
                notes.append(ElfCore.Note(name: "CORE", type: ElfCore.ntAuxv, desc: auxv(mm)))
                let files = memory.vmas.compactMap { v in memory.mappedFile(v).map { (v.start, v.end, v.pgoff, $0) } }
                if !files.isEmpty { notes.append(ElfCore.Note(name: "CORE", type: ElfCore.ntFile, desc: ElfCore.fileNote(files))) }
            }
            let fp = thread.core.threadInfo.fpregs
            notes.append(ElfCore.Note(name: "CORE", type: ElfCore.ntFpregset, desc: ElfCore.fpregset(fp)))
            notes.append(ElfCore.Note(name: "LINUX", type: ElfCore.ntX86Xstate, desc: xstate(fp)))
        }
        let noteBytes = notes.flatMap(\.encoded)

        // Layout: header, program headers, notes, then page-aligned segment contents.
        let page = ProcessMemory.pageSize
        let headers = ElfCore.headerSize + ElfCore.programHeaderSize * (1 + memory.vmas.count)
        guard 1 + memory.vmas.count < 0xffff else {
            throw ImageFormatError(.unsupportedKind, file: dump.path("mm-\(pid).img"), offset: nil,
                                   "\(memory.vmas.count) mappings: too many for an ELF core without extended numbering")
        }
        var segments = [ElfCore.Segment(type: ElfCore.ptNote, flags: 0, offset: UInt64(headers), vaddr: 0,
                                        fileSize: UInt64(noteBytes.count), memorySize: 0, align: 1)]
        var offset = (UInt64(headers + noteBytes.count) + page - 1) / page * page
        let vdso = ownVDSO()
        for vma in memory.vmas {
            let size = vma.end &- vma.start
            var flags: UInt32 = 0
            if vma.prot & 1 != 0 { flags |= ElfCore.pfR }
            if vma.prot & 2 != 0 { flags |= ElfCore.pfW }
            if vma.prot & 4 != 0 { flags |= ElfCore.pfX }
            let fileSize = contents(vma, vdso: vdso) == .empty ? 0 : size
            segments.append(ElfCore.Segment(type: ElfCore.ptLoad, flags: flags, offset: offset, vaddr: vma.start,
                                            fileSize: fileSize, memorySize: size, align: page))
            let next = offset.addingReportingOverflow(fileSize)
            guard !next.overflow, next.partialValue < UInt64(Int64.max) else {
                throw ImageFormatError(.corrupt, file: dump.path("mm-\(pid).img"), offset: nil, "the mappings add up to more than a file can hold")
            }
            offset = next.partialValue
        }

        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ImageFormatError(.io, file: path, offset: nil, "cannot create: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var head = LittleEndianWriter()
        head.bytes(ElfCore.fileHeader(segments: segments.count))
        for s in segments { s.encode(into: &head) }
        head.bytes(noteBytes)
        try writeAll(fd, head.data, at: 0, path: path)

        let chunkSize = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        for (vma, segment) in zip(memory.vmas, segments.dropFirst()) where segment.fileSize > 0 {
            if contents(vma, vdso: vdso) == .vdso, let vdso {
                try writeAll(fd, vdso.bytes, at: segment.offset, path: path)
                continue
            }
            // Only what can be non-zero is read (dumped pages, the mapped file); the rest, and
            // zero pages, stay holes.
            for range in memory.dataRanges(vma) {
                var at = range.start
                while at < range.end {
                    let n = Int(min(UInt64(chunkSize), range.end - at))
                    try buffer.withUnsafeMutableBytes { raw in
                        try memory.read(at, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<n]))
                    }
                    if !buffer[0..<n].allSatisfy({ $0 == 0 }) {
                        try writeAll(fd, Array(buffer[0..<n]), at: segment.offset + (at - vma.start), path: path)
                    }
                    at += UInt64(n)
                }
            }
        }
        guard ftruncate(fd, off_t(offset)) == 0 else {
            throw ImageFormatError(.io, file: path, offset: Int(offset), "cannot set the size: \(String(cString: strerror(errno)))")
        }
        return Summary(path: path, pid: pid, threads: threads.map(\.tid), segments: segments.count - 1, size: offset)
    }

    private enum Contents { case empty, memory, vdso }

    /// What a mapping's segment holds: nothing for kernel-provided pages the image cannot
    /// have (`[vsyscall]`, `[vvar]`) and for inaccessible mappings; this machine's vDSO for
    /// `[vdso]` when it has the same size (the image does not hold the vDSO's pages, and gdb
    /// reads its symbols from them); the process's memory otherwise.
    private static func contents(_ vma: VmaEntry, vdso: (start: UInt64, bytes: [UInt8])?) -> Contents {
        if vma.status & (VMAStatus.vsyscall | VMAStatus.vvar) != 0 { return .empty }
        if vma.status & VMAStatus.vdso != 0 {
            guard let vdso, UInt64(vdso.bytes.count) == vma.end &- vma.start else { return .empty }
            return .vdso
        }
        if vma.prot & 7 == 0 { return .empty }
        return .memory
    }

    /// This process's own `[vdso]` (the same code as the dumped one on the same kernel).
    private static func ownVDSO() -> (start: UInt64, bytes: [UInt8])? {
        guard let maps = try? ImageReader.bytes("/proc/self/maps") else { return nil }
        for line in String(decoding: maps, as: UTF8.self).split(separator: "\n") where line.hasSuffix("[vdso]") {
            let range = line.split(separator: " ")[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16),
                  end > start, end - start <= 1 << 20, let p = UnsafeRawPointer(bitPattern: UInt(start)) else { return nil }
            return (start, Array(UnsafeRawBufferPointer(start: p, count: Int(end - start))))
        }
        return nil
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: UInt64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(offset) + off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw ImageFormatError(.io, file: path, offset: Int(offset) + done, "cannot write: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// `NT_PRPSINFO`: state, ids, credentials, command name and arguments (read from the
    /// process's memory between `mm_arg_start` and `mm_arg_end`).
    private static func psinfo(_ process: ProcessImages, _ memory: ProcessMemory, _ mm: MmEntry) -> [UInt8] {
        let leader = process.leader
        let creds = leader.threadCore.creds
        var arguments = ""
        if mm.mmArgEnd > mm.mmArgStart, mm.mmArgEnd - mm.mmArgStart < 1 << 20,
           let raw = try? memory.read(mm.mmArgStart, count: Int(mm.mmArgEnd - mm.mmArgStart)) {
            var bytes = raw
            while bytes.last == 0 { bytes.removeLast() }
            arguments = String(decoding: bytes.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        }
        let state: UInt8 = process.state == "stopped" ? 3 : 1
        return ElfCore.prpsinfo(state: state, nice: Int8(clamping: leader.threadCore.schedNice), flags: UInt64(leader.tc.flags),
                                uid: creds.uid, gid: creds.gid, pid: process.pid, ppid: process.entry.ppid,
                                pgrp: process.entry.pgid, sid: process.entry.sid, command: process.command, arguments: arguments)
    }

    /// `NT_AUXV`: the saved auxiliary vector up to and including its `AT_NULL` pair.
    private static func auxv(_ mm: MmEntry) -> [UInt8] {
        var b = LittleEndianWriter()
        let v = mm.mmSavedAuxv
        var i = 0
        while i + 1 < v.count {
            b.u64(v[i]); b.u64(v[i + 1])
            if v[i] == 0 { break }
            i += 2
        }
        if v.count < 2 || i + 1 >= v.count { b.u64(0); b.u64(0) }
        return b.data
    }

    /// `NT_X86_XSTATE`: the XSAVE area in the kernel's standard format, rebuilt with
    /// `UserX86FpregsEntry.apply(to:)`. Bytes 464-471 (`sw_reserved`) carry XCR0, which gdb
    /// reads to know which components are there; the image keeps them in `padding`.
    private static func xstate(_ fp: UserX86FpregsEntry) -> [UInt8] {
        var xcr0: UInt64 = fp.padding.count >= 14 ? UInt64(fp.padding[12]) | UInt64(fp.padding[13]) << 32 : 0
        if xcr0 == 0 {
            xcr0 = 3 | (fp.hasXsave ? fp.xsave.xstateBv : 0)
            for (id, _) in XSaveLayout.components { xcr0 |= 1 << UInt64(id) }
        }
        var size = XSaveLayout.headerOffset + 64
        for (id, c) in XSaveLayout.components where xcr0 & (1 << UInt64(id)) != 0 { size = max(size, c.offset + c.size) }
        var buffer = [UInt8](repeating: 0, count: size)
        fp.apply(to: &buffer)
        var padding = LittleEndianWriter()
        for i in 0..<24 { padding.u32(i < fp.padding.count ? fp.padding[i] : 0) }
        buffer.replaceSubrange(416..<512, with: padding.data)
        for i in 0..<8 { buffer[464 + i] = UInt8(xcr0 >> (8 * UInt64(i)) & 0xff) }
        if !fp.hasXsave {
            // Without XSAVE components: x87 and SSE are valid (xstate_bv).
            buffer[XSaveLayout.headerOffset] = 3
        }
        return buffer
    }
}
