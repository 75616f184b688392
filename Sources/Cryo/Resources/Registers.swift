import CLinux
import Glibc

// General-purpose registers and the XSAVE area (x87/SSE/AVX/AVX-512/PKRU) of a thread, in
// CRIU's `thread_info_x86` form.

extension UserX86RegsEntry {
    /// The image form of ptrace's `user_regs_struct`.
    init(_ r: user_regs_struct) {
        self.init()
        r15 = r.r15; r14 = r.r14; r13 = r.r13; r12 = r.r12; bp = r.rbp; bx = r.rbx
        r11 = r.r11; r10 = r.r10; r9 = r.r9; r8 = r.r8; ax = r.rax; cx = r.rcx; dx = r.rdx
        si = r.rsi; di = r.rdi; origAx = r.orig_rax; ip = r.rip; cs = r.cs; flags = r.eflags
        sp = r.rsp; ss = r.ss; fsBase = r.fs_base; gsBase = r.gs_base; ds = r.ds; es = r.es
        fs = r.fs; gs = r.gs
        mode = .native
    }

    /// Back to ptrace's `user_regs_struct`.
    var userRegs: user_regs_struct {
        var r = user_regs_struct()
        r.r15 = r15; r.r14 = r14; r.r13 = r13; r.r12 = r12; r.rbp = bp; r.rbx = bx
        r.r11 = r11; r.r10 = r10; r.r9 = r9; r.r8 = r8; r.rax = ax; r.rcx = cx; r.rdx = dx
        r.rsi = si; r.rdi = di; r.orig_rax = origAx; r.rip = ip; r.cs = cs; r.eflags = flags
        r.rsp = sp; r.ss = ss; r.fs_base = fsBase; r.gs_base = gsBase; r.ds = ds; r.es = es
        r.fs = fs; r.gs = gs
        return r
    }
}

/// Registers as they must be saved in an image: a thread stopped inside an interrupted
/// system call is rewound so that, once restored, it makes the call again.
func registersForImage(_ stopped: user_regs_struct) -> user_regs_struct {
    var r = stopped
    guard Int64(bitPattern: r.orig_rax) >= 0 else { return r }
    switch Int64(bitPattern: r.rax) {
    case -512, -513, -514: // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
        r.rax = r.orig_rax
        r.rip -= 2
    case -516: // ERESTART_RESTARTBLOCK: the restart block cannot be carried over
        r.rax = UInt64(bitPattern: -Int64(EINTR))
    default:
        break
    }
    return r
}

/// The layout of the XSAVE area in ptrace's (standard, non-compacted) format on this CPU.
enum XSaveLayout {
    /// (component number, offset, size) from CPUID leaf 0xD for the components CRIU saves.
    static let components: [Int: (offset: Int, size: Int)] = {
        var result: [Int: (Int, Int)] = [:]
        for component: UInt32 in [2, 3, 4, 5, 6, 7, 9] {
            var eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0
            cl_cpuid_count(0xD, component, &eax, &ebx, &ecx, &edx)
            if eax != 0 { result[Int(component)] = (Int(ebx), Int(eax)) }
        }
        return result
    }()

    static let headerOffset = 512
}

private func words32(_ b: [UInt8], _ offset: Int, _ count: Int) -> [UInt32] {
    guard offset + count * 4 <= b.count else { return [] }
    return (0..<count).map { i in b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + i * 4, as: UInt32.self) } }
}

private func words64(_ b: [UInt8], _ offset: Int, _ count: Int) -> [UInt64] {
    guard offset + count * 8 <= b.count else { return [] }
    return (0..<count).map { i in b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + i * 8, as: UInt64.self) } }
}

private func store<T: FixedWidthInteger>(_ values: [T], into b: inout [UInt8], at offset: Int) {
    guard offset + values.count * MemoryLayout<T>.size <= b.count else { return }
    b.withUnsafeMutableBytes { raw in
        for (i, v) in values.enumerated() {
            raw.storeBytes(of: v.littleEndian, toByteOffset: offset + i * MemoryLayout<T>.size, as: T.self)
        }
    }
}

extension UserX86FpregsEntry {
    /// The image form of an NT_X86_XSTATE register set.
    init(xstate b: [UInt8]) {
        self.init()
        let legacy = words32(b, 0, 8)
        cwd = legacy[0] & 0xffff
        swd = legacy[0] >> 16
        twd = legacy[1] & 0xffff
        fop = legacy[1] >> 16
        rip = words64(b, 8, 1)[0]
        rdp = words64(b, 16, 1)[0]
        mxcsr = legacy[6]
        mxcsrMask = legacy[7]
        stSpace = words32(b, 32, 32)
        xmmSpace = words32(b, 160, 64)
        padding = words32(b, 416, 24)
        guard b.count > XSaveLayout.headerOffset + 8 else { return }
        var x = UserX86XsaveEntry()
        x.xstateBv = words64(b, XSaveLayout.headerOffset, 1)[0]
        let c = XSaveLayout.components
        if let (o, s) = c[2] { x.ymmhSpace = words32(b, o, s / 4) }
        if let (o, s) = c[3] { x.bndregState = words64(b, o, s / 8) }
        if let (o, s) = c[4] { x.bndcsrState = words64(b, o, s / 8) }
        if let (o, s) = c[5] { x.opmaskReg = words64(b, o, s / 8) }
        if let (o, s) = c[6] { x.zmmUpper = words64(b, o, s / 8) }
        if let (o, s) = c[7] { x.hi16Zmm = words64(b, o, s / 8) }
        if let (o, s) = c[9] { x.pkru = words32(b, o, s / 4) }
        xsave = x
    }

    /// Writes this state over `b`, an NT_X86_XSTATE buffer of the right size for this CPU.
    func apply(to b: inout [UInt8]) {
        store([UInt16(truncatingIfNeeded: cwd), UInt16(truncatingIfNeeded: swd), UInt16(truncatingIfNeeded: twd),
               UInt16(truncatingIfNeeded: fop)], into: &b, at: 0)
        store([rip, rdp], into: &b, at: 8)
        store([mxcsr, mxcsrMask], into: &b, at: 24)
        store(stSpace, into: &b, at: 32)
        store(xmmSpace, into: &b, at: 160)
        guard hasXsave, b.count > XSaveLayout.headerOffset + 16 else { return }
        let c = XSaveLayout.components
        // Only components this CPU has; xcomp_bv stays 0 (standard format).
        var bv = xsave.xstateBv & 0x3
        func put32(_ id: Int, _ v: [UInt32]) { if let (o, s) = c[id], v.count * 4 == s { store(v, into: &b, at: o); bv |= xsave.xstateBv & (1 << UInt64(id)) } }
        func put64(_ id: Int, _ v: [UInt64]) { if let (o, s) = c[id], v.count * 8 == s { store(v, into: &b, at: o); bv |= xsave.xstateBv & (1 << UInt64(id)) } }
        put32(2, xsave.ymmhSpace)
        put64(3, xsave.bndregState)
        put64(4, xsave.bndcsrState)
        put64(5, xsave.opmaskReg)
        put64(6, xsave.zmmUpper)
        put64(7, xsave.hi16Zmm)
        put32(9, xsave.pkru)
        store([bv, 0], into: &b, at: XSaveLayout.headerOffset)
    }
}
