@testable import Cryo
import Foundation
import XCTest

/// The tools that read a whole dump, on the synthetic fixture.
final class InspectDumpTests: XCTestCase {
    var fixture: InspectFixture!
    var dump: DumpImages!

    override func setUpWithError() throws {
        fixture = try InspectFixture.make()
        dump = try DumpImages(directory: fixture.directory)
    }

    override func tearDown() { fixture.remove() }

    func testTreeAndProcesses() throws {
        XCTAssertEqual(dump.pids, [100, 102])
        XCTAssertEqual(dump.roots.map(\.pid), [100])
        let p = try dump.process(100)
        XCTAssertEqual(p.cores.map(\.tid), [100, 101])
        XCTAssertEqual(p.command, "fixture")
        XCTAssertFalse(p.isZombie)
        XCTAssertEqual(p.fds.count, 4)
        XCTAssertTrue(try dump.process(102).isZombie)
        XCTAssertEqual(try dump.process(102).state, "zombie")
        XCTAssertThrowsError(try dump.process(7)) { XCTAssertTrue($0 is ImageFormatError) }
        XCTAssertEqual(dump.dumpStats?.pagesWritten, 1103)
    }

    func testExploreReports() throws {
        XCTAssertEqual(try Explore.report(dump, .ps), """
                PID   PGID    SID   COMM
                100    100    100   fixture
                102    100    100       zombie

            """)
        let fds = try Explore.report(dump, .fds)
        XCTAssertTrue(fds.contains("\t      0: /dev/null\n"), fds)
        XCTAssertTrue(fds.contains("\t      3: unix[1234 (0) =00abstract]\n"), fds)
        XCTAssertTrue(fds.contains("\t      4: tcp 127.0.0.1:8080 -> 0.0.0.0:0 LISTEN\n"), fds)
        XCTAssertTrue(fds.contains("\t      5: pipe[4242]\n"), fds)
        XCTAssertTrue(fds.contains("\t    cwd: \(fixture.directory)\n"), fds)
        let mems = try Explore.report(dump, .mems)
        XCTAssertTrue(mems.contains("\t20000000-20002000                   r-- \(fixture.mappedFile) + 0x1000\n"), mems)
        XCTAssertTrue(mems.contains("\t7ff000000000-7ff000004000           rw- [stack]\n"), mems)
        let rss = try Explore.report(dump, .rss)
        XCTAssertTrue(rss.contains("\t10000000 / 1100         10000000 / 1280    \n"), rss)
        XCTAssertTrue(rss.contains("\t10480000 / 2            ~\n"), rss)
    }

    func testMemoryReadsDumpedFileAndZeroPages() throws {
        let memory = try ProcessMemory(dump, try dump.process(100))
        XCTAssertEqual(memory.dumpedBytes, 1103 * 4096)
        XCTAssertEqual(try memory.read(InspectFixture.needleAddress, count: 13), Array(InspectFixture.needle.utf8))
        XCTAssertEqual(try memory.read(InspectFixture.heap + 0x48_0000, count: 9), Array("LAZYPAGES".utf8)) // PE_LAZY|PE_PRESENT
        XCTAssertEqual(try memory.read(InspectFixture.data, count: 8), Array("FILETEXT".utf8)) // from the file, pgoff 0x1000
        XCTAssertEqual(try memory.read(InspectFixture.data + 0x1000, count: 2), Array("CC".utf8))
        XCTAssertEqual(try memory.read(InspectFixture.heap + 0x4f_0000, count: 4), [0, 0, 0, 0]) // never touched
        XCTAssertEqual(try memory.read(0x3000_0000, count: 4), [0, 0, 0, 0]) // not mapped
        // A read spanning a dumped run, an untouched gap and the next run.
        let span = try memory.read(InspectFixture.heap + 1100 * 4096 - 2, count: 4)
        XCTAssertEqual(span, [0, 0, 0, 0])
        XCTAssertEqual(memory.source(of: InspectFixture.heap), .dumped)
        XCTAssertEqual(memory.source(of: InspectFixture.data), .file(fixture.mappedFile))
        XCTAssertEqual(memory.source(of: InspectFixture.heap + 0x4f_0000), .zero)
        XCTAssertEqual(memory.source(of: 0x3000_0000), .unmapped)
        XCTAssertEqual(memory.backing(memory.vma(containing: InspectFixture.heap)!), "[heap]")

        let report = MemoryReport(memory, command: "fixture")
        XCTAssertEqual(report.dumped, 1103 * 4096)
        XCTAssertEqual(report.mappings.map(\.dumped), [0, 1102 * 4096, 0, 4096])
        XCTAssertEqual(report.anonymous, 0x50_0000 + 0x4000)
        XCTAssertEqual(report.fileBacked, 0x3000)
    }

