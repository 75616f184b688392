@testable import Cryo
import Foundation
import XCTest

/// crit's value conventions, checked against what Python (pycriu 3.17 on Python 3.11) prints.
final class InspectCritTextTests: XCTestCase {
    func testBase64IsPythonEncodebytes() {
        XCTAssertEqual(CritText.base64Lines([UInt8](0..<100)),
                       "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\nOTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiYw==\n")
        XCTAssertEqual(CritText.base64Lines([UInt8]()), "")
        XCTAssertEqual(CritText.base64Lines(Array("hello".utf8)), "aGVsbG8=\n")
        XCTAssertEqual(CritText.decodeBase64("AAEC\nAwQF\n"), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(CritText.decodeBase64("aGVsbG8=\n"), Array("hello".utf8))
        XCTAssertNil(CritText.decodeBase64("A"))
        for n in 0..<200 {
            let data = (0..<n).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
            XCTAssertEqual(CritText.decodeBase64(CritText.base64Lines(data)), data)
        }
    }

    func testQuotedPrintableIsPythonQuopri() {
        let cases: [([UInt8], String)] = [
            ([0] + Array("/tmp/sock".utf8), "=00/tmp/sock"),
            (Array("abc=def \t".utf8), "abc=3Ddef =09"),
            (Array("line one \nline two".utf8), "line one=20\nline two"),
            (Array(".".utf8), "=2E"),
            ([UInt8](repeating: UInt8(ascii: "a"), count: 80), String(repeating: "a", count: 75) + "=\n" + "aaaaa"),
            (Array("x\r\ny \r\n".utf8), "x\r\ny=20\r\n"),
            (Array("é€".utf8), "=C3=A9=E2=82=AC"),
        ]
        for (data, text) in cases {
            XCTAssertEqual(CritText.quotedPrintable(data), text)
            XCTAssertEqual(CritText.decodeQuotedPrintable(text), data)
        }
    }

    func testAddressesAsPythonIpaddress() {
        XCTAssertEqual(CritText.ipAddress([16_777_343]), "127.0.0.1")
        let v6: [([UInt32], String)] = [
            ([0, 0, 0, 16_777_216], "::1"), ([33022, 0, 0, 33_554_688], "fe80::1:2"), ([3_087_860_000, 0, 0, 0], "2001:db8::"),
            ([0, 0, 0, 0], "::"), ([256, 33_554_432, 0, 50_331_648], "1:0:0:2::3"), ([0, 0, 4_294_901_760, 67_305_985], "::ffff:102:304"),
            ([33_554_688, 67_109_632, 100_664_576, 134_219_520], "1:2:3:4:5:6:7:8"), ([0, 256, 0, 0], "0:0:1::"),
        ]
        for (words, text) in v6 {
            XCTAssertEqual(CritText.ipAddress(words), text)
            XCTAssertEqual(CritText.parseIPAddress(text), words)
        }
        XCTAssertEqual(CritText.parseIPAddress("::ffff:1.2.3.4"), [0, 0, 4_294_901_760, 67_305_985])
        XCTAssertNil(CritText.parseIPAddress("1.2.3"))
        XCTAssertNil(CritText.parseIPAddress("1::2::3"))
        XCTAssertNil(CritText.ipAddress([1, 2]))
    }

    func testSizesFlagsDevicesAndIntegers() {
        for (n, text) in [(0, "0B"), (1023, "1023B"), (1024, "1KB"), (1536, "1.5KB"), (12289, "12.0KB"), (1_000_000_000, "953.7MB")] {
            XCTAssertEqual(CritText.humanSize(UInt64(n)), text)
        }
        let prot = CritText.flagMaps["mmap.prot"]!
        XCTAssertEqual(CritText.flagNames(5, prot), "PROT_READ | PROT_EXEC")
        XCTAssertEqual(CritText.flagNames(0x11, prot), "PROT_READ | 0x10")
        XCTAssertEqual(CritText.flagNames(0, prot), "")
        XCTAssertEqual(CritText.parseFlags("PROT_READ | 0x10", prot), 0x11)
        XCTAssertEqual(CritText.parseFlags("", prot), 0)
        XCTAssertNil(CritText.parseFlags("PROT_BOGUS", prot))
        XCTAssertEqual(CritText.flagNames(0, CritText.flagMaps["mmap.status"]!), "")
        XCTAssertEqual(CritText.device(Int64(8 << 20 | 1), old: false), "8:1")
        XCTAssertEqual(CritText.parseDevice("8:1", old: false), Int64(8 << 20 | 1))
        XCTAssertEqual(CritText.device(0x801, old: true), "8:1")
        XCTAssertEqual(CritText.parseDevice("8:1", old: true), 0x801)
        XCTAssertEqual(CritText.pythonInt("0x1F"), 31)
        XCTAssertEqual(CritText.pythonInt(" -0x5 "), -5)
        XCTAssertEqual(CritText.pythonInt("0o17"), 15)
        XCTAssertEqual(CritText.pythonInt("1_000"), 1000)
        XCTAssertEqual(CritText.pythonInt("0xffffffffffffffff"), -1) // the bit pattern of UInt64.max
        XCTAssertNil(CritText.pythonInt("017"))
        XCTAssertNil(CritText.pythonInt("0x"))
        XCTAssertNil(CritText.pythonInt("12a"))
        XCTAssertEqual(CritText.hex(Int64(-5)), "-0x5")
    }
}

final class InspectJSONTests: XCTestCase {
    func testRendersLikePythonJSON() {
        var o = JSONObject()
        o["k"] = .string("a\u{0}\u{7f}\"\\/\t\u{1F600}")
        o["n"] = .number("18446744073709551615")
        o["l"] = .array([])
        o["o"] = .object(JSONObject())
        o["b"] = .array([.bool(true), .null])
        XCTAssertEqual(JSONValue.object(o).rendered(pretty: false),
                       #"{"k": "a\u0000\u007f\"\\/\t\ud83d\ude00", "n": 18446744073709551615, "l": [], "o": {}, "b": [true, null]}"#)
        XCTAssertEqual(JSONValue.object(o).rendered(pretty: true), """
        {
            "k": "a\\u0000\\u007f\\"\\\\/\\t\\ud83d\\ude00",
            "n": 18446744073709551615,
            "l": [],
            "o": {},
            "b": [
                true,
                null
            ]
        }
        """)
    }

    func testParsesExactlyAndReportsOffsets() throws {
        let v = try JSONValue.parse(Array(#"{"a": [1, -2, 18446744073709551615, 1.5e3], "s": "\u00e9\ud83d\ude00\n", "a": 3}"#.utf8), file: "x")
        XCTAssertEqual(v.objectValue?["a"], .number("3")) // the last value of a repeated key, as json.loads
        XCTAssertEqual(v.objectValue?.keys, ["a", "s"])
        XCTAssertEqual(v.objectValue?["s"], .string("é😀\n"))
        for (bad, offset) in [("{\"a\": }", 6), ("[1, 2", 5), ("{\"a\" 1}", 5), ("\"abc", 4), ("[01x]", 2), ("", 0), ("[1] 2", 4)] {
            XCTAssertThrowsError(try JSONValue.parse(Array(bad.utf8), file: "in.json"), bad) { error in
                let e = error as? ImageFormatError
                XCTAssertEqual(e?.kind, .badJSON, bad)
                XCTAssertEqual(e?.file, "in.json")
                XCTAssertEqual(e?.offset, offset, bad)
            }
        }
    }
}

/// Whole images to crit's JSON and back.
final class InspectImageJSONTests: XCTestCase {
    var fixture: InspectFixture!

    override func setUpWithError() throws { fixture = try InspectFixture.make() }
    override func tearDown() { fixture.remove() }

    func bytes(_ name: String) throws -> [UInt8] { try ImageReader.bytes("\(fixture.directory)/\(name)") }

    func testDecodesLikeCrit() throws {
        XCTAssertEqual(try ImageJSON.decode(bytes("pstree.img"), file: "pstree.img").rendered(pretty: false),
                       #"{"magic": "PSTREE", "entries": [{"pid": 100, "ppid": 0, "pgid": 100, "sid": 100, "threads": [100, 101]}, {"pid": 102, "ppid": 100, "pgid": 100, "sid": 100, "threads": [102]}]}"#)
        XCTAssertEqual(try ImageJSON.decode(bytes("fdinfo-1.img"), file: "f").rendered(pretty: false),
                       #"{"magic": "FDINFO", "entries": [{"id": 1, "flags": 0, "type": "REG", "fd": 0}, {"id": 5, "flags": 0, "type": "UNIXSK", "fd": 3}, {"id": 6, "flags": 0, "type": "INETSK", "fd": 4}, {"id": 7, "flags": 0, "type": "PIPE", "fd": 5}]}"#)
        let mm = try ImageJSON.decode(bytes("mm-100.img"), file: "mm", pretty: true)
        let vma = mm.objectValue?["entries"]?.arrayValue?[0].objectValue?["vmas"]?.arrayValue?[0].objectValue
        XCTAssertEqual(vma?["start"], .string("0x400000"))
        XCTAssertEqual(vma?["prot"], .string("PROT_READ | PROT_EXEC"))
        XCTAssertEqual(vma?["flags"], .string("MAP_PRIVATE"))
        XCTAssertEqual(vma?["status"], .string("VMA_AREA_REGULAR | VMA_FILE_PRIVATE"))
        XCTAssertEqual(vma?["fd"], .number("-1"))
        // A hex message makes every integer in it hex (thread_info.gpregs).
        let core = try ImageJSON.decode(bytes("core-100.img"), file: "core", pretty: true)
        let gpregs = core.objectValue?["entries"]?.arrayValue?[0].objectValue?["thread_info"]?.objectValue?["gpregs"]?.objectValue
        XCTAssertEqual(gpregs?["ax"], .string("0xfffffffffffffffc"))
        XCTAssertEqual(gpregs?["mode"], .string("NATIVE"))
        let files = try ImageJSON.decode(bytes("files.img"), file: "files", pretty: true).rendered(pretty: true)
        XCTAssertTrue(files.contains(#""name": "=00abstract""#), files)
        XCTAssertTrue(files.contains(#""src_addr": [\#n                    "127.0.0.1"\#n                ]"#), files)
        XCTAssertTrue(files.contains(#""state": "LISTEN""#))
        XCTAssertTrue(files.contains(#""flags": "O_RDWR""#))
    }

    func testEncodeOfDecodeIsIdentity() throws {
        for name in fixture.imageFiles where !name.hasPrefix("pages-") {
            let original = try bytes(name)
            for pretty in [false, true] {
                let json = try ImageJSON.decode(original, file: name, pretty: pretty)
                let text = json.rendered(pretty: pretty)
                let again = try ImageJSON.encode(try JSONValue.parse(Array(text.utf8), file: name), file: name)
                XCTAssertEqual(again, original, "\(name) pretty=\(pretty)")
            }
        }
    }

    func testPayloadKindsRoundTrip() throws {
        for sample in InspectPayloadSamples.all {
            let json = try JSONValue.parse(Array(sample.utf8), file: "sample")
            let image = try ImageJSON.encode(json, file: "sample")
            XCTAssertEqual(try ImageJSON.decode(image, file: "img").rendered(pretty: false), sample)
            let pretty = try ImageJSON.decode(image, file: "img", pretty: true)
            XCTAssertEqual(try ImageJSON.encode(pretty, file: "pretty"), image)
            let nopl = try ImageJSON.decode(image, file: "img", noPayload: true).rendered(pretty: false)
            XCTAssertFalse(nopl.contains("aGVsbG8="), nopl)
        }
        let pipes = try ImageJSON.encode(try JSONValue.parse(Array(InspectPayloadSamples.all[0].utf8), file: "s"), file: "s")
        XCTAssertTrue(try ImageJSON.decode(pipes, file: "p", noPayload: true).rendered(pretty: false).contains(#""extra": "... <5B>""#))
    }

    func testNewerFieldsAndUnknownFields() throws {
        // creds fields 18/19 are newer than crit 3.17; they are decoded and kept.
        var creds = CredsEntry()
        creds.uid = 1; creds.gid = 2; creds.euid = 3; creds.egid = 4; creds.suid = 5; creds.sgid = 6; creds.fsuid = 7; creds.fsgid = 8
        creds.capInh = [0]; creds.capPrm = [0]; creds.capEff = [0]; creds.capBnd = [0]; creds.secbits = 0
        creds.noNewPrivs = 1
        creds.capAmb = [0, 1]
        let image = try InspectFixture.image(.creds, [creds])
        let text = try ImageJSON.decode(image, file: "creds").rendered(pretty: false)
        XCTAssertTrue(text.contains(#""no_new_privs": 1, "cap_amb": [0, 1]"#), text)
        XCTAssertEqual(try ImageJSON.encode(try ImageJSON.decode(image, file: "c"), file: "c"), image)
        // Unknown field 99, an unknown enum value and a wrong wire type are skipped, as protobuf does.
        var raw = ImageCodec.header(for: .core)
        let payload: [UInt8] = [0x08, 0x01, 0x98, 0x06, 0x05, 0x0a, 0x01, 0x00]
        raw += le32(UInt32(payload.count)) + payload
        XCTAssertEqual(try ImageJSON.decode(raw, file: "c").rendered(pretty: false), #"{"magic": "CORE", "entries": [{"mtype": "X86_64"}]}"#)
        var enumOnly = ImageCodec.header(for: .core)
        enumOnly += le32(2) + [0x08, 0x63]
        XCTAssertEqual(try ImageJSON.decode(enumOnly, file: "c").rendered(pretty: false), #"{"magic": "CORE", "entries": [{}]}"#)
        // A packed repeated scalar is read like an unpacked one.
        var packed = ImageCodec.header(for: .pstree)
        let p: [UInt8] = [0x08, 0x01, 0x10, 0x00, 0x18, 0x01, 0x20, 0x01, 0x2a, 0x02, 0x05, 0x06]
        packed += le32(UInt32(p.count)) + p
        XCTAssertTrue(try ImageJSON.decode(packed, file: "p").rendered(pretty: false).contains(#""threads": [5, 6]"#))
    }

    func testBadInputIsAClearError() throws {
        let core = try bytes("core-100.img")
        func expect(_ data: [UInt8], _ kind: ImageFormatError.Kind, offset: Int?, _ line: UInt = #line) {
            XCTAssertThrowsError(try ImageJSON.decode(data, file: "f.img"), line: line) { error in
                guard let e = error as? ImageFormatError else { return XCTFail("\(error)", line: line) }
                XCTAssertEqual(e.kind, kind, "\(e)", line: line)
                XCTAssertEqual(e.file, "f.img", line: line)
                if let offset { XCTAssertEqual(e.offset, offset, "\(e)", line: line) }
                XCTAssertTrue(e.description.hasPrefix("f.img: "), e.description, line: line)
            }
        }
        expect([], .truncated, offset: 0)
        expect(Array(core[0..<6]), .truncated, offset: 4)
        expect(Array(core[0..<10]), .truncated, offset: 8)
        expect(Array(core.dropLast()), .truncated, offset: 8)
        expect([0x00, 0x00, 0x02, 0x00] + [UInt8](repeating: 0, count: 100), .unknownMagic, offset: 0)
        expect(le32(ImageMagic.imgCommon.rawValue) + le32(ImageMagic.kdat.rawValue), .unsupportedKind, offset: 4)
        var badVarint = ImageCodec.header(for: .pstree)
        badVarint += le32(3) + [0x08, 0xff, 0xff]
        expect(badVarint, .truncated, offset: 13)
        var badWire = ImageCodec.header(for: .pstree)
        badWire += le32(2) + [0x0f, 0x00]
        expect(badWire, .corrupt, offset: 12)
        var pages = try bytes("pages-1.img")
        pages[0] = 0x42
        expect(Array(pages.prefix(4096)), .unknownMagic, offset: 0)
    }

    func testBadJSONIsAClearError() {
        func expect(_ text: String, _ fragment: String, _ line: UInt = #line) {
            XCTAssertThrowsError(try ImageJSON.encode(try JSONValue.parse(Array(text.utf8), file: "in.json"), file: "in.json"), line: line) { error in
                guard let e = error as? ImageFormatError else { return XCTFail("\(error)", line: line) }
                XCTAssertEqual(e.kind, .badJSON, line: line)
                XCTAssertTrue(e.description.contains(fragment), e.description, line: line)
            }
        }
        expect(#"{"magic": "PSTREE"}"#, "expected {")
        expect(#"{"magic": "NOPE", "entries": []}"#, "unknown magic name NOPE")
        expect(#"{"magic": "PSTREE", "entries": [{"pid": 1}]}"#, "entries[0]: message pstree_entry is missing required fields: ppid, pgid, sid")
        expect(#"{"magic": "PSTREE", "entries": [{"pid": -1, "ppid": 0, "pgid": 0, "sid": 0}]}"#, "entries[0].pid: -1 is out of range for uint32")
        expect(#"{"magic": "PSTREE", "entries": [{"pid": "0x100000000", "ppid": 0, "pgid": 0, "sid": 0}]}"#, "out of range")
        expect(#"{"magic": "CORE", "entries": [{"mtype": "VAX"}]}"#, "'VAX' is not a value of core_entry.march")
        expect(#"{"magic": "FDINFO", "entries": [{"id": 1, "flags": 0, "type": "REG", "fd": [1]}]}"#, "entries[0].fd: expected an integer")
        expect(#"{"magic": "PAGEMAP", "entries": [{"pages_id": 1}, {"vaddr": "0x1000", "nr_pages": 1, "flags": "PE_BOGUS"}]}"#, "entries[1].flags: 'PE_BOGUS' is not a combination of pmap.flags flags")
        expect(#"{"magic": "GHOST_FILE", "entries": [{"uid": 0, "gid": 0, "mode": 0}]}"#, "needs its contents")
    }
}
