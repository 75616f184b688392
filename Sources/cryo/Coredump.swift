import ArgumentParser
import Cryo
import Glibc

struct Coredump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an ELF core file per dumped process (criu-coredump), for gdb.",
        discussion: """
        Each process of the dump (or only --pid) becomes OUTDIR/core.PID with every thread's \
        registers (general, FPU, XSAVE), the auxiliary vector, the mapped files and one load \
        segment per mapping, so that `gdb PROGRAM core.PID` shows the threads, backtraces and \
        variables as they were at the dump. Untouched memory is left as holes in the file.

        Example:
          cryo coredump -D /tmp/img -o /tmp/cores && gdb ./server /tmp/cores/core.1234
        """)

    @Option(name: [.customShort("D"), .customShort("i"), .customLong("images-dir")], help: "The images directory.")
    var imagesDir: String = "."

    @Option(name: [.customShort("o"), .customLong("out")], help: "The directory to write core.PID files into.")
    var outputDir: String = "."

    @Option(help: "Only this process (default: every process of the dump).")
    var pid: UInt32?

    func run() throws {
        try inspecting {
            let images = try DumpImages(directory: imagesDir)
            var st = stat()
            if stat(outputDir, &st) != 0 {
                guard mkdir(outputDir, 0o755) == 0 else {
                    throw ImageFormatError(.io, file: outputDir, offset: nil, "cannot create: \(String(cString: strerror(errno)))")
                }
            }
            let pids = pid.map { [$0] } ?? images.pids
            if let pid, !images.pids.contains(pid) {
                throw ImageFormatError(.inconsistent, file: images.path("pstree.img"), offset: nil, "has no process \(pid)")
            }
            for pid in pids {
                let process = try images.process(pid)
                if process.isZombie && self.pid == nil {
                    print("\(pid): zombie, no core")
                    continue
                }
                let s = try CoreDump.write(images, pid: pid, to: "\(outputDir)/core.\(pid)")
                print("\(s.path): \(process.command), \(s.threads.count) thread\(s.threads.count == 1 ? "" : "s"), \(s.segments) segments, \(humanBytes(s.size))")
            }
        }
    }
}
