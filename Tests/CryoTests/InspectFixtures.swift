@testable import Cryo
import Foundation
import Glibc
import SwiftProtobuf

/// A small synthetic dump for the inspection tests: one live process (pid 100, threads 100
/// and 101) with file, heap and stack mappings, a zombie child (102), descriptors of several
/// kinds, and pages whose contents the tests know.
struct InspectFixture {
    let directory: String
    /// The file mapped by the exe and data mappings (3 pages: 'A's, 'B's starting with
    /// "FILETEXT", 'C's).
    let mappedFile: String

    static let heap: UInt64 = 0x1000_0000        // 5 MiB anonymous, 1100 + 2 pages dumped
    static let heapEnd: UInt64 = 0x1050_0000
    static let data: UInt64 = 0x2000_0000        // file-backed, pgoff 0x1000, 2 pages
    static let exe: UInt64 = 0x40_0000           // file-backed, pgoff 0, 1 page
    static let stack: UInt64 = 0x7ff0_0000_0000  // 4 pages, the last one dumped
    static let stackEnd: UInt64 = 0x7ff0_0000_4000
    /// Where "NEEDLE-ACROSS" sits: across the 4 MiB boundary of the memory search's chunks.
    static let needleAddress: UInt64 = heap + (4 << 20) - 5
    static let needle = "NEEDLE-ACROSS"
    static let argsAddress: UInt64 = stackEnd - 0x100
    static let args = "argv0\0arg1\0"

    /// Frames entries as an image of kind `magic` (entries may lack required fields).
    static func image(_ magic: ImageMagic, _ entries: [any SwiftProtobuf.Message]) throws -> [UInt8] {
        var out = ImageCodec.header(for: magic)
        for e in entries {
            let payload: [UInt8] = try e.serializedBytes(partial: true)
            out += le32(UInt32(payload.count)) + payload
        }
        return out
    }

