/// The pieces of an x86_64 ELF core file (the layout the kernel's `binfmt_elf.c` writes and
/// gdb reads): the file header, program headers, notes, and the C structures in the notes.
enum ElfCore {
    static let ptLoad: UInt32 = 1
    static let ptNote: UInt32 = 4
    static let pfX: UInt32 = 1, pfW: UInt32 = 2, pfR: UInt32 = 4

    static let ntPrstatus: UInt32 = 1
    static let ntFpregset: UInt32 = 2
    static let ntPrpsinfo: UInt32 = 3
    static let ntAuxv: UInt32 = 6
    static let ntX86Xstate: UInt32 = 0x202
    static let ntSiginfo: UInt32 = 0x5349_4749
    static let ntFile: UInt32 = 0x4649_4c45

    static let headerSize = 64
    static let programHeaderSize = 56

    /// A note: name, type and contents, encoded as `Elf64_Nhdr` + name + desc, each padded
    /// to 4 bytes.
    struct Note {
        let name: String
        let type: UInt32
        let desc: [UInt8]

        var encoded: [UInt8] {
            var b = LittleEndianWriter()
            let name = Array(self.name.utf8) + [0]
            b.u32(UInt32(name.count))
            b.u32(UInt32(desc.count))
            b.u32(type)
            b.bytes(name)
            b.align(4)
            b.bytes(desc)
            b.align(4)
            return b.data
        }
    }

    /// A program header.
    struct Segment {
        var type: UInt32
        var flags: UInt32
        var offset: UInt64
        var vaddr: UInt64
        var fileSize: UInt64
        var memorySize: UInt64
        var align: UInt64

        func encode(into b: inout LittleEndianWriter) {
            b.u32(type); b.u32(flags); b.u64(offset); b.u64(vaddr); b.u64(0 /* paddr */)
            b.u64(fileSize); b.u64(memorySize); b.u64(align)
        }
    }

    /// `Elf64_Ehdr` of an x86_64 core with `segments` program headers right after it.
    static func fileHeader(segments: Int) -> [UInt8] {
        var b = LittleEndianWriter()
        b.bytes([0x7f, 0x45, 0x4c, 0x46, 2 /* 64-bit */, 1 /* little-endian */, 1 /* version */, 0 /* SysV ABI */])
        b.bytes([UInt8](repeating: 0, count: 8))
        b.u16(4)   // ET_CORE
        b.u16(62)  // EM_X86_64
        b.u32(1)   // EV_CURRENT
        b.u64(0)   // entry
        b.u64(UInt64(headerSize)) // phoff
        b.u64(0)   // shoff
        b.u32(0)   // flags
        b.u16(UInt16(headerSize))
        b.u16(UInt16(programHeaderSize))
        b.u16(UInt16(segments))
        b.u16(64)  // shentsize
        b.u16(0)   // shnum
        b.u16(0)   // shstrndx
        return b.data
    }

    /// The general registers in `elf_gregset_t` (= `user_regs_struct`) order.
    static func gregs(_ r: UserX86RegsEntry) -> [UInt64] {
        [r.r15, r.r14, r.r13, r.r12, r.bp, r.bx, r.r11, r.r10, r.r9, r.r8, r.ax, r.cx, r.dx, r.si, r.di,
         r.origAx, r.ip, r.cs, r.flags, r.sp, r.ss, r.fsBase, r.gsBase, r.ds, r.es, r.fs, r.gs]
    }

