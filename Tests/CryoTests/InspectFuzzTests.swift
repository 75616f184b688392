@testable import Cryo
import Foundation
import XCTest

/// Feeds mutated images to every decoder: each must either succeed or throw an
/// ``ImageFormatError`` naming the file — a trap would end the test run.
final class InspectFuzzTests: XCTestCase {
    /// SplitMix64: deterministic, so a failure can be replayed.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }
    }

    /// One random mutation: flip bits, overwrite with an interesting value, truncate, insert,
    /// delete, or duplicate a range.
    static func mutate(_ input: [UInt8], _ r: inout Random) -> [UInt8] {
        var b = input
        guard !b.isEmpty else { return [UInt8(truncatingIfNeeded: r.next())] }
        switch r.below(7) {
        case 0:
            for _ in 0...r.below(4) { let i = r.below(b.count); b[i] ^= UInt8(1 << r.below(8)) }
        case 1:
            let values: [UInt8] = [0, 0xff, 0x7f, 0x80, 0x01, 0x0a, 0x12]
            b[r.below(b.count)] = values[r.below(values.count)]
        case 2:
            b = Array(b.prefix(r.below(b.count)))
        case 3:
            let i = r.below(b.count + 1)
            b.insert(contentsOf: (0...r.below(8)).map { _ in UInt8(truncatingIfNeeded: r.next()) }, at: i)
        case 4:
            let i = r.below(b.count), n = min(b.count - i, 1 + r.below(16))
            b.removeSubrange(i..<(i + n))
        case 5:
            // A huge entry size or varint.
            let i = r.below(b.count)
            for j in i..<min(b.count, i + 4) { b[j] = 0xff }
        default:
            let i = r.below(b.count), n = min(b.count - i, 1 + r.below(32))
            b.insert(contentsOf: b[i..<(i + n)], at: r.below(b.count))
        }
        return b
    }

    func expectClean(_ what: String, _ body: () throws -> Void) {
        do { try body() } catch let e as ImageFormatError {
            XCTAssertFalse(e.file.isEmpty, what)
        } catch {
            XCTFail("\(what): \(type(of: error)) is not an ImageFormatError: \(error)")
        }
    }

    func testMutatedImagesNeverCrashTheDecoders() throws {
        let fixture = try InspectFixture.make()
        defer { fixture.remove() }
        var inputs: [(String, [UInt8])] = []
        for name in fixture.imageFiles where !name.hasPrefix("pages-") {
            inputs.append((name, try ImageReader.bytes("\(fixture.directory)/\(name)")))
        }
        for (i, sample) in InspectPayloadSamples.all.enumerated() {
            inputs.append(("payload-\(i).img", try ImageJSON.encode(try JSONValue.parse(Array(sample.utf8), file: "s"), file: "s")))
        }
        var r = Random(state: 0x5eed)
        var decoded = 0, refused = 0
        for (name, original) in inputs {
            for _ in 0..<300 {
                let data = Self.mutate(original, &r)
                for (pretty, nopl) in [(false, false), (true, false), (true, true)] {
                    do {
                        let json = try ImageJSON.decode(data, file: name, pretty: pretty, noPayload: nopl)
                        decoded += 1
                        // What decodes must encode again (unless payloads were left out).
                        if !nopl { expectClean("re-encode \(name)") { _ = try ImageJSON.encode(json, file: name) } }
                    } catch let e as ImageFormatError {
                        refused += 1
                        XCTAssertEqual(e.file, name)
                        XCTAssertNotNil(e.offset, "\(e)")
                    } catch {
                        XCTFail("\(name): \(error)")
                    }
                }
                let path = "\(fixture.directory)/fuzz.img"
                try InspectFixture.write(path, data)
                expectClean("typed \(name)") {
                    switch name {
                    case let n where n.hasPrefix("core-"): _ = try ImageReader.entries(path, magic: .core, as: CoreEntry.self)
                    case let n where n.hasPrefix("mm-"): _ = try ImageReader.entries(path, magic: .mm, as: MmEntry.self)
                    case let n where n.hasPrefix("pagemap-"): _ = try ImageReader.pagemap(path)
                    case "pstree.img": _ = try ImageReader.entries(path, magic: .pstree, as: PstreeEntry.self)
                    case "files.img": _ = try ImageReader.entries(path, magic: .files, as: FileEntry.self)
                    default: _ = try ImageReader.entries(path, magic: .inventory, as: InventoryEntry.self)
                    }
                }
            }
        }
        XCTAssertGreaterThan(decoded, 100)
        XCTAssertGreaterThan(refused, 100)
        // Mutated JSON text for encode.
        for sample in InspectPayloadSamples.all {
            for _ in 0..<200 {
                let text = Self.mutate(Array(sample.utf8), &r)
                expectClean("encode") { _ = try ImageJSON.encode(try JSONValue.parse(text, file: "in.json"), file: "in.json") }
            }
        }
    }

    func testMutatedDumpsNeverCrashTheTools() throws {
        let fixture = try InspectFixture.make()
        defer { fixture.remove() }
        var r = Random(state: 0xd00d)
        let names = fixture.imageFiles.filter { !$0.hasPrefix("pages-") }
        for name in names {
            let path = "\(fixture.directory)/\(name)"
            let original = try ImageReader.bytes(path)
            for _ in 0..<40 {
                try InspectFixture.write(path, Self.mutate(original, &r))
                expectClean(name) {
                    let dump = try DumpImages(directory: fixture.directory)
                    for topic in Explore.Topic.allCases { _ = try Explore.report(dump, topic) }
                    _ = try DumpSummary(dump).text
                    for pid in dump.pids {
                        let p = try dump.process(pid)
                        guard !p.isZombie else { continue }
                        let memory = try ProcessMemory(dump, p)
                        _ = MemoryReport(memory, command: p.command)
                        try MemorySearch(.literal(Array("NEEDLE".utf8))).search(memory, limit: 5) { _ in }
                        _ = try CoreDump.write(dump, pid: pid, to: "\(fixture.directory)/core.fuzz")
                    }
                }
            }
            try InspectFixture.write(path, original)
        }
        // A pages file shorter than the pagemap says.
        let pages = "\(fixture.directory)/pages-1.img"
        try InspectFixture.write(pages, Array(try ImageReader.bytes(pages).prefix(4096 * 10)))
        let dump = try DumpImages(directory: fixture.directory)
        let memory = try ProcessMemory(dump, try dump.process(100))
        XCTAssertThrowsError(try memory.read(InspectFixture.needleAddress, count: 4)) { error in
            let e = error as? ImageFormatError
            XCTAssertEqual(e?.file, pages)
            XCTAssertEqual(e?.kind, .truncated)
            XCTAssertEqual(e?.offset, 4096 * 10)
        }
    }
}
