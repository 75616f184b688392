import CLinux
import Glibc
import SystemPackage

/// Puts file descriptors Cryo holds into another process's fd table, from outside.
///
/// The process makes a socketpair (remote call); Cryo takes one end with `pidfd_getfd`, sends
/// fds over it with SCM_RIGHTS, and the process receives them with a remote `recvmsg`. This is
/// how objects Cryo creates itself (pipes, sockets...) and descriptions shared between
/// processes reach every process that had them.
final class FDInstaller {
    private let process: RemoteProcess
    /// The process's end of the socketpair.
    private let remoteEnd: UInt64
    /// Cryo's end.
    private let localEnd: Int32

    /// Sets up the channel; the process's end is moved to fd `spare` or above.
    init(_ process: RemoteProcess, spare: UInt64) throws {
        self.process = process
        let scratch = process.scratch!.address
        try process.checkedSyscall("socketpair", 53, [UInt64(AF_UNIX), UInt64(SOCK_DGRAM.rawValue) | UInt64(SOCK_CLOEXEC.rawValue), 0, scratch])
        let pair = try process.memory.read(UInt64.self, at: scratch)
        let a = pair & 0xffff_ffff, b = pair >> 32
        remoteEnd = UInt64(try process.checkedSyscall("fcntl(F_DUPFD_CLOEXEC)", Syscall.fcntl, [a, 1030 /* F_DUPFD_CLOEXEC */, spare]))
        localEnd = try takeDescriptor(pid: process.pid, fd: Int32(b))
        _ = try process.checkedSyscall("close", Syscall.close, [a])
        _ = try process.checkedSyscall("close", Syscall.close, [b])
    }

    /// Installs `fd` (Cryo's) as fd `target` in the process.
    func install(_ fd: Int32, at target: UInt64) throws {
        guard cl_send_fd(localEnd, fd) == 0 else { throw CryoError("cannot pass fd \(target) to process \(process.pid)", errno: Errno(rawValue: errnoValue)) }
        let scratch = process.scratch!.address
        // struct msghdr (56 bytes) at scratch, iovec at +64, 1 byte at +80, control buffer at +96.
        let control: UInt64 = scratch + 96
        let header: [UInt64] = [0, 0, scratch + 64, 1, control, 24, 0]
        try process.memory.write(header, at: scratch)
        try process.memory.write([scratch + 80, 1], at: scratch + 64)
        _ = try process.checkedSyscall("recvmsg", 47, [remoteEnd, scratch, UInt64(MSG_CMSG_CLOEXEC)])
        let cmsg = try process.memory.read(control, count: 24)
        let received = cmsg.withUnsafeBytes { UInt64($0.loadUnaligned(fromByteOffset: 16, as: Int32.self)) }
        if received != target {
            _ = try process.checkedSyscall("dup2 to fd \(target)", Syscall.dup2, [received, target])
            _ = try process.checkedSyscall("close", Syscall.close, [received])
        }
    }

    /// Closes both ends.
    func close() {
        _ = try? process.syscall(Syscall.close, remoteEnd)
        Glibc.close(localEnd)
    }
}
