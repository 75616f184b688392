import ArgumentParser
import Cryo
import Glibc

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

    @OptionGroup var shellJob: ShellJobOption

    @Flag(name: .customLong("ext-unix-sk"),
          help: "Accepted as CRIU does: datagram sockets dumped with --ext-unix-sk are connected to their outside name again.")
    var externalUnixSockets = false

    @Option(name: .customLong("restore-threads"),
            help: ArgumentHelp("Rebuild processes on N threads at once (a Cryo extension; default: one per CPU, at most 8; 1 restores one process after the other).", valueName: "N"))
    var restoreThreads: Int?

    func validate() throws {
        if let restoreThreads, restoreThreads < 1 { throw ValidationError("--restore-threads must be at least 1") }
    }

    func run() throws {
        let log = try reporting(nil) { try common.makeLog() }
        let (pid, images) = try reporting(log) {
            let images = try ImageDirectory(path: common.imagesDir)
            var options = RestoreOptions(images: images)
            options.shellJob = shellJob.shellJob
            if let restoreThreads { options.tracers = restoreThreads }
            return (try Restorer.restore(options, log: log), images)
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
