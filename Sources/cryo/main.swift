import ArgumentParser
import Cryo
import Glibc

/// Options every command shares: where the images are and where the log goes (CRIU's `-D`,
/// `-o`, `-v`).
struct CommonOptions: ParsableArguments {
    @Option(name: [.customShort("D"), .customLong("images-dir")], help: "The images directory.")
    var imagesDir: String = "."

    @Option(name: [.customShort("o"), .customLong("log-file")],
            help: ArgumentHelp("Write the log to FILE: a plain name goes into the images directory.", valueName: "FILE"))
    var logFile: String?

    @Option(name: .customLong("verbosity"),
            help: ArgumentHelp("How much to log, 0-4 (also -v, -vv, ..., -v4 as in CRIU).", valueName: "N"))
    var verbosity: Int = 2

    @Flag(name: .customLong("display-stats"), help: "Print timing and page statistics when done.")
    var displayStats = false

    func makeLog() throws -> Log {
        guard let logFile else { return try Log(level: verbosity) }
        return try Log(level: verbosity, path: logFile.contains("/") ? logFile : "\(imagesDir)/\(logFile)")
    }
}

/// Runs `body`, turning a `CryoError` into one `Error:` line and exit status 1, as CRIU does.
func reporting<T>(_ log: Log?, _ body: () throws -> T) throws -> T {
    do { return try body() } catch {
        log?.error("\(error)")
        if log == nil { fputs("Error: \(error)\n", stderr) }
        throw ExitCode(1)
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that this kernel has what checkpoint and restore need.",
        discussion: "Probes each kernel feature Cryo relies on and says which are missing and what that disables. Exits 0 when dump and restore can work.")

    func run() throws {
        let results = FeatureCheck.run()
        var fatal = false
        for r in results {
            print("\(r.ok ? "ok  " : (r.required ? "FAIL" : "warn")) \(r.name)\(r.ok ? "" : ": \(r.detail)")")
            if !r.ok && r.required { fatal = true }
        }
        if fatal { print("Dump and restore cannot work here."); throw ExitCode(1) }
        print("Looks good.")
    }
}

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

    @Flag(name: [.customShort("j"), .customLong("shell-job")], help: "Allow a process that belongs to a session it does not lead.")
    var shellJob = false

    func run() throws {
        let log = try reporting(nil) { try common.makeLog() }
        let stats = try reporting(log) {
            let images = try ImageDirectory(path: common.imagesDir, create: false, writable: true)
            var options = DumpOptions(pid: pid, images: images)
            options.afterDump = leaveStopped ? .stop : leaveRunning ? .resume : .kill
            options.shellJob = shellJob
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
            Memory pages written: \(stats.pagesWritten) (0x\(String(stats.pagesWritten, radix: 16)))
            """)
        }
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bring a checkpointed process back from an images directory.",
        discussion: """
        Recreates the process with its original PID and thread ids, memory, registers, files \
        and signal state. Without -d, cryo stays the restored process's parent and exits with \
        its exit status; with -d it exits as soon as the process runs.
        """)

    @OptionGroup var common: CommonOptions

    @Flag(name: [.customShort("d"), .customLong("restore-detached")], help: "Exit once the process runs instead of waiting for it.")
    var detached = false

    @Option(name: .customLong("pidfile"), help: ArgumentHelp("Write the restored process's pid to FILE.", valueName: "FILE"))
    var pidfile: String?

    @Flag(name: [.customShort("j"), .customLong("shell-job")], help: "Accepted for compatibility with CRIU.")
    var shellJob = false

    func run() throws {
        let log = try reporting(nil) { try common.makeLog() }
        let (pid, images) = try reporting(log) {
            let images = try ImageDirectory(path: common.imagesDir)
            return (try Restorer.restore(RestoreOptions(images: images), log: log), images)
        }
        if let pidfile {
            try reporting(log) {
                guard let f = fopen(pidfile, "w") else { throw CryoError("cannot write pidfile \(pidfile)") }
                fputs("\(pid)\n", f)
                fclose(f)
            }
        }
        if common.displayStats, let s = Restorer.statistics(images) {
            print("""
            Displaying restore stats:
            Pages compared: \(s.pagesCompared) (0x\(String(s.pagesCompared, radix: 16)))
            Pages skipped COW: \(s.pagesSkippedCow) (0x\(String(s.pagesSkippedCow, radix: 16)))
            Pages restored: \(s.pagesRestored) (0x\(String(s.pagesRestored, radix: 16)))
            Restore time: \(s.restoreTime) us
            Forking time: \(s.forkingTime) us
            """)
        }
        if detached { return }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = WaitStatus.decode(status)
        throw ExitCode(code)
    }
}

struct CryoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cryo",
        abstract: "Checkpoint a running process to disk and restore it later.",
        discussion: """
        Cryo speaks CRIU's language: its commands, options and image format. Images can be read \
        with crit. Nothing is injected into the target: it is examined and rebuilt from outside \
        with ptrace and remote system calls.

        Examples:
          cryo dump -t 1234 -D /tmp/img -o dump.log -v4
          cryo restore -D /tmp/img -d --pidfile /tmp/img/pid
        """,
        version: cryoVersion,
        subcommands: [Check.self, Dump.self, Restore.self])
}

/// CRIU's `-v4` and `-vvvv` spellings, turned into `--verbosity N` for the parser.
func normalizedArguments(_ args: [String]) -> [String] {
    args.flatMap { arg -> [String] in
        if arg.count >= 2, arg.hasPrefix("-v"), !arg.hasPrefix("--") {
            let rest = arg.dropFirst(2)
            if let n = Int(rest) { return ["--verbosity", "\(n)"] }
            if rest.allSatisfy({ $0 == "v" }) { return ["--verbosity", "\(rest.count + 1)"] }
        }
        return [arg]
    }
}

CryoCommand.main(normalizedArguments(Array(CommandLine.arguments.dropFirst())))
