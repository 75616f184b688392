import CLinux
import Glibc
import SystemPackage

/// Pipes: `files.img` entries of type PIPE (one per open file description, naming the pipe by
/// its inode) and `pipes-data.img` (what was in each pipe's buffer, and its capacity).
///
/// Dump reads a pipe's buffer without consuming it: Cryo takes a read end with
/// `pidfd_getfd` and `tee`s its contents into a pipe of its own. Restore creates each pipe in
/// Cryo, refills it, and hands its ends to the processes (`FDInstaller`).
enum PipeResource {
    static let setPipeSize: Int32 = 1031  // F_SETPIPE_SZ
    static let getPipeSize: Int32 = 1032  // F_GETPIPE_SZ

    /// The buffered data of a pipe, read through `readEnd` (an fd of process `pid`).
    static func capture(pipeID: UInt32, pid: pid_t, readEnd: Int32) throws -> (PipeDataEntry, [UInt8]) {
        let local = try takeDescriptor(pid: pid, fd: readEnd)
        defer { close(local) }
        return try capture(pipeID: pipeID, through: local, what: "pipe:[\(pipeID)] (fd \(readEnd) of process \(pid))")
    }

    /// The buffered data of a pipe or FIFO, read through Cryo's own read end `local`.
    static func capture(pipeID: UInt32, through local: Int32, what: String) throws -> (PipeDataEntry, [UInt8]) {
        let capacity = fcntl(local, getPipeSize)
        guard capacity > 0 else { throw CryoError("F_GETPIPE_SZ on \(what)", errno: Errno(rawValue: errnoValue)) }
        var ends: [Int32] = [0, 0]
        guard makePipe(&ends, O_CLOEXEC | O_NONBLOCK) == 0 else { throw CryoError("pipe2", errno: Errno(rawValue: errnoValue)) }
        defer { close(ends[0]); close(ends[1]) }
        guard fcntl(ends[1], setPipeSize, capacity) >= capacity else {
            throw CryoError("cannot size a pipe to \(capacity) bytes to copy \(what)", errno: Errno(rawValue: errnoValue))
        }
        var data: [UInt8] = []
        // tee(2) with SPLICE_F_NONBLOCK (2): duplicates without consuming.
        let n = cl_raw_syscall6(276, Int(local), Int(ends[1]), Int(capacity), 2, 0, 0)
        if n < 0 && n != -Int(EAGAIN) {
            throw CryoError("cannot copy the contents of \(what)", errno: Errno(rawValue: Int32(-n)))
        }
        if n > 0 {
            data = [UInt8](repeating: 0, count: n)
            var done = 0
            while done < n {
                let r = data.withUnsafeMutableBytes { read(ends[0], $0.baseAddress! + done, n - done) }
                guard r > 0 else { throw CryoError("reading the copy of \(what)", errno: Errno(rawValue: errnoValue)) }
                done += r
            }
        }
        var entry = PipeDataEntry()
        entry.pipeID = pipeID
        entry.bytes = UInt32(data.count)
        entry.size = UInt32(capacity)
        return (entry, data)
    }

    /// Appends one `pipes-data.img` record: the entry, then its raw bytes.
    static func append(_ entry: PipeDataEntry, _ data: [UInt8], to image: inout [UInt8]) throws {
        try ImageCodec.appendEntry(entry, to: &image)
        image += data
    }

    /// Gives a new pipe (or FIFO) the capacity `size` and fills it with `data`, written
    /// through `writeEnd`.
    static func refill(_ writeEnd: Int32, size: Int32, data: [UInt8], what: String) throws {
        if size > 0 && fcntl(writeEnd, setPipeSize, size) < 0 {
            throw CryoError("cannot give \(what) its capacity of \(size) bytes", errno: Errno(rawValue: errnoValue))
        }
        var done = 0
        while done < data.count {
            let n = data.withUnsafeBytes { write(writeEnd, $0.baseAddress! + done, data.count - done) }
            guard n > 0 else { throw CryoError("refilling \(what)", errno: Errno(rawValue: errnoValue)) }
            done += n
        }
    }

