import Glibc

/// Cryo's log, CRIU-style: `-o FILE` sends it to a file, `-v N` sets how much is said
/// (0 errors only, 1 + warnings, 2 + information (default), 3 and 4 + debugging detail).
/// Errors and warnings also go to standard error when the log is a file.
public final class Log: @unchecked Sendable {
    /// Verbosity, CRIU's `-v` levels.
    public let level: Int
    private let file: UnsafeMutablePointer<FILE>?
    private let start = monotonicMicroseconds()

    /// A log at `level`, written to `path` (nil: standard error).
    public init(level: Int = 2, path: String? = nil) throws {
        self.level = level
        if let path {
            guard let f = fopen(path, "a") else {
                throw CryoError("cannot open log file \(path)", errno: .init(rawValue: errnoValue))
            }
            file = f
        } else {
            file = nil
        }
    }

    deinit { if let file { fclose(file) } }

    private func write(_ level: Int, _ tag: String, _ message: String) {
        let elapsed = Double(monotonicMicroseconds() - start) / 1_000_000
        let line = "(\(String(format: "%.6f", elapsed))) \(tag)\(message)\n"
        if let file {
            if level <= self.level { fputs(line, file); fflush(file) }
            if level <= 1 { fputs("\(tag)\(message)\n", Glibc.stderr) }
        } else if level <= self.level {
            fputs(line, Glibc.stderr)
        }
    }

    /// Something failed.
    public func error(_ message: @autoclosure () -> String) { write(0, "Error: ", message()) }
    /// Something is not as it should be, but the work goes on.
    public func warn(_ message: @autoclosure () -> String) { write(1, "Warn: ", message()) }
    /// What is being done.
    public func info(_ message: @autoclosure () -> String) { if level >= 2 || file != nil { write(2, "", message()) } }
    /// Detail for debugging.
    public func debug(_ message: @autoclosure () -> String) { if level >= 3 { write(3, "", message()) } }
}

import Foundation
