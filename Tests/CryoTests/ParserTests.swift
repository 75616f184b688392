@testable import Cryo
import Glibc
import XCTest

final class MappingParserTests: XCTestCase {
    func testParsesSmapsHeadersAndFlags() throws {
        let text = """
        55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
        Size:                132 kB
        VmFlags: rd wr mr mw me ac sd
        7f0e1c000000-7f0e1c021000 r-xp 0001a000 fd:01 1312345                    /usr/lib/x86_64-linux-gnu/libc.so.6
        VmFlags: rd ex mr mw me sd
        7ffd5a6f0000-7ffd5a711000 rw-p 00000000 00:00 0                          [stack]
        VmFlags: rd wr mr mw me gd ac
        7f0e1c100000-7f0e1c101000 ---p 00000000 00:00 0
        7f0e1c200000-7f0e1c300000 rw-s 00000000 00:05 42                         /dev/zero (deleted)
        """
        let maps = try Mapping.parse(smaps: text)
        XCTAssertEqual(maps.count, 5)
        XCTAssertEqual(maps[0].name, "[heap]")
        XCTAssertEqual(maps[0].start, 0x55d0c0a00000)
        XCTAssertEqual(maps[0].length, 0x21000)
        XCTAssertTrue(maps[0].writable && !maps[0].executable && !maps[0].shared)
        XCTAssertEqual(maps[1].offset, 0x1a000)
        XCTAssertEqual(maps[1].inode, 1312345)
        XCTAssertEqual(maps[1].device.major, 0xfd)
        XCTAssertTrue(maps[1].isFileBacked)
        XCTAssertEqual(maps[1].protection, PROT_READ | PROT_EXEC)
        XCTAssertTrue(maps[2].flags.contains("gd"))
        XCTAssertEqual(maps[3].name, "")
        XCTAssertEqual(maps[3].protection, 0)
        XCTAssertTrue(maps[4].shared)
        XCTAssertEqual(maps[4].name, "/dev/zero (deleted)")
    }

    func testRejectsMalformedLines() {
        XCTAssertThrowsError(try Mapping.parse(smaps: "0000-zzzz rw-p 0 00:00 0"))
    }

    func testOwnMappingsIncludeVdso() throws {
        let maps = try ProcDirectory(pid: getpid()).mappings()
        XCTAssertTrue(maps.contains { $0.name == "[vdso]" })
        XCTAssertTrue(maps.allSatisfy { $0.start < $0.end })
    }

    func testStatusAndStat() throws {
        let proc = ProcDirectory(pid: getpid())
        XCTAssertEqual(try proc.status()["Pid"], "\(getpid())")
        let stat = try proc.statFields()
        XCTAssertEqual(stat[1], "\(getppid())") // field 4, ppid
    }
}

final class ImageCodecTests: XCTestCase {
    func testRoundTripAndFraming() throws {
        var entry = PstreeEntry()
        entry.pid = 42; entry.ppid = 0; entry.pgid = 42; entry.sid = 42; entry.threads = [42, 43]
        var bytes = ImageCodec.header(for: .pstree)
        try ImageCodec.appendEntry(entry, to: &bytes)
        try ImageCodec.appendEntry(entry, to: &bytes)
        XCTAssertEqual(Array(bytes[0..<4]), le32(ImageMagic.imgCommon.rawValue))
        let decoded = try ImageCodec.decode(bytes, magic: .pstree, as: PstreeEntry.self, file: "t")
        XCTAssertEqual(decoded, [entry, entry])
    }

    func testInventoryHasNoCommonMagic() {
        XCTAssertEqual(ImageCodec.header(for: .inventory), le32(ImageMagic.inventory.rawValue))
        XCTAssertEqual(Array(ImageCodec.header(for: .stats).prefix(4)), le32(ImageMagic.imgService.rawValue))
    }

    func testTruncatedAndForeignImagesAreErrorsNamingTheOffset() throws {
        var entry = PstreeEntry()
        entry.pid = 1; entry.ppid = 0; entry.pgid = 1; entry.sid = 1
        var bytes = ImageCodec.header(for: .pstree)
        try ImageCodec.appendEntry(entry, to: &bytes)
        // A cut right after the header leaves a valid image with no entries (readOne refuses it).
        XCTAssertEqual(try ImageCodec.decode(Array(bytes.prefix(8)), magic: .pstree, as: PstreeEntry.self, file: "f"), [])
        for cut in 1..<bytes.count where cut != 8 {
            XCTAssertThrowsError(try ImageCodec.decode(Array(bytes.prefix(cut)), magic: .pstree, as: PstreeEntry.self, file: "f")) { error in
                XCTAssertTrue("\(error)".contains("f"), "\(error)")
            }
        }
        XCTAssertThrowsError(try ImageCodec.decode(bytes, magic: .core, as: CoreEntry.self, file: "f")) { error in
            XCTAssertTrue("\(error)".contains("PSTREE"), "\(error)")
        }
    }

    func testMutatedImagesNeverCrash() throws {
        var core = CoreEntry()
        core.mtype = .x8664
        var tc = TaskCoreEntry()
        tc.taskState = 1; tc.exitCode = 0; tc.personality = 0; tc.flags = 0; tc.blkSigset = 0; tc.comm = "x"
        core.tc = tc
        var bytes = ImageCodec.header(for: .core)
        try ImageCodec.appendEntry(core, to: &bytes)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var m = bytes
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                m[Int.random(in: 0..<m.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            _ = try? ImageCodec.decode(m, magic: .core, as: CoreEntry.self, file: "m")
        }
    }
}

final class RegisterTests: XCTestCase {
    func testInterruptedSyscallsAreRewound() {
        var r = user_regs_struct()
        r.orig_rax = 35 // nanosleep
        r.rip = 0x1000
        r.rax = UInt64(bitPattern: -512)
        XCTAssertEqual(registersForImage(r).rip, 0x0ffe)
        XCTAssertEqual(registersForImage(r).rax, 35)
        r.rax = UInt64(bitPattern: -516)
        XCTAssertEqual(Int64(bitPattern: registersForImage(r).rax), -Int64(EINTR))
        XCTAssertEqual(registersForImage(r).rip, 0x1000)
        r.orig_rax = UInt64.max
        r.rax = UInt64(bitPattern: -512)
        XCTAssertEqual(registersForImage(r).rip, 0x1000, "not in a syscall: untouched")
    }

