import ArgumentParser
import Cryo

extension Explore.Topic: ExpressibleByArgument {}

struct ExploreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "x",
        abstract: "Explore an images directory (crit x): ps, fds, mems or rss.",
        discussion: """
        ps    the process tree: pid, process group, session, command
        fds   each process's open descriptors and what they point at, its cwd and root
        mems  each process's mappings: address range, protection, backing file or kind
        rss   each process's dumped (resident) pages, against the mappings they belong to
        The layout is crit's, so scripts written for crit x keep working.
        """)

    @Argument(help: "The images directory.")
    var directory: String

    @Argument(help: "What to show: \(Explore.Topic.allCases.map(\.rawValue).joined(separator: ", ")).")
    var topic: Explore.Topic

    func run() throws {
        try inspecting {
            print(try Explore.report(DumpImages(directory: directory), topic), terminator: "")
        }
    }
}
