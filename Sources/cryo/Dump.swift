import ArgumentParser
import Cryo
import Glibc

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Checkpoint a process into an images directory.",
        discussion: """
        Freezes every thread of PID, writes its state as CRIU-format images into the images \
        directory, and then kills it (the default), leaves it running (-R) or leaves it stopped \
        (-s). If anything fails, the process is left running exactly as it was, and the exit \
        status is 1.
        """)

    @Option(name: [.customShort("t"), .customLong("tree")], help: "The process to dump.")
    var pid: Int32

    @OptionGroup var common: CommonOptions

    @Flag(name: [.customShort("R"), .customLong("leave-running")], help: "Let the process continue after the dump.")
    var leaveRunning = false

    @Flag(name: [.customShort("s"), .customLong("leave-stopped")], help: "Leave the process stopped (SIGSTOP) after the dump.")
    var leaveStopped = false

    @OptionGroup var shellJob: ShellJobOption

    @Flag(name: .customLong("file-locks"), help: "Save the file locks the processes hold (flock, POSIX, OFD).")
    var fileLocks = false

    @Option(name: .customLong("ghost-limit"),
            help: ArgumentHelp("Save deleted-but-open files up to SIZE bytes (K, M, G suffixes; default 1M).", valueName: "SIZE"))
    var ghostLimit: String?

    @Flag(name: .customLong("ext-unix-sk"),
          help: "Dump datagram unix sockets connected to a named socket outside the tree; restore connects them to that name again.")
    var externalUnixSockets = false

    @Flag(name: .customLong("no-cow-dedup"),
          help: "Store every process's pages in full, also those a child shares copy-on-write with its parent (by default stored once, in the parent's image, with a pagemap flag CRIU does not know): images CRIU itself can restore.")
    var noCOWDedup = false

    func run() throws {
        let log = try reporting(nil) { try common.makeLog() }
        let stats = try reporting(log) {
            let images = try ImageDirectory(path: common.imagesDir, create: false, writable: true)
            var options = DumpOptions(pid: pid, images: images)
            options.afterDump = leaveStopped ? .stop : leaveRunning ? .resume : .kill
            options.shellJob = shellJob.shellJob
            options.fileLocks = fileLocks
            options.externalUnixSockets = externalUnixSockets
            options.cowDedup = !noCOWDedup
            if let ghostLimit {
                guard let bytes = parseSize(ghostLimit) else { throw CryoError("--ghost-limit \(ghostLimit): not a size") }
                options.ghostLimit = bytes
            }
            return try Dumper.dump(options, log: log)
        }
        if common.displayStats {
            print("""
            Displaying dump stats:
            Freezing time: \(stats.freezingTime) us
            Frozen time: \(stats.frozenTime) us
            Memory dump time: \(stats.memdumpTime) us
            Memory write time: \(stats.memwriteTime) us
            Memory pages scanned: \(stats.pagesScanned) (0x\(String(stats.pagesScanned, radix: 16)))
            Memory pages skipped from parent: \(stats.pagesSkippedParent) (0x\(String(stats.pagesSkippedParent, radix: 16)))
            Memory pages written: \(stats.pagesWritten) (0x\(String(stats.pagesWritten, radix: 16)))
            """)
        }
    }
}

/// "1048576", "512K", "1M", "2G" -> bytes.
func parseSize(_ text: String) -> Int? {
    let units: [Character: Int] = ["K": 1 << 10, "k": 1 << 10, "M": 1 << 20, "m": 1 << 20, "G": 1 << 30, "g": 1 << 30]
    if let last = text.last, let unit = units[last] { return Int(text.dropLast()).map { $0 * unit } }
    return Int(text)
}
