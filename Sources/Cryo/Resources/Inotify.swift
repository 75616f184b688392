import CLinux
import Glibc
import SystemPackage

/// inotify instances: `files.img` entries of type INOTIFY, one `InotifyWdEntry` per watch with
/// its wd number, mask, inode, device, file handle and the watched path (in the handle's `path`,
/// as CRIU's irmap does).
///
/// Dump: `/proc/PID/fdinfo/N` lists each watch as
/// `inotify wd:3 ino:f8a08e sdev:fe00000 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:...`
/// (wd, ino, sdev and mask in hex). The path is found by opening the handle on a mount of that
/// device (`open_by_handle_at`) and reading back the link of what was opened; it must lead to the
/// same inode, or the dump is refused naming the fd.
///
/// Restore: Cryo creates the instance and adds the watches in wd order. The kernel hands out wds
/// cyclically (the next free number after the last one given), so the numbers below each wanted wd
/// are used up by adding and removing a throwaway watch (as CRIU does, but on a memfd rather than
/// the watched path: see `create`); the IN_IGNORED events that leaves are read off the queue
/// before the process gets the fd. Events that were queued but unread at dump time are lost (CRIU
/// loses them too): the kernel offers no way to read them without consuming them, nor to queue
/// them again. The dump warns when it drops some.
enum InotifyResource {
    /// The link of an inotify fd (no brackets, unlike the other anon_inode kinds).
    static let kinds: [String: FdTypes] = ["anon_inode:inotify": .inotify]
    /// CRIU's `FhEntry` keeps a handle as 16 u64 words (`FH_ENTRY_SIZES__min_entries`).
    static let handleWords = 16

    /// x86_64 numbers of the calls Cryo makes itself, on its side (the instance is handed over).
    static let inotifyInit1 = 294
    static let inotifyAddWatch = 254
    static let inotifyRmWatch = 255
    static let openByHandleAt = 304
    static let memfdCreate = 319
    /// IN_DONT_FOLLOW: watch a symlink itself rather than what it points to.
    static let inDontFollow: UInt32 = 0x0200_0000
    /// O_PATH, which Swift's Glibc does not export.
    static let openPath: Int32 = 0o10_000_000