    /// Reads `pipes-data.img` or `fifo-data.img` (absent: no pipe had data).
    static func load(_ images: ImageDirectory, name: String = "pipes-data.img",
                     magic: ImageMagic = .pipesData) throws -> [UInt32: (size: Int32, data: [UInt8])] {
        guard images.contains(name) else { return [:] }
        var result: [UInt32: (Int32, [UInt8])] = [:]
        for (entry, data) in try images.readWithPayloads(name, magic: magic, as: PipeDataEntry.self,
                                                         payloadLength: { Int($0.bytes) }) {
            result[entry.pipeID] = (Int32(entry.size), data)
        }
        return result
    }
}

/// The pipes of one restore, created in Cryo and refilled; their ends go to the processes.
final class PipeTable {
    private let contents: [UInt32: (size: Int32, data: [UInt8])]
    private var pipes: [UInt32: (read: Int32, write: Int32)] = [:]
    private var descriptions: [UInt32: Int32] = [:]
    private var endsInUse = Set<Int32>()

    init(_ images: ImageDirectory) throws {
        contents = try PipeResource.load(images)
    }

    deinit {
        for p in pipes.values { close(p.read); close(p.write) }
        for d in descriptions.values where !endsInUse.contains(d) { close(d) }
    }

    /// Cryo's fd for the open file description `entry` (a PIPE file entry).
    func descriptor(for entry: FileEntry) throws -> Int32 {
        if let fd = descriptions[entry.id] { return fd }
        let pipeID = entry.pipe.pipeID
        let ends = try pipe(pipeID)
        let end = Int32(bitPattern: entry.pipe.flags) & O_ACCMODE == O_WRONLY ? ends.write : ends.read
        var fd = end
        if endsInUse.contains(end) {
            // A second description of the same end: open the pipe again through /proc.
            fd = open("/proc/self/fd/\(end)", Int32(bitPattern: entry.pipe.flags) & O_ACCMODE | O_CLOEXEC)
            guard fd >= 0 else { throw CryoError("cannot reopen pipe:[\(pipeID)]", errno: Errno(rawValue: errnoValue)) }
        }
        endsInUse.insert(end)
        descriptions[entry.id] = fd
        return fd
    }

    private func pipe(_ id: UInt32) throws -> (read: Int32, write: Int32) {
        if let p = pipes[id] { return p }
        var ends: [Int32] = [0, 0]
        guard makePipe(&ends, O_CLOEXEC) == 0 else { throw CryoError("pipe2 for pipe:[\(id)]", errno: Errno(rawValue: errnoValue)) }
        pipes[id] = (ends[0], ends[1])
        if let c = contents[id] { try PipeResource.refill(ends[1], size: c.size, data: c.data, what: "pipe:[\(id)]") }
        return (ends[0], ends[1])
    }
}

/// pipe2(2), which Swift's Glibc does not export; -1 with errno on failure.
func makePipe(_ ends: inout [Int32], _ flags: Int32) -> Int32 {
    let r = ends.withUnsafeMutableBufferPointer { cl_raw_syscall6(Syscall.pipe2, Int(bitPattern: $0.baseAddress), Int(flags), 0, 0, 0, 0) }
    if r < 0 { errno = Int32(-r); return -1 }
    return 0
}

/// A copy of fd `fd` of process `pid` in Cryo (pidfd_getfd).
func takeDescriptor(pid: pid_t, fd: Int32) throws -> Int32 {
    let pidfd = Int32(cl_raw_syscall6(Syscall.pidfd_open, Int(pid), 0, 0, 0, 0, 0))
    guard pidfd >= 0 else { throw CryoError("pidfd_open(\(pid))", errno: Errno(rawValue: -pidfd)) }
    defer { close(pidfd) }
    let local = Int32(cl_raw_syscall6(Syscall.pidfd_getfd, Int(pidfd), Int(fd), 0, 0, 0, 0))
    guard local >= 0 else { throw CryoError("cannot take fd \(fd) of process \(pid) (pidfd_getfd)", errno: Errno(rawValue: -local)) }
    return local
}
