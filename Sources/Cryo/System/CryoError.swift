import SystemPackage

/// An error Cryo reports to its user: what failed, on which object, and why.
///
/// Every failure path ends in one of these, so the command line can print one clear line and
/// exit non-zero instead of crashing.
public struct CryoError: Error, CustomStringConvertible, Sendable {
    /// The full, human-readable message.
    public var description: String

    /// An error with a ready message.
    public init(_ description: String) {
        self.description = description
    }

    /// An error caused by a failed system call: `what` names the operation and its object.
    public init(_ what: String, errno: Errno) {
        self.description = "\(what): \(errno.description) (errno \(errno.rawValue))"
    }

    /// Wraps another error with more context, keeping its message.
    public static func wrapping(_ context: String, _ error: any Error) -> CryoError {
        CryoError("\(context): \(error)")
    }
}

/// Turns a libc-style return value (-1 with errno) into a thrown `CryoError`.
@discardableResult
@inline(__always)
func check<T: BinaryInteger>(_ result: T, _ what: @autoclosure () -> String) throws -> T {
    if result < 0 {
        throw CryoError(what(), errno: Errno(rawValue: errnoValue))
    }
    return result
}

#if canImport(Glibc)
import Glibc
var errnoValue: Int32 { Glibc.errno }
#endif