    func testSearchStreamsAcrossChunks() throws {
        let memory = try ProcessMemory(dump, try dump.process(100))
        var found: [MemoryMatch] = []
        try MemorySearch(.literal(Array(InspectFixture.needle.utf8))).search(memory) { found.append($0) }
        XCTAssertEqual(found.map(\.address), [InspectFixture.needleAddress])
        found = []
        try MemorySearch(.regex("NEE+DLE-[A-Z]+")).search(memory) { found.append($0) }
        XCTAssertEqual(found.map(\.address), [InspectFixture.needleAddress])
        XCTAssertEqual(found.first?.length, 13)
        found = []
        try MemorySearch(.regex("arg[0-9v]+")).search(memory) { found.append($0) }
        XCTAssertEqual(found.map(\.address), [InspectFixture.argsAddress, InspectFixture.argsAddress + 6])
        // Only dumped pages are searched, not the mapped file.
        XCTAssertEqual(try MemorySearch(.literal(Array("FILETEXT".utf8))).search(memory) { _ in }, 0)
        XCTAssertEqual(try MemorySearch(.literal([1])).search(memory, limit: 3) { _ in }, 3)
        XCTAssertThrowsError(try MemorySearch(.regex("a(")))
        XCTAssertTrue(HexDump.lines(Array("ab\u{0}".utf8), address: 0x10)[0].hasPrefix("000000000010  61 62 00 "))
    }

    func testSummary() throws {
        let summary = try DumpSummary(dump)
        XCTAssertEqual(summary.processes.map(\.pid), [100, 102])
        XCTAssertEqual(summary.processes[0].arguments, ["argv0", "arg1"])
        XCTAssertEqual(summary.processes[0].threads.map(\.name), ["fixture", "worker"])
        XCTAssertEqual(summary.processes[1].depth, 1)
        XCTAssertEqual(summary.sockets.count, 2)
        let text = summary.text
        for fragment in ["argv0 arg1", "machine up 1h02m03s", "fdinfo per files table", "pipe[4242]", "tcp 127.0.0.1:8080",
                         "pages scanned 5000 · written 1103 (4.3 MiB)", "  restore  none yet"] {
            XCTAssertTrue(text.contains(fragment), "\(fragment) missing from:\n\(text)")
        }
        let json = summary.json.objectValue!
        XCTAssertEqual(json["format"], .string("cryo-inspect/1"))
        XCTAssertEqual(json["dump_uptime_us"], .number("3723000000"))
        let p0 = json["processes"]?.arrayValue?[0].objectValue
        XCTAssertEqual(p0?["cmdline"], .array([.string("argv0"), .string("arg1")]))
        XCTAssertEqual(p0?["memory"]?.objectValue?["dumped_bytes"], .number("\(1103 * 4096)"))
        XCTAssertEqual(json["stats"]?.objectValue?["restore"], .null)
    }