    func testGeneralRegistersRoundTrip() {
        var r = user_regs_struct()
        r.rax = 1; r.rbx = 2; r.rip = 3; r.rsp = 4; r.fs_base = 5; r.orig_rax = 6; r.r15 = 7; r.eflags = 0x246
        let back = UserX86RegsEntry(r).userRegs
        XCTAssertEqual(back.rax, 1); XCTAssertEqual(back.rbx, 2); XCTAssertEqual(back.rip, 3)
        XCTAssertEqual(back.rsp, 4); XCTAssertEqual(back.fs_base, 5); XCTAssertEqual(back.orig_rax, 6)
        XCTAssertEqual(back.r15, 7); XCTAssertEqual(back.eflags, 0x246)
    }

    func testXStateRoundTrip() {
        let size = XSaveLayout.components.values.map { $0.offset + $0.size }.max() ?? 576
        var original = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        // A valid header: xstate_bv of the components present, xcomp_bv 0.
        var bv: UInt64 = 3
        for id in XSaveLayout.components.keys { bv |= 1 << UInt64(id) }
        original.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: bv, toByteOffset: 512, as: UInt64.self)
            raw.storeBytes(of: 0, toByteOffset: 520, as: UInt64.self)
        }
        let entry = UserX86FpregsEntry(xstate: original)
        var rebuilt = [UInt8](repeating: 0, count: size)
        entry.apply(to: &rebuilt)
        XCTAssertEqual(Array(rebuilt[0..<416]), Array(original[0..<416]), "legacy x87/SSE area")
        XCTAssertEqual(Array(rebuilt[512..<528]), Array(original[512..<528]), "header")
        for (id, c) in XSaveLayout.components {
            XCTAssertEqual(Array(rebuilt[c.offset..<(c.offset + c.size)]), Array(original[c.offset..<(c.offset + c.size)]), "component \(id)")
        }
    }
}

/// fdinfo lines as this kernel writes them, for epoll, inotify and the key:value fields.
final class FdInfoTextTests: XCTestCase {
    func testFieldsAndRecords() {
        let text = """
        pos:\t0
        flags:\t04000
        mnt_id:\t17
        ino:\t1038
        tfd:        4 events:       19 data:               4d  pos:0 ino:40e sdev:10
        inotify wd:8 ino:f8a0fe sdev:fe00000 mask:a ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:fea0f80043052cfe
        inotify wd:6 ino:f8a0fc sdev:fe00000 mask:380 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:fca0f8001cde89dd
        """
        let fields = FdInfoText.fields(text)
        XCTAssertEqual(fields["flags"], "04000")
        XCTAssertEqual(fields["ino"], "1038") // the first line with the key wins
        let epoll = FdInfoText.records(text, startingWith: "tfd:")
        XCTAssertEqual(epoll, [["tfd": "4", "events": "19", "data": "4d", "pos": "0", "ino": "40e", "sdev": "10"]])
        let inotify = FdInfoText.records(text, startingWith: "inotify")
        XCTAssertEqual(inotify.map { $0["wd"] }, ["8", "6"])
        XCTAssertEqual(inotify[1]["f_handle"], "fca0f8001cde89dd")
        XCTAssertEqual(inotify[1]["mask"], "380")
    }
}

/// /proc/PID/timers as this kernel writes it.
final class PosixTimersParserTests: XCTestCase {
    func testParsesEveryNotifyKind() throws {
        let text = """
        ID: 1001
        signal: 10/0000000000000055
        notify: signal/tid.26331
        ClockID: 0
        ID: 43
        signal: 0/0000000000000000
        notify: none/pid.30671
        ClockID: 7
        ID: 2
        signal: 35/a1a1a1a1a1a1a1a1
        notify: signal/pid.26331
        ClockID: -6
        """
        let timers = try PosixTimersResource.parse(text, pid: 1)
        XCTAssertEqual(timers.map(\.itID), [1001, 43, 2])
        XCTAssertEqual(timers[0].itSigevNotify, PosixTimersResource.notifySignal | PosixTimersResource.notifyThreadID)
        XCTAssertEqual(timers[0].notifyThreadID, 26331)
        XCTAssertEqual(timers[0].siSigno, 10)
        XCTAssertEqual(timers[0].sivalPtr, 0x55)
        XCTAssertEqual(timers[1].itSigevNotify, PosixTimersResource.notifyNone)
        XCTAssertFalse(timers[1].hasNotifyThreadID)
        XCTAssertEqual(timers[1].clockID, 7)
        XCTAssertEqual(timers[2].sivalPtr, 0xa1a1_a1a1_a1a1_a1a1)
        XCTAssertEqual(Int32(bitPattern: timers[2].clockID), -6)
    }

    func testRejectsUnknownFormats() {
        XCTAssertThrowsError(try PosixTimersResource.parse("signal: 10/0\n", pid: 1)) // no ID first
        XCTAssertThrowsError(try PosixTimersResource.parse("ID: 1\nnotify: carrier-pigeon/pid.3\n", pid: 1))
        XCTAssertEqual(try PosixTimersResource.parse("", pid: 1).count, 0)
    }
}
