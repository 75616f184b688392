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

/// CRIU's `--shell-job`, the same on dump and restore.
struct ShellJobOption: ParsableArguments {
    @Flag(name: [.customShort("j"), .customLong("shell-job")],
          help: "Dump: allow a tree started from a shell (its session and terminal outside the dump). Restore: put such a tree in cryo's session, process group and terminal.")
    var shellJob = false
}

/// Runs `body`, turning a `CryoError` into one `Error:` line and exit status 1, as CRIU does.
func reporting<T>(_ log: Log?, _ body: () throws -> T) throws -> T {
    do { return try body() } catch {
        log?.error("\(error)")
        if log == nil { fputs("Error: \(error)\n", stderr) }
        throw ExitCode(1)
    }
}