    static func write(_ path: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static func makeTemporaryDirectory() -> String {
        var template = Array("/tmp/cryo-inspect-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    static func regs(ip: UInt64, sp: UInt64) -> UserX86RegsEntry {
        var r = UserX86RegsEntry()
        r.r15 = 15; r.r14 = 14; r.r13 = 13; r.r12 = 12; r.bp = sp + 0x40; r.bx = 3; r.r11 = 0x246; r.r10 = 10
        r.r9 = 9; r.r8 = 8; r.ax = 0xffff_ffff_ffff_fffc; r.cx = 1; r.dx = 2; r.si = 4; r.di = 5; r.origAx = 230
        r.ip = ip; r.cs = 0x33; r.flags = 0x246; r.sp = sp; r.ss = 0x2b; r.fsBase = 0x7ff0_1000_0000; r.gsBase = 0
        r.ds = 0; r.es = 0; r.fs = 0; r.gs = 0; r.mode = .native
        return r
    }

    static func fpregs() -> UserX86FpregsEntry {
        var f = UserX86FpregsEntry()
        f.cwd = 0x37f; f.swd = 0; f.twd = 0; f.fop = 0; f.rip = 0; f.rdp = 0; f.mxcsr = 0x1f80; f.mxcsrMask = 0xffff
        f.stSpace = [UInt32](repeating: 0, count: 32)
        f.xmmSpace = (0..<64).map { UInt32($0) }
        var padding = [UInt32](repeating: 0, count: 24)
        padding[12] = 0x7 // XCR0: x87, SSE, AVX
        f.padding = padding
        var x = UserX86XsaveEntry()
        x.xstateBv = 7
        x.ymmhSpace = (0..<64).map { UInt32($0 + 1000) }
        f.xsave = x
        return f
    }

    /// Writes the fixture into a new temporary directory.
    static func make() throws -> InspectFixture {
        let dir = makeTemporaryDirectory()
        let mapped = "\(dir)/mapped.bin"
        var file = [UInt8](repeating: UInt8(ascii: "A"), count: 4096)
        file += Array("FILETEXT".utf8) + [UInt8](repeating: UInt8(ascii: "B"), count: 4096 - 8)
        file += [UInt8](repeating: UInt8(ascii: "C"), count: 4096)
        try write(mapped, file)

        var inventory = InventoryEntry()
        inventory.imgVersion = 2
        inventory.fdinfoPerID = true
        inventory.lsmtype = .noLsm
        inventory.dumpUptime = 3_723_000_000
        try write("\(dir)/inventory.img", image(.inventory, [inventory]))

        var p = PstreeEntry()
        p.pid = 100; p.ppid = 0; p.pgid = 100; p.sid = 100; p.threads = [100, 101]
        var z = PstreeEntry()
        z.pid = 102; z.ppid = 100; z.pgid = 100; z.sid = 100; z.threads = [102]
        try write("\(dir)/pstree.img", image(.pstree, [p, z]))

        var leader = CoreEntry()
        leader.mtype = .x8664
        var ti = ThreadInfoX86()
        ti.clearTidAddr_p = 0
        ti.gpregs = regs(ip: exe + 0x10, sp: stack + 0x3000)
        ti.fpregs = fpregs()
        leader.threadInfo = ti
        var tc = TaskCoreEntry()
        tc.taskState = 1; tc.exitCode = 0; tc.personality = 0; tc.flags = 0x400000; tc.blkSigset = 0; tc.comm = "fixture"
        leader.tc = tc
        var thread = ThreadCoreEntry()
        thread.futexRla = 0; thread.futexRlaLen = 24; thread.comm = "fixture"
        var creds = CredsEntry()
        creds.uid = 1000; creds.gid = 1000; creds.euid = 1000; creds.egid = 1000; creds.suid = 1000; creds.sgid = 1000
        creds.fsuid = 1000; creds.fsgid = 1000; creds.secbits = 0
        thread.creds = creds
        leader.threadCore = thread
        try write("\(dir)/core-100.img", image(.core, [leader]))
        var worker = leader
        worker.clearTc()
        worker.threadInfo.gpregs = regs(ip: exe + 0x20, sp: heap + 0x1000)
        worker.threadCore.comm = "worker"
        try write("\(dir)/core-101.img", image(.core, [worker]))
        var zombie = CoreEntry()
        zombie.mtype = .x8664
        var ztc = TaskCoreEntry()
        ztc.taskState = 6; ztc.exitCode = 3; ztc.personality = 0; ztc.flags = 0; ztc.blkSigset = 0; ztc.comm = "zombie"
        zombie.tc = ztc
        try write("\(dir)/core-102.img", image(.core, [zombie]))

        func vma(_ start: UInt64, _ end: UInt64, prot: UInt32, status: UInt32, shmid: UInt64 = 0, pgoff: UInt64 = 0,
                 flags: UInt32 = 0x22) -> VmaEntry {
            var v = VmaEntry()
            v.start = start; v.end = end; v.pgoff = pgoff; v.shmid = shmid; v.prot = prot; v.flags = flags
            v.status = status; v.fd = -1
            return v
        }
        var mm = MmEntry()
        mm.mmStartCode = exe; mm.mmEndCode = exe + 0x1000; mm.mmStartData = data; mm.mmEndData = data + 0x2000
        mm.mmStartStack = stackEnd - 0x200; mm.mmStartBrk = heap; mm.mmBrk = heapEnd
        mm.mmEnvStart = argsAddress + UInt64(args.utf8.count); mm.mmEnvEnd = mm.mmEnvStart
        mm.mmArgStart = argsAddress
        mm.mmArgEnd = argsAddress + UInt64(args.utf8.count)
        mm.exeFileID = 2
        mm.mmSavedAuxv = [6, 4096, 9, exe, 0, 0]
        mm.vmas = [
            vma(exe, exe + 0x1000, prot: 5, status: 1 | 64, shmid: 2, flags: 2),
            vma(heap, heapEnd, prot: 3, status: 1 | 32 | 512),
            vma(data, data + 0x2000, prot: 1, status: 1 | 64, shmid: 2, pgoff: 0x1000, flags: 2),
            vma(stack, stackEnd, prot: 3, status: 1 | 2 | 512, flags: 0x122),
        ]
        try write("\(dir)/mm-100.img", image(.mm, [mm]))

        var head = PagemapHead()
        head.pagesID = 1
        func run(_ vaddr: UInt64, _ pages: UInt32, _ flags: UInt32) -> PagemapEntry {
            var e = PagemapEntry()
            e.vaddr = vaddr; e.nrPages = pages; e.flags = flags
            return e
        }
        try write("\(dir)/pagemap-100.img", image(.pagemap, [head, run(heap, 1100, 4), run(heap + 0x48_0000, 2, 6), run(stack + 0x3000, 1, 4)]))
        var pages = [UInt8](repeating: 0, count: 1103 * 4096)
        for i in 0..<1100 { pages[i * 4096] = UInt8(truncatingIfNeeded: i) | 1 } // non-zero, unlike the needle's neighbours
        let needleOffset = Int(needleAddress - heap)
        pages.replaceSubrange(needleOffset..<(needleOffset + needle.utf8.count), with: Array(needle.utf8))
        pages.replaceSubrange((1100 * 4096)..<(1100 * 4096 + 9), with: Array("LAZYPAGES".utf8))
        let argsOffset = 1102 * 4096 + Int(argsAddress - (stack + 0x3000))
        pages.replaceSubrange(argsOffset..<(argsOffset + args.utf8.count), with: Array(args.utf8))
        try write("\(dir)/pages-1.img", pages)

        var files: [FileEntry] = []
        var fown = FownEntry()
        fown.uid = 0; fown.euid = 0; fown.signum = 0; fown.pidType = 0; fown.pid = 0
        var skOpts = SkOptsEntry()
        skOpts.soSndbuf = 212_992; skOpts.soRcvbuf = 212_992
        skOpts.soSndTmoSec = 0; skOpts.soSndTmoUsec = 0; skOpts.soRcvTmoSec = 0; skOpts.soRcvTmoUsec = 0
        func reg(_ id: UInt32, _ name: String, flags: UInt32 = 0) {
            var r = RegFileEntry()
            r.id = id; r.flags = flags; r.pos = 0; r.name = name; r.fown = fown
            var f = FileEntry()
            f.type = .reg; f.id = id; f.reg = r
            files.append(f)
        }
        reg(1, "/dev/null", flags: 2)
        reg(2, mapped)
        reg(3, dir)
        reg(4, "/")
        var usk = UnixSkEntry()
        usk.id = 5; usk.ino = 1234; usk.type = 1; usk.state = 10; usk.flags = 0; usk.uflags = 0; usk.backlog = 0; usk.peer = 0
        usk.fown = fown; usk.opts = skOpts; usk.name = Data([0] + Array("abstract".utf8))
        var uf = FileEntry()
        uf.type = .unixsk; uf.id = 5; uf.usk = usk
        files.append(uf)
        var isk = InetSkEntry()
        isk.id = 6; isk.ino = 99; isk.family = 2; isk.type = 1; isk.proto = 6; isk.state = 10; isk.srcPort = 8080
        isk.srcAddr = [UInt32(0x7f00_0001).byteSwapped]; isk.dstAddr = [0]; isk.dstPort = 0; isk.flags = 2; isk.backlog = 128
        isk.fown = fown; isk.opts = skOpts
        var inf = FileEntry()
        inf.type = .inetsk; inf.id = 6; inf.isk = isk
        files.append(inf)
        var pipe = PipeEntry()
        pipe.id = 7; pipe.pipeID = 4242; pipe.flags = 0; pipe.fown = fown
        var pf = FileEntry()
        pf.type = .pipe; pf.id = 7; pf.pipe = pipe
        files.append(pf)
        try write("\(dir)/files.img", image(.files, files))

        func fd(_ n: UInt32, _ id: UInt32, _ type: FdTypes) -> FdinfoEntry {
            var e = FdinfoEntry()
            e.fd = n; e.id = id; e.type = type; e.flags = 0
            return e
        }
        try write("\(dir)/fdinfo-1.img", image(.fdinfo, [fd(0, 1, .reg), fd(3, 5, .unixsk), fd(4, 6, .inetsk), fd(5, 7, .pipe)]))
        var ids = TaskKobjIdsEntry()
        ids.vmID = 1; ids.filesID = 1; ids.fsID = 1; ids.sighandID = 1
        try write("\(dir)/ids-100.img", image(.ids, [ids]))
        var fs = FsEntry()
        fs.cwdID = 3; fs.rootID = 4; fs.umask = 0o22
        try write("\(dir)/fs-100.img", image(.fs, [fs]))
        var stats = StatsEntry()
        var d = DumpStatsEntry()
        d.freezingTime = 1500; d.frozenTime = 20000; d.memdumpTime = 900; d.memwriteTime = 900
        d.pagesScanned = 5000; d.pagesSkippedParent = 0; d.pagesWritten = 1103; d.pagesLazy = 0
        stats.dump = d
        try write("\(dir)/stats-dump.img", image(.stats, [stats]))
        return InspectFixture(directory: dir, mappedFile: mapped)
    }

    /// Removes the fixture (kept, and its path printed, with CRYO_KEEP_FIXTURE=1 for checking
    /// it with crit by hand).
    func remove() {
        if getenv("CRYO_KEEP_FIXTURE") != nil { print("fixture kept: \(directory)"); return }
        _ = try? FileManager.default.removeItem(atPath: directory)
    }

    /// Every .img file of the fixture.
    var imageFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".img") }.sorted()
    }
}

