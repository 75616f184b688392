@testable import Cryo
import Glibc
import XCTest

/// The batch loop (`cl_batch_code`), run in a real stopped process: results come back in
/// order, a call that may fail lets the rest run, the first one that may not stops the batch
/// and is named in the error, and a batch longer than the record area is run in chunks.
final class RemoteBatchTests: XCTestCase {
    private var child: pid_t = 0

    override func setUpWithError() throws {
        // posix_spawn, not Foundation's Process: its reaper thread would take our ptrace stops.
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("sleep"), strdup("100"), nil]
        defer { argv.forEach { free($0) } }
        XCTAssertEqual(posix_spawn(&child, "/bin/sleep", nil, nil, argv, environ), 0)
        // Until it runs sleep itself, its comm is still the spawner's.
        for _ in 0..<500 where (try? ProcDirectory(pid: child).text("comm")) != "sleep\n" { usleep(2000) }
    }

    override func tearDown() {
        kill(child, SIGKILL)
        var status: Int32 = 0
        waitpid(child, &status, __WALL)
    }

    func testResultsMayFailAndChunks() throws {
        let process = try RemoteProcess.freeze(child)
        defer { process.release(.resume) }
        _ = try process.scratchArea()
        XCTAssertNotNil(process.batchCode, "the dump scratch area has no batch loop")
        var batch = try SyscallBatch(for: process)
        batch.add("getpid", Syscall.getpid)
        batch.add("close(-1)", Syscall.close, UInt64.max, mayFail: true)
        for _ in 0..<1500 { batch.add("getpid", Syscall.getpid) }  // several chunks
        let results = try process.run(batch)
        XCTAssertEqual(results.count, 1502)
        XCTAssertEqual(results[0], Int64(child))
        XCTAssertEqual(results[1], -Int64(EBADF))
        XCTAssertEqual(Set(results[2...]), [Int64(child)])
    }

    func testFirstFailureStopsTheBatchAndIsNamed() throws {
        let process = try RemoteProcess.freeze(child)
        defer { process.release(.resume) }
        _ = try process.scratchArea()
        var batch = try SyscallBatch(for: process)
        batch.add("close(-1) that may fail", Syscall.close, UInt64.max, mayFail: true)
        batch.add("open of /nonexistent/cryo", Syscall.openat, UInt64(bitPattern: -100), try batch.place("/nonexistent/cryo"), 0, 0)
        // Must not run: it would rename the process.
        batch.add("prctl(PR_SET_NAME)", Syscall.prctl, 15, try batch.place("renamed"))
        XCTAssertThrowsError(try process.run(batch)) { error in
            XCTAssertTrue("\(error)".contains("open of /nonexistent/cryo"), "\(error)")
            XCTAssertTrue("\(error)".contains("No such file"), "\(error)")
        }
        XCTAssertEqual(try ProcDirectory(pid: child).text("comm"), "sleep\n", "a call after the failure ran")
    }
}