    /// `struct elf_prstatus` (336 bytes).
    static func prstatus(signal: Int32, pending: UInt64, blocked: UInt64, pid: UInt32, ppid: UInt32, pgrp: UInt32, sid: UInt32,
                         registers: UserX86RegsEntry) -> [UInt8] {
        var b = LittleEndianWriter()
        b.i32(signal); b.i32(0); b.i32(0)         // pr_info: si_signo, si_code, si_errno
        b.u16(UInt16(truncatingIfNeeded: signal)) // pr_cursig
        b.align(8)
        b.u64(pending)                             // pr_sigpend
        b.u64(blocked)                             // pr_sighold
        b.u32(pid); b.u32(ppid); b.u32(pgrp); b.u32(sid)
        b.bytes([UInt8](repeating: 0, count: 64))  // pr_utime, pr_stime, pr_cutime, pr_cstime
        for v in gregs(registers) { b.u64(v) }     // pr_reg
        b.i32(1)                                   // pr_fpvalid
        b.align(8)
        return b.data
    }

    /// `struct elf_prpsinfo` (136 bytes).
    static func prpsinfo(state: UInt8, nice: Int8, flags: UInt64, uid: UInt32, gid: UInt32, pid: UInt32, ppid: UInt32,
                         pgrp: UInt32, sid: UInt32, command: String, arguments: String) -> [UInt8] {
        var b = LittleEndianWriter()
        let names: [UInt8] = Array("RSDTZW".utf8)
        b.bytes([state, state < names.count ? names[Int(state)] : UInt8(ascii: "?"), state == 4 ? 1 : 0, UInt8(bitPattern: nice)])
        b.align(8)
        b.u64(flags)
        b.u32(uid); b.u32(gid)
        b.u32(pid); b.u32(ppid); b.u32(pgrp); b.u32(sid)
        b.fixedString(command, 16)
        b.fixedString(arguments, 80)
        return b.data
    }

    /// `user_fxsr_struct` (the 512-byte FXSAVE image) from the image's FPU state.
    static func fpregset(_ f: UserX86FpregsEntry) -> [UInt8] {
        var b = LittleEndianWriter()
        b.u16(UInt16(truncatingIfNeeded: f.cwd)); b.u16(UInt16(truncatingIfNeeded: f.swd))
        b.u16(UInt16(truncatingIfNeeded: f.twd)); b.u16(UInt16(truncatingIfNeeded: f.fop))
        b.u64(f.rip); b.u64(f.rdp); b.u32(f.mxcsr); b.u32(f.mxcsrMask)
        for (words, count) in [(f.stSpace, 32), (f.xmmSpace, 64), (f.padding, 24)] {
            for i in 0..<count { b.u32(i < words.count ? words[i] : 0) }
        }
        return b.data
    }

    /// `NT_FILE`: count, page size, (start, end, page offset) per file mapping, then the names.
    static func fileNote(_ mappings: [(start: UInt64, end: UInt64, offset: UInt64, path: String)]) -> [UInt8] {
        var b = LittleEndianWriter()
        b.u64(UInt64(mappings.count))
        b.u64(ProcessMemory.pageSize)
        for m in mappings { b.u64(m.start); b.u64(m.end); b.u64(m.offset / ProcessMemory.pageSize) }
        for m in mappings { b.bytes(Array(m.path.utf8) + [0]) }
        return b.data
    }
}

/// Appends little-endian values to a byte array.
struct LittleEndianWriter {
    var data: [UInt8] = []

    mutating func u16(_ v: UInt16) { data += [UInt8(v & 0xff), UInt8(v >> 8)] }
    mutating func u32(_ v: UInt32) { for i in 0..<4 { data.append(UInt8(v >> (8 * UInt32(i)) & 0xff)) } }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func u64(_ v: UInt64) { for i in 0..<8 { data.append(UInt8(v >> (8 * UInt64(i)) & 0xff)) } }
    mutating func bytes(_ b: [UInt8]) { data += b }
    mutating func align(_ n: Int) { while data.count % n != 0 { data.append(0) } }

    /// `s` in a NUL-padded field of `size` bytes (always NUL-terminated).
    mutating func fixedString(_ s: String, _ size: Int) {
        let b = Array(s.utf8.prefix(size - 1))
        data += b + [UInt8](repeating: 0, count: size - b.count)
    }
}
