import ArgumentParser
import Cryo
import Glibc

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