    func testCoreFileLayout() throws {
        let path = "\(fixture.directory)/core.100"
        let summary = try CoreDump.write(dump, pid: 100, to: path)
        XCTAssertEqual(summary.threads, [100, 101])
        XCTAssertEqual(summary.segments, 4)
        let core = try ImageReader.bytes(path)
        func u16(_ o: Int) -> Int { Int(core[o]) | Int(core[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { littleEndian32(core, o) }
        func u64(_ o: Int) -> UInt64 { UInt64(u32(o)) | UInt64(u32(o + 4)) << 32 }
        XCTAssertEqual(Array(core[0..<4]), [0x7f, 0x45, 0x4c, 0x46])
        XCTAssertEqual(u16(16), 4)   // ET_CORE
        XCTAssertEqual(u16(18), 62)  // EM_X86_64
        XCTAssertEqual(u16(56), 5)   // PT_NOTE + 4 PT_LOAD
        // Notes, in the kernel's order.
        let noteOffset = Int(u64(64 + 8)), noteSize = Int(u64(64 + 32))
        var types: [UInt32] = []
        var o = noteOffset
        var prstatusPids: [UInt32] = []
        while o < noteOffset + noteSize {
            let namesz = Int(u32(o)), descsz = Int(u32(o + 4)), type = u32(o + 8)
            let desc = o + 12 + (namesz + 3) / 4 * 4
            if type == 1 {
                XCTAssertEqual(descsz, 336)
                prstatusPids.append(u32(desc + 32))
                XCTAssertEqual(u64(desc + 112 + 16 * 8), type == 1 && prstatusPids.count == 1 ? InspectFixture.exe + 0x10 : InspectFixture.exe + 0x20) // pr_reg.rip
            }
            if type == 3 {
                XCTAssertEqual(descsz, 136)
                XCTAssertEqual(String(decoding: core[(desc + 56)..<(desc + 66)], as: UTF8.self), "argv0 arg1")
            }
            if type == 0x202 {
                XCTAssertEqual(u64(desc + 464), 7)          // XCR0 for gdb
                XCTAssertEqual(u64(desc + 512), 7)          // xstate_bv
                XCTAssertEqual(u32(desc + 576), 1000)       // first YMM upper word
            }
            types.append(type)
            o = desc + (descsz + 3) / 4 * 4
        }
        XCTAssertEqual(types, [1, 3, 0x5349_4749, 6, 0x4649_4c45, 2, 0x202, 1, 2, 0x202])
        XCTAssertEqual(prstatusPids, [100, 101])
        // The heap segment holds the needle; the data segment holds the file's page.
        for i in 1...4 {
            let ph = 64 + 56 * i
            let vaddr = u64(ph + 16), offset = Int(u64(ph + 8)), filesz = u64(ph + 32)
            if vaddr == InspectFixture.heap {
                let at = offset + Int(InspectFixture.needleAddress - vaddr)
                XCTAssertEqual(String(decoding: core[at..<(at + 13)], as: UTF8.self), InspectFixture.needle)
                XCTAssertEqual(filesz, 0x50_0000)
            }
            if vaddr == InspectFixture.data {
                XCTAssertEqual(String(decoding: core[offset..<(offset + 8)], as: UTF8.self), "FILETEXT")
            }
        }
        XCTAssertThrowsError(try CoreDump.write(dump, pid: 102, to: path)) { XCTAssertTrue($0 is ImageFormatError) }
    }

    /// Adds to the fixture child 103 of 100 and grandchild 104 of 103 (parents as given) whose
    /// pagemaps mark pages as their parent's (Cryo's flag 0x8): 103 has 100's heap and its own
    /// stack page ("CHILDSTACK"); 104 its own first heap page ("GRANDCHILD"), the rest of the
    /// heap from 103 (so from 100), and 103's stack page. Returns the dump read again.
    func addCOWDescendants(parentOf103: UInt32 = 100, parentOf104: UInt32 = 103) throws -> DumpImages {
        let dir = fixture.directory
        func copy(_ from: String, _ to: String) throws {
            try InspectFixture.write("\(dir)/\(to)", Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(from)"))))
        }
        var pstree = try ImageReader.entries("\(dir)/pstree.img", magic: .pstree, as: PstreeEntry.self)
        for (pid, ppid) in [(UInt32(103), parentOf103), (104, parentOf104)] {
            var e = pstree[0]
            e.pid = pid; e.ppid = ppid; e.threads = [pid]
            pstree.append(e)
            for name in ["core", "mm", "ids", "fs"] { try copy("\(name)-100.img", "\(name)-\(pid).img") }
        }
        try InspectFixture.write("\(dir)/pstree.img", InspectFixture.image(.pstree, pstree))
        func run(_ vaddr: UInt64, _ pages: UInt32, _ flags: UInt32) -> PagemapEntry {
            var e = PagemapEntry()
            e.vaddr = vaddr; e.nrPages = pages; e.flags = flags
            return e
        }
        func page(_ text: String) -> [UInt8] { Array(text.utf8) + [UInt8](repeating: 0, count: 4096 - text.utf8.count) }
        let heap = InspectFixture.heap, stackPage = InspectFixture.stack + 0x3000
        var head = PagemapHead()
        head.pagesID = 2
        try InspectFixture.write("\(dir)/pagemap-103.img", InspectFixture.image(.pagemap, [
            head, run(heap, 1100, 8), run(heap + 0x48_0000, 2, 8), run(stackPage, 1, 4)]))
        try InspectFixture.write("\(dir)/pages-2.img", page("CHILDSTACK"))
        head.pagesID = 3
        try InspectFixture.write("\(dir)/pagemap-104.img", InspectFixture.image(.pagemap, [
            head, run(heap, 1, 4), run(heap + 0x1000, 1099, 8), run(stackPage, 1, 8)]))
        try InspectFixture.write("\(dir)/pages-3.img", page("GRANDCHILD"))
        return try DumpImages(directory: dir)
    }

    func testMemoryFollowsPagesOfTheParentProcess() throws {
        let dump = try addCOWDescendants()
        let child = try ProcessMemory(dump, try dump.process(103))
        let grandchild = try ProcessMemory(dump, try dump.process(104))
        XCTAssertEqual(grandchild.parent?.pid, 103)
        XCTAssertEqual(grandchild.parent?.parent?.pid, 100)
        XCTAssertEqual(try grandchild.read(InspectFixture.needleAddress, count: 13), Array(InspectFixture.needle.utf8))
        XCTAssertEqual(try grandchild.read(InspectFixture.heap, count: 10), Array("GRANDCHILD".utf8))
        XCTAssertEqual(try grandchild.read(InspectFixture.stack + 0x3000, count: 10), Array("CHILDSTACK".utf8))
        XCTAssertEqual(try child.read(InspectFixture.heap + 0x48_0000, count: 9), Array("LAZYPAGES".utf8))
        XCTAssertEqual(try child.read(InspectFixture.heap, count: 1), [1]) // 100's first heap page
        XCTAssertEqual(grandchild.source(of: InspectFixture.needleAddress), .dumped)
        XCTAssertEqual(grandchild.source(of: InspectFixture.heap + 0x4f_0000), .zero)
        XCTAssertFalse(grandchild.hasMissingPages)
        XCTAssertEqual(grandchild.dumpedBytes, 1101 * 4096)
        XCTAssertEqual(child.dumpedBytes, 1103 * 4096)
        var found: [UInt64] = []
        try MemorySearch(.literal(Array(InspectFixture.needle.utf8))).search(grandchild) { found.append($0.address) }
        XCTAssertEqual(found, [InspectFixture.needleAddress])
        XCTAssertEqual(try MemorySearch(.literal(Array("CHILDSTACK".utf8))).search(grandchild) { _ in }, 1)
        XCTAssertEqual(try MemorySearch(.literal(Array("GRANDCHILD".utf8))).search(child) { _ in }, 0)
    }

    func testPagesOfTheParentProcessInABrokenTree() throws {
        // 103 and 104 each other's parent: opening the memory ends, and the pages are unavailable.
        let dump = try addCOWDescendants(parentOf103: 104, parentOf104: 103)
        let memory = try ProcessMemory(dump, try dump.process(104))
        XCTAssertEqual(memory.parent?.pid, 103)
        XCTAssertNil(memory.parent?.parent)
        XCTAssertTrue(memory.hasMissingPages)
        XCTAssertEqual(memory.source(of: InspectFixture.stack + 0x3000), .dumped)
        XCTAssertEqual(memory.parent?.source(of: InspectFixture.heap), .unavailable)
        XCTAssertEqual(try memory.read(InspectFixture.heap + 0x1000, count: 4), [0, 0, 0, 0])
    }
}
