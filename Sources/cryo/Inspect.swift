import ArgumentParser
import Cryo

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Summarize a checkpoint: tree, commands, options, sizes, files, sockets, statistics.",
        discussion: """
        The one screen to read first about an images directory (Cryo's or CRIU's): when it was \
        dumped and how, the process tree with command lines, memory mapped and dumped, open \
        files and sockets, and the dump/restore timing figures. --json prints the same as \
        stable JSON (format "cryo-inspect/1"; sizes in bytes, times in microseconds).
        """)

    @Argument(help: "The images directory.")
    var directory: String

    @Flag(help: "Machine-readable JSON.")
    var json = false

    func run() throws {
        try inspecting {
            let summary = try DumpSummary(DumpImages(directory: directory))
            print(json ? summary.json.rendered(pretty: true) : summary.text, terminator: json ? "\n" : "")
        }
    }
}
