import ArgumentParser
import Foundation
import Cryo
import Glibc

struct CryoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        // Installed as `criu`, it answers to that name (the same commands and options).
        commandName: CommandLine.arguments.first.map { ($0 as NSString).lastPathComponent == "criu" ? "criu" : "cryo" } ?? "cryo",
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
        subcommands: [Check.self, Dump.self, Restore.self, Show.self, Decode.self, Encode.self, ExploreCommand.self, Memparse.self, Coredump.self, Inspect.self])
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