    /// A userspace `dev_t` (as `stat` gives it) in the kernel's encoding, as fdinfo's `sdev`:
    /// major << 20 | minor (glibc's `major`/`minor` are macros Swift cannot call).
    static func kernelDevice(_ dev: dev_t) -> UInt32 {
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)
        let minor = (dev & 0xff) | ((dev >> 12) & ~0xff)
        return UInt32(truncatingIfNeeded: major << 20 | minor)
    }

    /// The entry for inotify fd `fd` of `pid`, whose fdinfo is `text`.
    static func entry(id: UInt32, flags: UInt32, fdinfo text: String, pid: pid_t, fd: Int32) throws -> FileEntry {
        var ify = InotifyFileEntry()
        ify.id = id; ify.flags = flags; ify.fown = FileTable.noOwner
        var mounts: [(device: UInt32, path: String, id: UInt32)]?
        for watch in FdInfoText.records(text, startingWith: "inotify") {
            func hex(_ key: String) throws -> UInt64 {
                guard let v = watch[key].flatMap({ UInt64($0, radix: 16) }) else {
                    throw CryoError("fd \(fd) of process \(pid) is an inotify instance with a watch Cryo cannot parse (no \(key)): \(watch)")
                }
                return v
            }
            var w = InotifyWdEntry()
            w.id = id
            w.wd = UInt32(try hex("wd"))
            w.iIno = try hex("ino")
            w.sDev = UInt32(try hex("sdev"))
            w.mask = UInt32(try hex("mask"))
            w.ignoredMask = UInt32(try hex("ignored_mask"))
            guard let handleText = watch["f_handle"] else {
                throw CryoError("fd \(fd) of process \(pid) is an inotify instance watching inode \(w.iIno) of device \(w.sDev >> 20):\(w.sDev & 0xfffff) (wd \(w.wd)), whose file system gives no file handle; Cryo cannot find what it watches")
            }
            let bytes = try Self.bytes(fromHex: handleText, count: Int(try hex("fhandle-bytes")), fd: fd, pid: pid)
            var fh = FhEntry()
            fh.bytes = UInt32(bytes.count)
            fh.type = UInt32(try hex("fhandle-type"))
            let padded = bytes + [UInt8](repeating: 0, count: max(0, handleWords * 8 - bytes.count))
            fh.handle = padded.withUnsafeBytes { raw in (0..<(padded.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) } }
            if mounts == nil { mounts = try Self.mounts(of: pid) }
            (fh.path, fh.mntID) = try Self.path(of: w, handle: bytes, type: Int32(bitPattern: fh.type), mounts: mounts!, fd: fd, pid: pid)
            w.fHandle = fh
            ify.wd.append(w)
        }
        var file = FileEntry()
        file.type = .inotify
        file.id = id
        file.ify = ify
        return file
    }

    /// How many bytes of events wait unread in inotify fd `fd` of `pid` (FIONREAD on a copy of
    /// the fd; reading it would consume them), nil if it cannot be told.
    static func unreadBytes(pid: pid_t, fd: Int32) -> Int? {
        guard let local = try? takeDescriptor(pid: pid, fd: fd) else { return nil }
        defer { close(local) }
        var count: Int32 = 0
        return cl_ioctl_ptr(local, 0x541B /* FIONREAD */, &count) == 0 ? Int(count) : nil
    }

    /// fdinfo's `f_handle:` value (two hex digits per byte) as the `count` bytes it stands for.
    private static func bytes(fromHex text: String, count: Int, fd: Int32, pid: pid_t) throws -> [UInt8] {
        let digits = Array(text.utf8)
        guard digits.count == count * 2 else {
            throw CryoError("fd \(fd) of process \(pid): inotify file handle \(text) is not \(count) bytes long")
        }
        return try (0..<count).map { i in
            guard let b = UInt8(String(decoding: digits[(2 * i)..<(2 * i + 2)], as: UTF8.self), radix: 16) else {
                throw CryoError("fd \(fd) of process \(pid): inotify file handle \(text) is not hexadecimal")
            }
            return b
        }
    }

    /// The mounts of `pid`'s mount namespace: kernel device number (major << 20 | minor, as
    /// fdinfo's `sdev`), mount point and mount id.
    private static func mounts(of pid: pid_t) throws -> [(device: UInt32, path: String, id: UInt32)] {
        try ProcDirectory(pid: pid).text("mountinfo").split(separator: "\n").compactMap { line in
            // 27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
            let f = line.split(separator: " ")
            guard f.count > 4, let id = UInt32(f[0]) else { return nil }
            let dev = f[2].split(separator: ":")
            guard dev.count == 2, let major = UInt32(dev[0]), let minor = UInt32(dev[1]) else { return nil }
            return (major << 20 | minor, unescapeMountPath(f[4]), id)
        }
    }

    /// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
    private static func unescapeMountPath(_ s: Substring) -> String {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v); i += 4
            } else {
                out.append(b[i]); i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The path of the watched inode: the handle opened on each mount of its device in turn,
    /// until the link of what was opened names a file that is that inode.
    private static func path(of w: InotifyWdEntry, handle: [UInt8], type: Int32, mounts: [(device: UInt32, path: String, id: UInt32)],
                             fd: Int32, pid: pid_t) throws -> (String, UInt32) {
        let what = "fd \(fd) of process \(pid) is an inotify instance whose watch \(w.wd) is on inode \(w.iIno) of device \(w.sDev >> 20):\(w.sDev & 0xfffff)"
        // struct file_handle { u32 handle_bytes; int handle_type; unsigned char f_handle[]; }
        var fileHandle = withUnsafeBytes(of: UInt32(handle.count)) { Array($0) } + withUnsafeBytes(of: type) { Array($0) } + handle
        var reason = "no mount of that device is visible to the process"
        for mount in mounts where mount.device == w.sDev {
            // mountinfo's mount points are seen from the process's root, which may be chrooted:
            // reach them through it. open_by_handle_at wants a real fd (EBADF for O_PATH).
            let mountFD = open("/proc/\(pid)/root\(mount.path)", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard mountFD >= 0 else { reason = "cannot open its mount \(mount.path): \(Errno(rawValue: errnoValue))"; continue }
            defer { close(mountFD) }
            let opened = fileHandle.withUnsafeMutableBytes { cl_raw_syscall6(openByHandleAt, Int(mountFD), Int(bitPattern: $0.baseAddress), Int(openPath | O_CLOEXEC), 0, 0, 0) }
            guard opened >= 0 else { reason = "its file handle does not open on \(mount.path): \(Errno(rawValue: Int32(-opened)))"; continue }
            defer { close(Int32(opened)) }
            guard let path = try? ProcDirectory(pid: getpid()).link("fd/\(opened)") else { continue }
            var st = stat()
            if path.hasPrefix("/"), !path.hasSuffix(" (deleted)"), lstat(path, &st) == 0, UInt64(st.st_ino) == w.iIno,
               kernelDevice(st.st_dev) == w.sDev {
                return (path, mount.id)
            }
            reason = "the file it opens on \(mount.path) is \(path), which is not reachable by that name"
        }
        throw CryoError("\(what), and Cryo cannot find its path: \(reason)")
    }

    /// Checks, before anything is created, that every watched file is still there.
    static func verifyForRestore(_ file: FileEntry) throws {
        for w in file.ify.wd {
            var st = stat()
            guard lstat(w.fHandle.path, &st) == 0 else {
                throw CryoError("cannot restore: \(w.fHandle.path), watched by inotify file id \(file.id) (wd \(w.wd)), is missing", errno: Errno(rawValue: errnoValue))
            }
        }
    }

    /// Creates the instance in Cryo with every watch under its own wd; returns Cryo's fd.
    ///
    /// A new instance hands out wd 1 first, then one more than the last it gave, so the next wd
    /// is known at every step: the numbers below a wanted wd are used up by adding and removing
    /// a watch on a throwaway memfd. Not on the wanted path itself: adding a watch on a directory
    /// walks all its cached children (~400 µs per add on /tmp here, against ~4 µs for a file),
    /// and an inode no wanted watch uses can never collide with one.
    static func create(_ file: FileEntry) throws -> Int32 {
        let ify = file.ify
        // Non-blocking until the IN_IGNORED events of the removed watches are read off.
        let fd = Int32(truncatingIfNeeded: cl_raw_syscall6(inotifyInit1, Int(O_NONBLOCK | O_CLOEXEC), 0, 0, 0, 0, 0))
        guard fd >= 0 else { throw CryoError("cannot create inotify file id \(file.id)", errno: Errno(rawValue: -fd)) }
        var burner: Int32 = -1
        defer { if burner >= 0 { close(burner) } }
        do {
            func add(_ path: String, _ mask: UInt32) -> Int {
                path.withCString { cl_raw_syscall6(inotifyAddWatch, Int(fd), Int(bitPattern: $0), Int(mask), 0, 0, 0) }
            }
            var next = 1
            for w in ify.wd.sorted(by: { $0.wd < $1.wd }) {
                let path = w.fHandle.path
                let what = "inotify_add_watch(\(path)) for wd \(w.wd) of inotify file id \(file.id)"
                while next < Int(w.wd) {
                    if burner < 0 {
                        burner = "cryo-inotify-wds".withCString { Int32(truncatingIfNeeded: cl_raw_syscall6(memfdCreate, Int(bitPattern: $0), 1 /* MFD_CLOEXEC */, 0, 0, 0, 0)) }
                        guard burner >= 0 else { throw CryoError("memfd_create to skip wds of inotify file id \(file.id)", errno: Errno(rawValue: -burner)) }
                    }
                    let wd = add("/proc/self/fd/\(burner)", 0x2 /* IN_MODIFY */)
                    guard wd == next else { throw CryoError("\(what): skipping wd \(next) gave \(wd); wds are not handed out as Cryo expects") }
                    _ = cl_raw_syscall6(inotifyRmWatch, Int(fd), wd, 0, 0, 0, 0)
                    next += 1
                }
                // The path names the watched inode itself (see `path(of:)`): never follow it.
                let wd = add(path, w.mask | inDontFollow)
                guard wd >= 0 else { throw CryoError(what, errno: Errno(rawValue: Int32(-wd))) }
                guard wd == Int(w.wd) else { throw CryoError("\(what): the kernel gave wd \(wd); wds are not handed out as Cryo expects") }
                next = wd + 1
            }
            var buffer = [UInt8](repeating: 0, count: 65536)
            while read(fd, &buffer, buffer.count) > 0 {}
            if Int32(bitPattern: ify.flags) & O_NONBLOCK == 0 {
                guard fcntl(fd, F_SETFL, 0) == 0 else { throw CryoError("fcntl(F_SETFL) on inotify file id \(file.id)", errno: Errno(rawValue: errnoValue)) }
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }
}
