import CLinux
import Glibc
import SystemPackage

/// eventfd, timerfd, signalfd and epoll files: dumped from `/proc/PID/fdinfo/N` into their
/// `files.img` entries, recreated in Cryo on restore and handed to the processes; epoll
/// watches are added back from inside each process once all its fds are in place (they name
/// the process's own fd numbers).
enum EventFileResource {
    /// The anon_inode kinds handled here, by the name in the fd's link.
    static let kinds: [String: FdTypes] = [
        "anon_inode:[eventfd]": .eventfd, "anon_inode:[timerfd]": .timerfd,
        "anon_inode:[signalfd]": .signalfd, "anon_inode:[eventpoll]": .eventpoll,
    ]
    /// EFD_SEMAPHORE, kept in bit 0 of the eventfd entry's flags (an eventfd is always
    /// O_RDWR, so that bit of the open flags is otherwise unused).
    static let semaphore: UInt32 = 1

    /// The entry for fd `fd` of `pid`, whose fdinfo is `info` and link `target`.
    static func entry(id: UInt32, kind: FdTypes, flags: UInt32, fdinfo text: String, pid: pid_t, fd: Int32) throws -> FileEntry {
        let info = FdInfoText.fields(text)
        func number(_ key: String, radix: Int = 10) throws -> UInt64 {
            guard let v = info[key].flatMap({ UInt64($0, radix: radix) }) else {
                throw CryoError("fd \(fd) of process \(pid): no \(key) in its fdinfo; this kernel is not supported")
            }
            return v
        }
        var file = FileEntry()
        file.type = kind
        file.id = id
        switch kind {
        case .eventfd:
            var e = EventfdFileEntry()
            e.id = id; e.fown = FileTable.noOwner
            e.counter = try number("eventfd-count", radix: 16)
            e.flags = flags | (info["eventfd-semaphore"] == "1" ? semaphore : 0)
            file.efd = e
        case .timerfd:
            var t = TimerfdEntry()
            t.id = id; t.flags = flags; t.fown = FileTable.noOwner
            t.clockid = UInt32(try number("clockid"))
            t.ticks = try number("ticks")
            t.settimeFlags = UInt32(try number("settime flags", radix: 8))
            func pair(_ key: String) throws -> (UInt64, UInt64) {
                let parts = (info[key] ?? "").filter { "0123456789,".contains($0) }.split(separator: ",")
                guard parts.count == 2, let a = UInt64(parts[0]), let b = UInt64(parts[1]) else {
                    throw CryoError("fd \(fd) of process \(pid): cannot parse \(key) in its fdinfo")
                }
                return (a, b)
            }
            (t.vsec, t.vnsec) = try pair("it_value")
            (t.isec, t.insec) = try pair("it_interval")
            file.tfd = t
        case .signalfd:
            var s = SignalfdEntry()
            s.id = id; s.flags = flags; s.fown = FileTable.noOwner
            s.sigmask = try number("sigmask", radix: 16)
            file.sgfd = s
        default:
            var e = EventpollFileEntry()
            e.id = id; e.flags = flags; e.fown = FileTable.noOwner
            for watch in FdInfoText.records(text, startingWith: "tfd:") {
                // tfd:        4 events:       19 data:               4d  pos:0 ino:40e sdev:10
                guard let tfd = watch["tfd"].flatMap({ UInt32($0) }), let events = watch["events"].flatMap({ UInt32($0, radix: 16) }),
                      let data = watch["data"].flatMap({ UInt64($0, radix: 16) }) else {
                    throw CryoError("fd \(fd) of process \(pid): cannot parse epoll watch \(watch)")
                }
                var w = EventpollTfdEntry()
                w.id = id; w.tfd = tfd; w.events = events; w.data = data
                e.tfd.append(w)
            }
            file.epfd = e
        }
        return file
    }

