import Glibc

/// File locks (`--file-locks`, as in CRIU): flock, POSIX record and OFD locks, read from the
/// `lock:` lines of `/proc/PID/fdinfo/N` into `file-locks.img`, and taken again from inside the
/// owning process once its fds are back.
enum FileLockResource {
    // file_lock_entry.flag values.
    static let posix: UInt32 = 1
    static let flock: UInt32 = 2
    static let ofd: UInt32 = 4

    /// The locks held through the fds of `pid` (each lock once, on the first fd that shows it).
    static func dump(pid: pid_t, fds: [Int32], proc: ProcDirectory) throws -> [FileLockEntry] {
        var seen = Set<String>()
        var result: [FileLockEntry] = []
        for fd in fds {
            guard let text = try? proc.text("fdinfo/\(fd)") else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("lock:") {
                // lock:	1: POSIX  ADVISORY  WRITE 22026 fe:00:16253816 10 29
                let w = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
                guard w.count >= 8, let owner = Int32(w[5]) else { throw CryoError("cannot parse file lock of fd \(fd) of process \(pid): \(line)") }
                let flag: UInt32
                switch w[2] {
                case "POSIX": flag = posix
                case "FLOCK": flag = flock
                case "OFDLCK": flag = ofd
                default: throw CryoError("fd \(fd) of process \(pid) holds a \(w[2]) lock; Cryo cannot dump those")
                }
                if flag == posix && owner != pid { continue }
                if w[3] != "ADVISORY" { throw CryoError("fd \(fd) of process \(pid) holds a mandatory lock; Cryo cannot dump those") }
                let key = "\(w[2]) \(w[6]) \(w[7]) \(w.count > 8 ? w[8] : "") \(flag == posix ? "\(owner)" : "")"
                guard seen.insert(key).inserted else { continue }
                let start = Int64(w[7]) ?? 0
                let end = w.count > 8 ? w[8] : "EOF"
                var e = FileLockEntry()
                e.flag = flag
                e.type = w[4] == "WRITE" ? UInt32(F_WRLCK) : UInt32(F_RDLCK)
                e.pid = pid
                e.fd = fd
                e.start = start
                e.len = end == "EOF" ? 0 : (Int64(end) ?? start) - start + 1
                result.append(e)
            }
        }
        return result
    }

    /// Takes the locks of `pid` again, from inside it.
    static func restore(_ locks: [FileLockEntry], _ process: RemoteProcess) throws {
        let scratch = process.scratch!.address
        for l in locks where l.pid == process.pid {
            let what = "lock on fd \(l.fd) of process \(process.pid)"
            if l.flag == flock {
                let op = (l.type == UInt32(F_WRLCK) ? LOCK_EX : LOCK_SH) | LOCK_NB
                try process.checkedSyscall("flock: \(what)", 73 /* flock */, [UInt64(l.fd), UInt64(op)])
            } else {
                // struct flock: short type, short whence, off_t start, off_t len, pid_t pid.
                var bytes = [UInt8](repeating: 0, count: 32)
                bytes.withUnsafeMutableBytes { raw in
                    raw.storeBytes(of: Int16(l.type), toByteOffset: 0, as: Int16.self)
                    raw.storeBytes(of: Int16(SEEK_SET), toByteOffset: 2, as: Int16.self)
                    raw.storeBytes(of: l.start, toByteOffset: 8, as: Int64.self)
                    raw.storeBytes(of: l.len, toByteOffset: 16, as: Int64.self)
                }
                try process.memory.write(bytes, at: scratch)
                let command: UInt64 = l.flag == ofd ? 37 /* F_OFD_SETLK */ : UInt64(F_SETLK)
                try process.checkedSyscall("fcntl: \(what)", Syscall.fcntl, [UInt64(l.fd), command, scratch])
            }
        }
    }
}