/// crit-format JSON for the kinds with payloads after their entries (checked byte for byte
/// against `crit encode`, except IPCNS_SHM, which crit 3.17 cannot encode).
enum InspectPayloadSamples {
    static let fown = #"{"uid": 0, "euid": 0, "signum": 0, "pid_type": 0, "pid": 0}"#
    static let opts = #"{"so_sndbuf": 1, "so_rcvbuf": 2, "so_snd_tmo_sec": 0, "so_snd_tmo_usec": 0, "so_rcv_tmo_sec": 0, "so_rcv_tmo_usec": 0}"#
    static let desc = #"{"key": 1, "uid": 0, "gid": 0, "cuid": 0, "cgid": 0, "mode": 438, "id": 3}"#
    static let all: [String] = [
        #"{"magic": "PIPES_DATA", "entries": [{"pipe_id": 7, "bytes": 5, "size": 65536, "extra": "aGVsbG8=\n"}, {"pipe_id": 8, "bytes": 0, "extra": ""}]}"#,
        #"{"magic": "TCP_STREAM", "entries": [{"inq_len": 3, "inq_seq": 100, "outq_len": 2, "outq_seq": 200, "opt_mask": 5, "snd_wscale": 7, "mss_clamp": 1460, "extra": {"inq": "YWJj\n", "outq": "ZGU=\n"}}]}"#,
        #"{"magic": "IPCNS_SEM", "entries": [{"desc": \#(desc), "nsems": 3, "extra": [1, 2, 65535]}]}"#,
        #"{"magic": "IPCNS_MSG", "entries": [{"desc": \#(desc), "qbytes": 16384, "qnum": 2, "extra": [{"mtype": 1, "msize": 5}, "aGVsbG8=\n", {"mtype": 2, "msize": 0}, ""]}]}"#,
        #"{"magic": "IPCNS_SHM", "entries": [{"desc": \#(desc), "size": 6, "extra": "c2htZGF0\n"}]}"#,
        #"{"magic": "GHOST_FILE", "entries": [{"uid": 0, "gid": 0, "mode": 33188, "size": 4, "extra": "ZGF0YQ==\n"}]}"#,
        #"{"magic": "GHOST_FILE", "entries": [{"uid": 0, "gid": 0, "mode": 33188, "chunks": true, "size": 8}, {"len": 2, "off": 0, "extra": "YWI=\n"}, {"len": 3, "off": 5, "extra": "Y2Rl\n"}]}"#,
        #"{"magic": "UNIXSK", "entries": [{"id": 5, "ino": 1234, "type": 1, "state": 10, "flags": 2, "uflags": 0, "backlog": 5, "peer": 0, "fown": \#(fown), "opts": \#(opts), "name": "=00abstract=3Dname"}]}"#,
        #"{"magic": "INETSK", "entries": [{"id": 6, "ino": 99, "family": 10, "type": 1, "proto": 6, "state": 10, "src_port": 8080, "dst_port": 0, "flags": 2, "backlog": 128, "src_addr": [33022, 0, 0, 33554688], "dst_addr": [0, 0, 0, 0], "fown": \#(fown), "opts": \#(opts)}]}"#,
    ]
}
