import CLinux
import Glibc
import SystemPackage

/// FIFOs (named pipes): a `files.img` entry of type FIFO per open file description, naming the
/// pipe by the FIFO's inode and pointing (`regf_id`) at a regular-file entry that holds its path
/// and open flags, as CRIU writes them; what is buffered in each FIFO goes to `fifo-data.img`
/// (the same records as `pipes-data.img`).
///
/// Dump copies the buffer without consuming it, as for pipes (`PipeResource.capture`).
/// Restore opens each FIFO in Cryo read-write first: with a reader and a writer present the
/// processes' own opens never block, and the buffer is refilled through it. Cryo keeps that
/// fd until the restore ends, so the data stays even if the processes hold only one end.
enum FifoResource {
    /// The FIFO entry for a description whose path entry is `regfID`.
    static func entry(id: UInt32, regfID: UInt32, inode: UInt32) -> FileEntry {
        var fifo = FifoEntry()
        fifo.id = id
        fifo.pipeID = inode
        fifo.regfID = regfID
        var file = FileEntry()
        file.type = .fifo
        file.id = id
        file.fifo = fifo
        return file
    }

    /// The buffered data of the FIFO that fd `fd` of `pid` is open on. Cryo opens the FIFO for
    /// reading itself (through the fd's magic link), so a write-only fd is enough.
    static func capture(pipeID: UInt32, pid: pid_t, fd: Int32) throws -> (PipeDataEntry, [UInt8]) {
        let local = open("/proc/\(pid)/fd/\(fd)", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard local >= 0 else { throw CryoError("cannot open the FIFO of fd \(fd) of process \(pid)", errno: Errno(rawValue: errnoValue)) }
        defer { close(local) }
        return try PipeResource.capture(pipeID: pipeID, through: local, what: "the FIFO of fd \(fd) of process \(pid)")
    }
}

/// The FIFOs of one restore, opened in Cryo; each description goes to every process that had it.
final class FifoTable {
    private let contents: [UInt32: (size: Int32, data: [UInt8])]
    /// FIFO inode at dump time -> Cryo's read-write fd on it.
    private var holders: [UInt32: Int32] = [:]
    /// File id -> Cryo's fd for that description.
    private var descriptions: [UInt32: Int32] = [:]

    init(_ images: ImageDirectory) throws {
        contents = try PipeResource.load(images, name: "fifo-data.img", magic: .fifoData)
    }

    deinit {
        for fd in holders.values { close(fd) }
        for fd in descriptions.values { close(fd) }
    }

    /// Cryo's fd for the FIFO description `file`; `path` is the entry its `regf_id` names.
    func descriptor(for file: FileEntry, path: FileEntry?) throws -> Int32 {
        if let fd = descriptions[file.id] { return fd }
        guard let path, path.hasReg else {
            throw CryoError("cannot restore FIFO id \(file.id): files.img has no path entry \(file.fifo.regfID) for it")
        }
        let name = path.reg.name
        let holder = try self.holder(pipeID: file.fifo.pipeID, name: name)
        let flags = Int32(bitPattern: path.reg.flags) & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY)
        // The magic link reopens the very inode the holder has, even if the path changed since.
        let fd = open("/proc/self/fd/\(holder)", flags | O_CLOEXEC)
        guard fd >= 0 else { throw CryoError("cannot open FIFO \(name)", errno: Errno(rawValue: errnoValue)) }
        descriptions[file.id] = fd
        return fd
    }

    private func holder(pipeID: UInt32, name: String) throws -> Int32 {
        if let fd = holders[pipeID] { return fd }
        let fd = open(name, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw CryoError("cannot restore: cannot open FIFO \(name)", errno: Errno(rawValue: errnoValue)) }
        holders[pipeID] = fd
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFIFO else {
            throw CryoError("cannot restore: \(name) is no longer a FIFO")
        }
        if let c = contents[pipeID] { try PipeResource.refill(fd, size: c.size, data: c.data, what: "FIFO \(name)") }
        return fd
    }
}
