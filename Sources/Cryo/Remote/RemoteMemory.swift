import CLinux
import Glibc
import SystemPackage

/// Reading and writing another process's memory with process_vm_readv/writev.
public struct RemoteMemory: Sendable {
    /// The process whose memory this is.
    public let pid: pid_t

    public init(pid: pid_t) { self.pid = pid }

    /// Copies `buffer.count` bytes from `address` in the process into `buffer`.
    public func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = cl_process_vm_readv(pid, buffer.baseAddress! + done, buffer.count - done, address + UInt64(done))
            if n <= 0 {
                throw CryoError("cannot read \(buffer.count - done) bytes at 0x\(String(address + UInt64(done), radix: 16)) in process \(pid)",
                                errno: Errno(rawValue: n < 0 ? errnoValue : EFAULT))
            }
            done += n
        }
    }

    /// Reads `count` bytes at `address`.
    public func read(_ address: UInt64, count: Int) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        try result.withUnsafeMutableBytes { try read(address, into: $0) }
        return result
    }

    /// Reads one value of a trivial type at `address`.
    public func read<T>(_ type: T.Type, at address: UInt64) throws -> T {
        let bytes = try read(address, count: MemoryLayout<T>.size)
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: T.self) }
    }

    /// Copies `bytes` to `address` in the process (the mapping must be writable).
    public func write(_ address: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = cl_process_vm_writev(pid, bytes.baseAddress! + done, bytes.count - done, address + UInt64(done))
            if n <= 0 {
                throw CryoError("cannot write \(bytes.count - done) bytes at 0x\(String(address + UInt64(done), radix: 16)) in process \(pid)",
                                errno: Errno(rawValue: n < 0 ? errnoValue : EFAULT))
            }
            done += n
        }
    }

    /// Writes `bytes` at `address`.
    public func write(_ address: UInt64, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write(address, $0) }
    }

    /// Writes one value of a trivial type at `address`.
    public func write<T>(_ value: T, at address: UInt64) throws {
        try withUnsafeBytes(of: value) { try write(address, $0) }
    }
}

extension RemoteMemory {
    /// Writes an array of trivial values at `address`.
    public func write<T>(_ values: [T], at address: UInt64) throws {
        try values.withUnsafeBytes { try write(address, $0) }
    }
}
