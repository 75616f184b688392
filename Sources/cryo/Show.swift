import ArgumentParser
import Cryo
import Glibc

/// Reads a whole file (or standard input for `-`/nil), or throws an error naming it.
func readInput(_ path: String?) throws -> [UInt8] {
    let name = path ?? "-"
    let fd = name == "-" ? STDIN_FILENO : open(name, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ImageFormatError(.io, file: name, offset: nil, "cannot open: \(String(cString: strerror(errno)))") }
    defer { if fd != STDIN_FILENO { close(fd) } }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw ImageFormatError(.io, file: name, offset: out.count, "cannot read: \(String(cString: strerror(errno)))")
        }
        if n == 0 { return out }
        out += buffer[0..<n]
    }
}

/// Writes bytes to a file (or standard output for `-`/nil), or throws an error naming it.
func writeOutput(_ path: String?, _ bytes: [UInt8]) throws {
    let name = path ?? "-"
    let fd = name == "-" ? STDOUT_FILENO : open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw ImageFormatError(.io, file: name, offset: nil, "cannot create: \(String(cString: strerror(errno)))") }
    defer { if fd != STDOUT_FILENO { close(fd) } }
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 {
            if errno == EINTR { continue }
            throw ImageFormatError(.io, file: name, offset: done, "cannot write: \(String(cString: strerror(errno)))")
        }
        done += n
    }
}

/// Runs an inspection command body: any error becomes one `Error:` line and exit status 1.
func inspecting(_ body: () throws -> Void) throws {
    do { try body() } catch let e as ExitCode { throw e } catch {
        fflush(stdout)
        fputs("Error: \(error)\n", stderr)
        throw ExitCode(1)
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print an image file as readable JSON (crit show).",
        discussion: """
        Any CRIU-format image (Cryo's or CRIU's) is printed as crit prints it: \
        {"magic": KIND, "entries": [...]}, field names as in CRIU's .proto files, addresses and \
        masks in hex, flags and devices by name. Raw files (pages-*.img) have no magic and are \
        refused with a message.
        """)

    @Argument(help: "The image file.")
    var file: String

    @Flag(help: "Indented JSON with hex, flag and device fields as text (the default for show, as in crit).")
    var pretty = false

    @Flag(help: "Compact JSON with plain numbers, as crit decode prints without --pretty.")
    var compact = false

    @Flag(help: "Leave out payloads (pipe data, socket queues...), showing only their size.")
    var nopl = false

    func run() throws {
        try inspecting {
            let json = try ImageJSON.decode(try readInput(file), file: file, pretty: !compact, noPayload: nopl)
            print(json.rendered(pretty: !compact))
        }
    }
}

struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an image file to JSON (crit decode).",
        discussion: "The JSON is what crit decode prints; cryo encode turns it back into the same bytes.")

    @Option(name: [.customShort("i"), .customLong("in")], help: "The image file (default: standard input).")
    var input: String?

    @Option(name: [.customShort("o"), .customLong("out")], help: "Where to write the JSON (default: standard output).")
    var output: String?

    @Flag(help: "Indented JSON with hex, flag and device fields as text.")
    var pretty = false

    @Flag(help: "Leave out payloads, showing only their size (the result cannot be encoded back).")
    var nopl = false

    func run() throws {
        try inspecting {
            let name = input ?? "-"
            let json = try ImageJSON.decode(try readInput(name), file: name, pretty: pretty, noPayload: nopl)
            try writeOutput(output, Array((json.rendered(pretty: pretty) + "\n").utf8))
        }
    }
}

struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert JSON back to an image file (crit encode).",
        discussion: """
        Reads what cryo decode or crit decode (with or without --pretty) printed and writes the \
        image bytes: encode(decode(x)) is byte for byte x.
        """)

    @Option(name: [.customShort("i"), .customLong("in")], help: "The JSON file (default: standard input).")
    var input: String?

    @Option(name: [.customShort("o"), .customLong("out")], help: "Where to write the image (default: standard output).")
    var output: String?

    func run() throws {
        try inspecting {
            let name = input ?? "-"
            let json = try JSONValue.parse(try readInput(name), file: name)
            try writeOutput(output, try ImageJSON.encode(json, file: name))
        }
    }
}