    /// Creates the object in Cryo; returns Cryo's fd for it.
    static func create(_ file: FileEntry) throws -> Int32 {
        let fd: Int
        switch file.type {
        case .eventfd:
            let e = file.efd
            let flags = Int(Int32(bitPattern: e.flags) & O_NONBLOCK) | Int(e.flags & semaphore) | Int(O_CLOEXEC)
            fd = cl_raw_syscall6(290 /* eventfd2 */, Int(e.counter), flags, 0, 0, 0, 0)
            // Counters above UInt32 need a write; eventfd2 takes an unsigned int.
            if fd >= 0 && e.counter > UInt64(UInt32.max) {
                var rest = e.counter - UInt64(UInt32(truncatingIfNeeded: e.counter))
                _ = write(Int32(fd), &rest, 8)
            }
        case .timerfd:
            let t = file.tfd
            fd = cl_raw_syscall6(283 /* timerfd_create */, Int(t.clockid), Int(Int32(bitPattern: t.flags) & O_NONBLOCK) | Int(O_CLOEXEC), 0, 0, 0, 0)
            if fd >= 0 {
                // The remaining time was saved relative, so re-arm relative.
                var spec: [UInt64] = [t.isec, t.insec, t.vsec, t.vnsec]
                // A periodic timer caught between expiries shows no remaining time: it is due.
                if t.vsec == 0 && t.vnsec == 0 { spec[2] = t.isec; spec[3] = t.insec }
                if spec[2] != 0 || spec[3] != 0 {
                    let r = spec.withUnsafeMutableBytes { cl_raw_syscall6(286 /* timerfd_settime */, fd, 0, Int(bitPattern: $0.baseAddress), 0, 0, 0) }
                    if r < 0 { close(Int32(fd)); throw CryoError("timerfd_settime for file id \(file.id)", errno: Errno(rawValue: Int32(-r))) }
                }
                if t.ticks > 0 {
                    var ticks = t.ticks
                    if cl_ioctl_ptr(Int32(fd), 0x4008_5400 /* TFD_IOC_SET_TICKS */, &ticks) < 0 {
                        close(Int32(fd)); throw CryoError("cannot restore \(t.ticks) pending expirations of timerfd id \(file.id)", errno: Errno(rawValue: errnoValue))
                    }
                }
            }
        case .signalfd:
            var mask = file.sgfd.sigmask
            fd = cl_raw_syscall6(289 /* signalfd4 */, -1, Int(bitPattern: withUnsafeMutablePointer(to: &mask) { UnsafeMutableRawPointer($0) }), 8,
                                 Int(Int32(bitPattern: file.sgfd.flags) & O_NONBLOCK) | Int(O_CLOEXEC), 0, 0)
        case .eventpoll:
            fd = cl_raw_syscall6(291 /* epoll_create1 */, Int(O_CLOEXEC), 0, 0, 0, 0, 0)
        default:
            throw CryoError("file id \(file.id) of type \(file.type) cannot be created")
        }
        guard fd >= 0 else { throw CryoError("cannot create \(file.type) for file id \(file.id)", errno: Errno(rawValue: Int32(-fd))) }
        return Int32(fd)
    }

    /// Adds the epoll watches of `file` (fd `epfd` in the process) from inside the process.
    static func addWatches(_ file: FileEntry, epfd: UInt64, _ process: RemoteProcess) throws {
        let scratch = process.scratch!.address
        for w in file.epfd.tfd {
            // struct epoll_event is packed on x86_64: u32 events, u64 data.
            var bytes = withUnsafeBytes(of: w.events.littleEndian) { Array($0) }
            bytes += withUnsafeBytes(of: w.data.littleEndian) { Array($0) }
            try process.memory.write(bytes, at: scratch)
            let r = try process.syscall(233 /* epoll_ctl */, epfd, 1 /* EPOLL_CTL_ADD */, UInt64(w.tfd), scratch)
            if r < 0 && r != -Int64(EEXIST) {
                throw CryoError("epoll_ctl(ADD fd \(w.tfd)) on epoll fd \(epfd) of process \(process.pid)", errno: Errno(rawValue: Int32(-r)))
            }
        }
    }
}
