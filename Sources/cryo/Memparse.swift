import ArgumentParser
import Cryo
import Glibc

struct Memparse: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Memory of dumped processes: sizes, mappings, string search, raw extracts.",
        discussion: """
        Without options: per process, how much was mapped and how much the image holds. With \
        --pid: that process's mappings one by one. --search / --search-regex: where in which \
        mapping the text occurs (address, offset in the mapping, a hex/ASCII excerpt); the \
        pages images are streamed, never loaded whole. --dump ADDR LEN: the raw bytes at ADDR \
        (as the process saw them: dumped pages, file contents, zeros) to -o FILE or stdout.

        Examples:
          cryo memparse /tmp/img
          cryo memparse /tmp/img --pid 1234 --search 'secret' --context 32
          cryo memparse /tmp/img --pid 1234 --dump 0x7ffc7bf24000 4096 -o stack.bin
        """)

    @Argument(help: "The images directory.")
    var directory: String

    @Option(help: "Only this process (default: all; for --dump: the root process).")
    var pid: UInt32?

    @Option(help: ArgumentHelp("Find this text.", valueName: "STRING"))
    var search: String?

    @Option(name: .customLong("search-regex"), help: ArgumentHelp("Find this POSIX extended regular expression.", valueName: "RE"))
    var searchRegex: String?

    @Option(help: "Bytes of context shown before and after each match.")
    var context: Int = 16

    @Option(help: "Report at most this many matches per process (0: no limit).")
    var limit: Int = 1000

    @Option(name: .customLong("dump"), parsing: .upToNextOption,
            help: ArgumentHelp("Write LEN bytes of memory from ADDR (hex) raw.", valueName: "ADDR LEN"))
    var dump: [String] = []

    @Option(name: [.customShort("o"), .customLong("out")], help: "With --dump: the file to write (default: stdout).")
    var output: String?

    @Flag(help: "Machine-readable JSON instead of tables.")
    var json = false

    func validate() throws {
        if search != nil && searchRegex != nil { throw ValidationError("Use either --search or --search-regex.") }
        if !dump.isEmpty && dump.count != 2 { throw ValidationError("--dump takes an address and a length: --dump ADDR LEN") }
        if context < 0 || context > 4096 { throw ValidationError("--context must be between 0 and 4096.") }
        if let search, search.isEmpty { throw ValidationError("--search needs some text.") }
    }

    func run() throws {
        try inspecting {
            let images = try DumpImages(directory: directory)
            if !dump.isEmpty { return try dumpMemory(images) }
            let pids = try selectedPids(images)
            if let pattern = search.map({ MemoryPattern.literal(Array($0.utf8)) }) ?? searchRegex.map({ MemoryPattern.regex($0) }) {
                try searchMemory(images, pids, pattern)
            } else {
                try summarize(images, pids)
            }
        }
    }

    func selectedPids(_ images: DumpImages) throws -> [UInt32] {
        guard let pid else { return images.pids }
        guard images.pids.contains(pid) else {
            throw ImageFormatError(.inconsistent, file: images.path("pstree.img"), offset: nil,
                                   "has no process \(pid) (it has \(images.pids.map(String.init).joined(separator: ", ")))")
        }
        return [pid]
    }

    func memory(_ images: DumpImages, _ pid: UInt32) throws -> (ProcessImages, ProcessMemory)? {
        let p = try images.process(pid)
        guard !p.isZombie else { return nil }
        return (p, try ProcessMemory(images, p))
    }

    func summarize(_ images: DumpImages, _ pids: [UInt32]) throws {
        var reports: [MemoryReport] = []
        for pid in pids {
            guard let (p, m) = try memory(images, pid) else { continue }
            reports.append(MemoryReport(m, command: p.command))
        }
        if json {
            print(JSONValue.array(reports.map(\.json)).rendered(pretty: true))
            return
        }
        var table = TextTable(["PID", "COMMAND", "MAPPINGS", "MAPPED", "DUMPED", "ANONYMOUS", "FILE", "SHARED"], right: [0, 2, 3, 4, 5, 6, 7])
        for r in reports {
            table.add(["\(r.pid)", r.command, "\(r.mappings.count)", humanBytes(r.mapped), humanBytes(r.dumped),
                       humanBytes(r.anonymous), humanBytes(r.fileBacked), humanBytes(r.shared)])
        }
        print(table.render(), terminator: "")
        guard pid != nil, let r = reports.first else { return }
        print("")
        var maps = TextTable(["START", "END", "PERM", "SIZE", "DUMPED", "BACKING"], right: [3, 4])
        for m in r.mappings {
            maps.add([hexString(m.start, width: 12), hexString(m.end, width: 12), m.permissions, humanBytes(m.size),
                      humanBytes(m.dumped), m.backing + (m.offset != 0 ? " @0x" + String(m.offset, radix: 16) : "")])
        }
        print(maps.render(), terminator: "")
    }

    func searchMemory(_ images: DumpImages, _ pids: [UInt32], _ pattern: MemoryPattern) throws {
        let searcher = try MemorySearch(pattern)
        let what = search.map { "\"\($0)\"" } ?? "/\(searchRegex ?? "")/"
        var results: [JSONValue] = []
        var total = 0
        for pid in pids {
            guard let (p, memory) = try memory(images, pid) else { continue }
            var matches: [JSONValue] = []
            var lines: [String] = []
            let count = try searcher.search(memory, limit: limit > 0 ? limit : nil) { match in
                guard let vma = memory.vma(containing: match.address) else { return }
                let from = max(vma.start, (match.address &- UInt64(context)) & ~15)
                let to = min(vma.end, (match.address &+ UInt64(match.length) &+ UInt64(context) &+ 15) & ~15)
                let excerpt = to > from ? try memory.read(from, count: Int(to - from)) : []
                let offset = match.address - vma.start
                if json {
                    var m = JSONObject()
                    m["address"] = .string(hexString(match.address, prefix: true))
                    m["length"] = .int(match.length)
                    var mapping = JSONObject()
                    mapping["start"] = .string(hexString(vma.start, prefix: true))
                    mapping["end"] = .string(hexString(vma.end, prefix: true))
                    mapping["permissions"] = .string(ProcessMemory.permissions(vma))
                    mapping["backing"] = .string(memory.backing(vma))
                    m["mapping"] = .object(mapping)
                    m["offset"] = .int(offset)
                    m["match"] = .string(String(decoding: try memory.read(match.address, count: min(match.length, 4096)), as: UTF8.self))
                    var e = JSONObject()
                    e["address"] = .string(hexString(from, prefix: true))
                    e["hex"] = .string(excerpt.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined())
                    m["excerpt"] = .object(e)
                    matches.append(.object(m))
                } else {
                    lines.append("  0x\(hexString(match.address))  \(memory.backing(vma)) \(ProcessMemory.permissions(vma)) "
                                 + "\(hexString(vma.start))-\(hexString(vma.end)) +0x\(String(offset, radix: 16))")
                    lines += HexDump.lines(excerpt, address: from).map { "      " + $0 }
                }
            }
            total += count
            if json {
                var o = JSONObject()
                o["pid"] = .int(pid)
                o["command"] = .string(p.command)
                o["matches"] = .array(matches)
                o["truncated"] = .bool(limit > 0 && count >= limit)
                results.append(.object(o))
            } else {
                let more = limit > 0 && count >= limit ? " (stopped at --limit \(limit))" : ""
                print("\(pid) (\(p.command)): \(count) match\(count == 1 ? "" : "es") of \(what) in \(humanBytes(memory.dumpedBytes)) dumped\(more)")
                for line in lines { print(line) }
            }
        }
        if json { print(JSONValue.array(results).rendered(pretty: true)) }
        if total == 0 { throw ExitCode(1) } // like grep: nothing found
    }

    func dumpMemory(_ images: DumpImages) throws {
        let hexText = dump[0].lowercased().hasPrefix("0x") ? String(dump[0].dropFirst(2)) : dump[0]
        guard let address = UInt64(hexText, radix: 16) else { throw ValidationError("\(dump[0]) is not a hex address") }
        guard let length = Int(dump[1]) ?? (dump[1].lowercased().hasPrefix("0x") ? Int(dump[1].dropFirst(2), radix: 16) : nil),
              length >= 0 else { throw ValidationError("\(dump[1]) is not a length") }
        let target = pid ?? images.roots.first?.pid ?? images.pids[0]
        _ = try selectedPids(images)
        guard let (_, memory) = try memory(images, target) else {
            throw ImageFormatError(.inconsistent, file: images.path("core-\(target).img"), offset: nil, "process \(target) is a zombie: it has no memory")
        }
        if memory.vma(containing: address) == nil || memory.vma(containing: address + UInt64(max(length, 1)) - 1) == nil {
            fputs("Warning: \(hexString(address, prefix: true))+\(length) is not entirely mapped in process \(target); unmapped bytes read as zeros\n", stderr)
        }
        let fd = output.map { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) } ?? STDOUT_FILENO
        guard fd >= 0 else { throw ImageFormatError(.io, file: output ?? "-", offset: nil, "cannot create: \(String(cString: strerror(errno)))") }
        defer { if fd != STDOUT_FILENO { close(fd) } }
        var done = 0
        while done < length {
            let n = min(1 << 20, length - done)
            let chunk = try memory.read(address + UInt64(done), count: n)
            var written = 0
            while written < n {
                let w = chunk.withUnsafeBytes { write(fd, $0.baseAddress! + written, n - written) }
                if w < 0 && errno == EINTR { continue }
                guard w > 0 else { throw ImageFormatError(.io, file: output ?? "-", offset: done + written, "cannot write: \(String(cString: strerror(errno)))") }
                written += w
            }
            done += n
        }
    }
}
