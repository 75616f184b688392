import CLinux
import Foundation
import Glibc
import SystemPackage

/// Unix98 pseudo-terminals, as CRIU saves them: one `files.img` entry of type TTY per open
/// file description (`TtyFileEntry`), one `tty-info.img` entry per peer (`TtyInfoEntry`: pty
/// index, termios, window size, lock and packet state, session and foreground group) and
/// `tty-data.img` for what a peer had not read yet (`TtyDataEntry`).
///
/// Two cases:
/// - a pty pair the tree opened itself (it holds the `/dev/ptmx` master): restored by Cryo,
///   which opens `/dev/ptmx` until the kernel hands out the dumped index, sets it up and gives
///   the fds to the processes, like pipes;
/// - a slave whose master is outside the dump — the terminal a shell job runs on. Only with
///   `--shell-job`: on restore those fds become Cryo's own stdin terminal (CRIU's semantics).
enum TerminalResource {
    // ioctl numbers (x86_64, asm-generic/ioctls.h).
    static let TCGETS2: UInt = 0x802C_542A
    static let TCSETS2: UInt = 0x402C_542B
    static let TIOCGLCKTRMIOS: UInt = 0x5456
    static let TIOCSLCKTRMIOS: UInt = 0x5457
    static let TIOCGWINSZ: UInt = 0x5413
    static let TIOCSWINSZ: UInt = 0x5414
    static let TIOCINQ: UInt = 0x541B
    static let TIOCSCTTY: UInt64 = 0x540E
    static let TIOCSPGRP: UInt64 = 0x5410
    static let TIOCPKT: UInt = 0x5420
    static let TIOCGPKT: UInt = 0x8004_5438
    static let TIOCGPTN: UInt = 0x8004_5430
    static let TIOCSPTLCK: UInt = 0x4004_5431
    static let TIOCGPTLCK: UInt = 0x8004_5439
    static let TIOCEXCL: UInt = 0x540C
    static let TIOCGEXCL: UInt = 0x8004_5440

    /// The major of `/dev/ptmx` (and of `/dev/tty`, `/dev/console`): TTYAUX_MAJOR.
    static let auxMajor: UInt32 = 5
    /// `/dev/ptmx`'s minor within `auxMajor`.
    static let ptmxMinor: UInt32 = 2
    /// UNIX98_PTY_SLAVE_MAJOR: slaves use majors 136..143, 256 indices each.
    static let slaveMajors: ClosedRange<UInt32> = 136...143

    /// One end of a pty pair, as a device number shows it.
    enum Peer: Equatable {
        case master
        case slave(index: UInt32)
    }

    /// Major and minor of a device number (glibc's encoding of `dev_t`).
    static func majorMinor(_ dev: UInt64) -> (UInt32, UInt32) {
        (UInt32(((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))),
         UInt32((dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))))
    }

    /// Which pty peer the character device `rdev` is, or nil if it is no pty.
    static func peer(rdev: UInt64) -> Peer? {
        let (major, minor) = majorMinor(rdev)
        if major == auxMajor && minor == ptmxMinor { return .master }
        if slaveMajors.contains(major) { return .slave(index: (major - slaveMajors.lowerBound) * 256 + minor) }
        return nil
    }

    /// The device number of slave `index`, encoded as the kernel shows it to user space
    /// (`tty_nr` in /proc/PID/stat, a 32-bit `dev_t`, CRIU's `rdev`).
    static func slaveDevice(_ index: UInt32) -> UInt32 {
        encode(major: slaveMajors.lowerBound + index / 256, minor: index % 256)
    }

    /// Where slave `index` is opened (the devpts of Cryo's mount namespace).
    static func slavePath(_ index: UInt32) -> String { "/dev/pts/\(index)" }

    /// The kernel's `new_encode_dev`: minor's low byte, major, then the rest of minor.
    static func encode(major: UInt32, minor: UInt32) -> UInt32 {
        major << 8 | (minor & 0xff) | ((minor & ~0xff) << 12)
    }

    /// The `tty-info.img` id of a peer: CRIU's `tty_gen_id`, index * 2, +1 for the master.
    static func infoID(index: UInt32, master: Bool) -> UInt32 { index << 1 | (master ? 1 : 0) }

    /// Why a tree holding the terminal `target` of a shell cannot be dumped without `--shell-job`.
    static func shellJobRefusal(fd: Int32, pid: pid_t, target: String) -> CryoError {
        CryoError("fd \(fd) of process \(pid) is the terminal \(target), whose master is outside the dump: the tree runs on a shell's terminal. Dump it with --shell-job (-j), and restore it with -j from a terminal, or start it detached (setsid, stdio on files)")
    }
}

// MARK: - Terminal settings

/// `struct termios2` (the kernel's, with speeds), read and written with TCGETS2/TCSETS2.
/// Glibc's `struct termios` has another layout, so the bytes are handled here.
struct KernelTermios {
    /// u32 iflag, oflag, cflag, lflag; u8 line; u8 cc[19]; u32 ispeed, ospeed.
    var bytes = [UInt8](repeating: 0, count: 44)
    static let ccCount = 19

    /// The u32 at byte `offset`.
    func word(_ offset: Int) -> UInt32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) } }
    /// Stores a u32 at byte `offset`.
    mutating func setWord(_ offset: Int, _ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + 4, with: $0) }
    }
    var iflag: UInt32 { get { word(0) } set { setWord(0, newValue) } }
    var oflag: UInt32 { get { word(4) } set { setWord(4, newValue) } }
    var lflag: UInt32 { get { word(12) } set { setWord(12, newValue) } }

    /// Reads the settings of `terminal`, behind `fd` (`request`: TCGETS2 or TIOCGLCKTRMIOS;
    /// a hung-up terminal answers EIO).
    static func get(_ fd: Int32, _ request: UInt = TerminalResource.TCGETS2, of terminal: String) throws -> KernelTermios {
        var t = KernelTermios()
        guard t.bytes.withUnsafeMutableBytes({ cl_ioctl_ptr(fd, request, $0.baseAddress) }) == 0 else {
            throw CryoError("cannot read the settings of \(terminal)", errno: Errno(rawValue: errnoValue))
        }
        return t
    }

    /// Applies the settings to `terminal` at once (no drain: its processes are stopped).
    func set(_ fd: Int32, _ request: UInt = TerminalResource.TCSETS2, of terminal: String) throws {
        var copy = bytes
        guard copy.withUnsafeMutableBytes({ cl_ioctl_ptr(fd, request, $0.baseAddress) }) == 0 else {
            throw CryoError("cannot change the settings of \(terminal)", errno: Errno(rawValue: errnoValue))
        }
    }

    /// The settings as CRIU's `termios_entry`.
    var entry: TermiosEntry {
        var e = TermiosEntry()
        e.cIflag = word(0); e.cOflag = word(4); e.cCflag = word(8); e.cLflag = word(12)
        e.cLine = UInt32(bytes[16])
        e.cCc = bytes[17..<17 + Self.ccCount].map(UInt32.init)
        e.cIspeed = word(36); e.cOspeed = word(40)
        return e
    }

    /// All zero.
    init() {}

    /// The settings a `termios_entry` describes.
    init(_ e: TermiosEntry) {
        setWord(0, e.cIflag); setWord(4, e.cOflag); setWord(8, e.cCflag); setWord(12, e.cLflag)
        bytes[16] = UInt8(truncatingIfNeeded: e.cLine)
        for (i, c) in e.cCc.prefix(Self.ccCount).enumerated() { bytes[17 + i] = UInt8(truncatingIfNeeded: c) }
        setWord(36, e.cIspeed); setWord(40, e.cOspeed)
    }

    /// These settings with every input transformation off (no echo, no line editing, no
    /// signals, no CR/NL mapping): bytes written to the master then land in the slave's queue
    /// exactly as they were read from it.
    var transparentInput: KernelTermios {
        var t = self
        t.iflag = 0
        t.lflag &= ~UInt32(ECHO | ECHONL | ICANON | ISIG | IEXTEN)
        t.bytes[17 + Int(VMIN)] = 0
        t.bytes[17 + Int(VTIME)] = 0
        return t
    }

    /// These settings without output processing: bytes written to the slave reach the
    /// master's queue unchanged.
    var transparentOutput: KernelTermios {
        var t = self
        t.oflag &= ~UInt32(OPOST)
        return t
    }
}

/// An int-valued terminal ioctl (`TIOCGPTN`, `TIOCGPKT`...) on a local fd.
func terminalIoctl(_ fd: Int32, _ request: UInt, _ value: Int32 = 0) -> Int32? {
    var v = value
    return cl_ioctl_ptr(fd, request, &v) == 0 ? v : nil
}

// MARK: - Dump

/// What one dump found about terminals; turned into `tty-info.img` and `tty-data.img` once
/// every process has been walked (a master may show up after its slave).
struct TerminalDump {
    /// One fd of the tree per peer, to read its state: master by pty index, slave by index.
    private var masters: [UInt32: (pid: pid_t, fd: Int32)] = [:]
    private var slaves: [UInt32: (pid: pid_t, fd: Int32, target: String, device: UInt64)] = [:]

    var isEmpty: Bool { masters.isEmpty && slaves.isEmpty }

    /// The `files.img` entry of fd `fd` of `pid`, a pty peer (`st` its stat).
    mutating func entry(id: UInt32, fd: Int32, pid: pid_t, target: String, st: stat, flags: UInt32) throws -> FileEntry {
        let index: UInt32
        let isMaster: Bool
        switch TerminalResource.peer(rdev: UInt64(st.st_rdev)) {
        case .master:
            let local = try takeDescriptor(pid: pid, fd: fd)
            defer { close(local) }
            guard let n = terminalIoctl(local, TerminalResource.TIOCGPTN) else {
                throw CryoError("cannot read the pty index of fd \(fd) of process \(pid) (\(target))", errno: Errno(rawValue: errnoValue))
            }
            index = UInt32(n); isMaster = true
            if masters[index] == nil { masters[index] = (pid, fd) }
        case .slave(let n):
            index = n; isMaster = false
            if slaves[index] == nil { slaves[index] = (pid, fd, target, UInt64(st.st_dev)) }
        case nil:
            throw CryoError("fd \(fd) of process \(pid) is \(target), not a pseudo-terminal")
        }
        var tty = TtyFileEntry()
        tty.id = id
        tty.ttyInfoID = TerminalResource.infoID(index: index, master: isMaster)
        tty.flags = flags
        tty.fown = FileTable.noOwner
        var file = FileEntry()
        file.type = .tty
        file.id = id
        file.tty = tty
        return file
    }

    /// A process of the tree as its terminal sees it (/proc/PID/stat).
    struct Member {
        var pid: pid_t
        var sid: UInt32
        /// `tty_nr`: the controlling terminal's device, 0 for none.
        var ttyNr: UInt32
        /// `tpgid`: the foreground process group of that terminal.
        var tpgid: Int32
    }

    /// `tty-info.img` entries (one per peer) and `tty-data.img` entries. Refuses a slave
    /// whose master is not in the dump unless `shellJob`.
    func images(members: [Member], shellJob: Bool, log: Log) throws -> (info: [TtyInfoEntry], data: [TtyDataEntry]) {
        for (index, s) in slaves.sorted(by: { $0.key < $1.key }) where masters[index] == nil && !shellJob {
            throw TerminalResource.shellJobRefusal(fd: s.fd, pid: s.pid, target: s.target)
        }
        var infos: [TtyInfoEntry] = []
        var data: [TtyDataEntry] = []
        for index in Set(masters.keys).union(slaves.keys).sorted() {
            // The session whose controlling terminal this is, and its foreground group.
            let leader = members.first { $0.ttyNr == TerminalResource.slaveDevice(index) }
            let master = try masters[index].map { try takeDescriptor(pid: $0.pid, fd: $0.fd) }
            defer { if let master { close(master) } }
            // A slave description of our own, non-blocking, so that writing the queues back
            // can never hang; the process's own (by pidfd_getfd) if /dev/pts here is another
            // devpts instance than the process's, or the pty is locked again.
            let slave = try slaves[index].map { s -> Int32 in
                let fd = open(TerminalResource.slavePath(index), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
                var st = stat()
                if fd >= 0 && fstat(fd, &st) == 0 && UInt64(st.st_dev) == s.device { return fd }
                if fd >= 0 { close(fd) }
                return try takeDescriptor(pid: s.pid, fd: s.fd)
            }
            defer { if let slave { close(slave) } }
            guard let any = slave ?? master else { continue }
            var info = TtyInfoEntry()
            info.type = .pty
            info.sid = leader?.sid ?? 0
            info.pgrp = leader.map { UInt32(bitPattern: $0.tpgid) } ?? 0
            var pty = TtyPtyEntry()
            pty.index = index
            info.pty = pty
            let name = TerminalResource.slavePath(index)
            info.termios = try KernelTermios.get(any, of: name).entry
            info.termiosLocked = try KernelTermios.get(any, TerminalResource.TIOCGLCKTRMIOS, of: name).entry
            var size = winsize()
            guard cl_ioctl_ptr(any, TerminalResource.TIOCGWINSZ, &size) == 0 else {
                throw CryoError("cannot read the window size of /dev/pts/\(index)", errno: Errno(rawValue: errnoValue))
            }
            var w = WinsizeEntry()
            w.wsRow = UInt32(size.ws_row); w.wsCol = UInt32(size.ws_col)
            w.wsXpixel = UInt32(size.ws_xpixel); w.wsYpixel = UInt32(size.ws_ypixel)
            info.winsize = w
            info.exclusive = slave.flatMap { terminalIoctl($0, TerminalResource.TIOCGEXCL) }.map { $0 != 0 } ?? false
            info.locked = master.flatMap { terminalIoctl($0, TerminalResource.TIOCGPTLCK) }.map { $0 != 0 } ?? false
            let packetMode = master.flatMap { terminalIoctl($0, TerminalResource.TIOCGPKT) }.map { $0 != 0 } ?? false
            info.packetMode = packetMode
            if masters[index] != nil {
                info.id = TerminalResource.infoID(index: index, master: true)
                info.rdev = TerminalResource.encode(major: TerminalResource.auxMajor, minor: TerminalResource.ptmxMinor)
                infos.append(info)
            }
            if slaves[index] != nil {
                info.id = TerminalResource.infoID(index: index, master: false)
                info.rdev = TerminalResource.slaveDevice(index)
                info.locked = false; info.packetMode = false
                infos.append(info)
            }
            if let master, let slave {
                data += try QueuedTerminalData.capture(index: index, master: master, slave: slave, packetMode: packetMode, log: log)
            }
        }
        return (infos, data)
    }
}

/// What a pty pair holds that nobody has read yet: the slave's input queue (written to the
/// master) and the master's (written to the slave).
///
/// Linux has no way to peek into a terminal's queue, so, like CRIU, Cryo reads the queues and
/// then writes the bytes straight back — with the line discipline's processing switched off
/// for that moment, so they come back unchanged. What is lost: a canonical-mode slave sees
/// the restored bytes as one pending line (their line boundaries are not kept), a partly
/// typed line becomes readable, and pending packet-mode status bytes are dropped. Data still
/// in the kernel's flip buffers beyond the line discipline's 4 KiB is not seen.
enum QueuedTerminalData {
    /// Reads and puts back both queues of pair `index`; the entries for `tty-data.img`.
    static func capture(index: UInt32, master: Int32, slave: Int32, packetMode: Bool, log: Log) throws -> [TtyDataEntry] {
        let name = TerminalResource.slavePath(index)
        let saved = try KernelTermios.get(slave, of: name)
        defer { try? saved.set(slave, of: name) }
        // Non-canonical, VMIN 0: all the slave's queue is readable and a read never waits.
        try saved.transparentInput.set(slave, of: name)
        let forSlave = drain(slave, count: nil)
        // The master is blocking (its description is the process's): read only what it says it has.
        if packetMode { _ = terminalIoctl(master, TerminalResource.TIOCPKT, 0) }
        let forMaster = drain(master, count: terminalIoctl(master, TerminalResource.TIOCINQ).map(Int.init) ?? 0)
        if packetMode { _ = terminalIoctl(master, TerminalResource.TIOCPKT, 1) }
        try refill(index: index, master: master, slave: slave, settings: saved, forSlave: forSlave, forMaster: forMaster)
        log.debug("pty \(index): \(forSlave.count) bytes queued for the slave, \(forMaster.count) for the master")
        var entries: [TtyDataEntry] = []
        for (bytes, isMaster) in [(forSlave, false), (forMaster, true)] where !bytes.isEmpty {
            var e = TtyDataEntry()
            e.ttyID = TerminalResource.infoID(index: index, master: isMaster)
            e.data = Data(bytes)
            entries.append(e)
        }
        return entries
    }

    /// Puts `forSlave` into the slave's input queue and `forMaster` into the master's, then
    /// gives the slave back `settings`.
    static func refill(index: UInt32, master: Int32, slave: Int32, settings: KernelTermios, forSlave: [UInt8], forMaster: [UInt8]) throws {
        if !forMaster.isEmpty {
            try settings.transparentOutput.set(slave, of: "/dev/pts/\(index)")
            try writeAll(slave, forMaster, what: "the master of /dev/pts/\(index)")
        }
        if !forSlave.isEmpty {
            try settings.transparentInput.set(slave, of: "/dev/pts/\(index)")
            let before = terminalIoctl(slave, TerminalResource.TIOCINQ) ?? 0
            try writeAll(master, forSlave, what: "/dev/pts/\(index)")
            // The kernel moves written bytes into the slave's queue from a work queue: the
            // settings must stay transparent until they are there.
            for _ in 0..<200 {
                if let n = terminalIoctl(slave, TerminalResource.TIOCINQ), Int(n) >= Int(before) + forSlave.count { break }
                usleep(5000)
            }
        }
        try settings.set(slave, of: "/dev/pts/\(index)")
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], what: String) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errnoValue == EINTR { continue }
            guard n > 0 else { throw CryoError("cannot put \(bytes.count) queued bytes back into \(what)", errno: Errno(rawValue: errnoValue)) }
            done += n
        }
    }

    /// Reads what `fd` has: everything until a read returns nothing (`count` nil), or
    /// exactly `count` bytes.
    private static func drain(_ fd: Int32, count: Int?) -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while count.map({ out.count < $0 }) ?? true {
            let want = min(buffer.count, count.map { $0 - out.count } ?? buffer.count)
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, want) }
            if n < 0 && errnoValue == EINTR { continue }
            guard n > 0 else { break }
            out += buffer[0..<n]
        }
        return out
    }
}

// MARK: - Restore

/// The terminals of one restore, made by Cryo before any process needs them: every pty pair
/// of the dump with its index, settings, lock and queued data; its fds go to the processes
/// like pipes. With `--shell-job`, the job's terminal is Cryo's stdin.
final class TerminalTable {
    /// `tty-info.img`, by id (CRIU's: pty index * 2, + 1 for the master).
    private let infos: [UInt32: TtyInfoEntry]
    /// Cryo's fd for each tty file description of the dump.
    private var descriptions: [UInt32: Int32] = [:]
    /// Masters by pty index.
    private var masters: [UInt32: Int32] = [:]

    /// Makes every terminal the dump's `files` name: masters first (a slave opens only once
    /// its master exists), then slaves, then each pair's data and lock.
    init(_ images: ImageDirectory, files: [UInt32: FileEntry], shellJob: Bool) throws {
        let ttys = files.values.filter { $0.type == .tty && $0.hasTty }.sorted { $0.id < $1.id }
        guard !ttys.isEmpty else { infos = [:]; return }
        var infos: [UInt32: TtyInfoEntry] = [:]
        if images.contains("tty-info.img") {
            for e in try images.read("tty-info.img", magic: .ttyInfo, as: TtyInfoEntry.self) { infos[e.id] = e }
        }
        self.infos = infos
        var data: [UInt32: [UInt8]] = [:]
        if images.contains("tty-data.img") {
            for e in try images.read("tty-data.img", magic: .ttyData, as: TtyDataEntry.self) { data[e.ttyID, default: []] += [UInt8](e.data) }
        }
        do {
            for file in ttys {
                guard let info = infos[file.tty.ttyInfoID], info.type == .pty, info.hasPty else {
                    throw CryoError("cannot restore: tty-info.img has no pty entry \(file.tty.ttyInfoID) for file id \(file.id)")
                }
                guard info.id & 1 == 1 else { continue }
                guard info.hasTermios && info.hasTermiosLocked && info.hasWinsize else {
                    throw CryoError("cannot restore: tty-info.img entry \(info.id) (the master of /dev/pts/\(info.pty.index)) lacks its settings")
                }
                descriptions[file.id] = try makeMaster(file, info)
            }
            for file in ttys where descriptions[file.id] == nil {
                descriptions[file.id] = try openSlave(file, infos[file.tty.ttyInfoID]!, shellJob: shellJob)
            }
            for (index, master) in masters {
                try finishPair(index: index, master: master, files: ttys, data: data)
            }
        } catch {
            closeAll()
            throw error
        }
    }

    deinit { closeAll() }

    /// Closes Cryo's fds (never its stdin, lent to a shell job).
    private func closeAll() {
        for fd in Set(descriptions.values) where fd != STDIN_FILENO { close(fd) }
        descriptions = [:]
    }

    /// Cryo's fd for the tty description `file`.
    func descriptor(for file: FileEntry) throws -> Int32 {
        guard let fd = descriptions[file.id] else { throw CryoError("no terminal was made for file id \(file.id)") }
        return fd
    }

    /// The pty index of a tty file, if it is a peer of a pair Cryo made (not the shell's terminal).
    func ownIndex(of file: FileEntry) -> UInt32? {
        guard file.type == .tty, let info = infos[file.tty.ttyInfoID] else { return nil }
        return masters[info.pty.index] != nil ? info.pty.index : nil
    }

    /// The pty pairs Cryo made whose dumped session is `sid`, with the foreground group they had.
    func controlledTerminals(session sid: pid_t) -> [(index: UInt32, pgrp: UInt32)] {
        masters.keys.sorted().compactMap { index in
            // Both peers carry the pair's session; the slave's entry is there when the master's may not be.
            let info = infos[TerminalResource.infoID(index: index, master: false)] ?? infos[TerminalResource.infoID(index: index, master: true)]
            guard let info, info.sid == UInt32(sid) else { return nil }
            return (index, info.pgrp)
        }
    }

    /// Opens `/dev/ptmx` until the kernel hands out the dumped index. It gives the lowest free
    /// one, so the lower indices it hands out first are held until then; a higher one means
    /// the index is taken.
    private func makeMaster(_ file: FileEntry, _ info: TtyInfoEntry) throws -> Int32 {
        let index = info.pty.index
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        while true {
            let flags = Int32(bitPattern: file.tty.flags) & (O_NONBLOCK | O_ACCMODE)
            let fd = open("/dev/ptmx", flags | O_NOCTTY | O_CLOEXEC)
            guard fd >= 0 else { throw CryoError("cannot open /dev/ptmx for the master of /dev/pts/\(index)", errno: Errno(rawValue: errnoValue)) }
            guard let n = terminalIoctl(fd, TerminalResource.TIOCGPTN).map(UInt32.init) else {
                close(fd); throw CryoError("TIOCGPTN on a new /dev/ptmx", errno: Errno(rawValue: errnoValue))
            }
            if n == index {
                // Unlocked so the slaves can be opened; locked again once they are.
                guard terminalIoctl(fd, TerminalResource.TIOCSPTLCK, 0) != nil else {
                    close(fd); throw CryoError("cannot unlock /dev/pts/\(index)", errno: Errno(rawValue: errnoValue))
                }
                do {
                    try KernelTermios(info.termios).set(fd, of: "/dev/pts/\(index)")
                    try KernelTermios(info.termiosLocked).set(fd, TerminalResource.TIOCSLCKTRMIOS, of: "/dev/pts/\(index)")
                    var size = winsize(ws_row: UInt16(info.winsize.wsRow), ws_col: UInt16(info.winsize.wsCol),
                                       ws_xpixel: UInt16(info.winsize.wsXpixel), ws_ypixel: UInt16(info.winsize.wsYpixel))
                    guard cl_ioctl_ptr(fd, TerminalResource.TIOCSWINSZ, &size) == 0 else {
                        throw CryoError("cannot set the window size of /dev/pts/\(index)", errno: Errno(rawValue: errnoValue))
                    }
                } catch { close(fd); throw error }
                masters[index] = fd
                return fd
            }
            held.append(fd)
            if n > index {
                throw CryoError("cannot restore /dev/pts/\(index): that pty index is in use by another terminal (the kernel handed out /dev/pts/\(n)); close whatever holds /dev/pts/\(index) and retry")
            }
        }
    }

    /// A slave description: opened by path when its master is Cryo's, Cryo's stdin terminal
    /// for the terminal of a shell job.
    private func openSlave(_ file: FileEntry, _ info: TtyInfoEntry, shellJob: Bool) throws -> Int32 {
        let index = info.pty.index
        if masters[index] != nil {
            let flags = Int32(bitPattern: file.tty.flags) & ~(O_CREAT | O_EXCL | O_TRUNC)
            let fd = open(TerminalResource.slavePath(index), flags | O_NOCTTY | O_CLOEXEC)
            guard fd >= 0 else { throw CryoError("cannot open /dev/pts/\(index)", errno: Errno(rawValue: errnoValue)) }
            return fd
        }
        guard shellJob else {
            throw CryoError("cannot restore: file id \(file.id) is /dev/pts/\(index), the terminal of a shell job (its master is not in the dump); restore with --shell-job (-j) from a terminal")
        }
        guard isatty(STDIN_FILENO) == 1 else {
            throw CryoError("cannot restore the shell job's terminal (/dev/pts/\(index) at dump time): --shell-job puts the processes on cryo's own terminal, but cryo's stdin is not a terminal")
        }
        // The settings the program left (raw mode, no echo...) matter to it; the window size
        // is the new terminal's own, so it is left alone.
        if info.hasTermios { try KernelTermios(info.termios).set(STDIN_FILENO, of: "cryo's terminal (stdin)") }
        return STDIN_FILENO
    }

    /// Queued data, packet mode, exclusive and lock state of pair `index`, once its slaves are open.
    private func finishPair(index: UInt32, master: Int32, files: [FileEntry], data: [UInt32: [UInt8]]) throws {
        let masterInfo = infos[TerminalResource.infoID(index: index, master: true)]!
        let slaveInfo = infos[TerminalResource.infoID(index: index, master: false)]
        let slave = files.first { $0.tty.ttyInfoID == slaveInfo?.id }.flatMap { descriptions[$0.id] }
        let forSlave = data[TerminalResource.infoID(index: index, master: false)] ?? []
        let forMaster = data[TerminalResource.infoID(index: index, master: true)] ?? []
        if let slave, !(forSlave.isEmpty && forMaster.isEmpty) {
            try QueuedTerminalData.refill(index: index, master: master, slave: slave, settings: KernelTermios(masterInfo.termios),
                                          forSlave: forSlave, forMaster: forMaster)
        }
        if masterInfo.packetMode && terminalIoctl(master, TerminalResource.TIOCPKT, 1) == nil {
            throw CryoError("cannot set packet mode on the master of /dev/pts/\(index)", errno: Errno(rawValue: errnoValue))
        }
        if slaveInfo?.exclusive == true, let slave, terminalIoctl(slave, TerminalResource.TIOCEXCL) == nil {
            throw CryoError("cannot make /dev/pts/\(index) exclusive", errno: Errno(rawValue: errnoValue))
        }
        if masterInfo.locked && terminalIoctl(master, TerminalResource.TIOCSPTLCK, 1) == nil {
            throw CryoError("cannot lock /dev/pts/\(index) again", errno: Errno(rawValue: errnoValue))
        }
    }

    /// Makes the pairs whose session `process` leads its controlling terminals again (from
    /// inside it: TIOCSCTTY acts on the caller's session). Runs before its fds are restored,
    /// so Cryo's master is lent for the call, at `freeFD` (a number its restored table does
    /// not use); terminal ioctls on a master act on its slave.
    func restoreControllingTerminal(_ process: RemoteProcess, freeFD: UInt64) throws {
        for (index, _) in controlledTerminals(session: process.pid) {
            try lendMaster(index, to: process, at: freeFD) { fd in
                _ = try process.checkedSyscall("ioctl(TIOCSCTTY) on \(TerminalResource.slavePath(index))", 16, [fd, TerminalResource.TIOCSCTTY, 0])
            }
        }
    }

    /// Gives the terminals session leader `process` controls their dumped foreground group
    /// (once every process is in its group).
    func restoreForegroundGroups(_ process: RemoteProcess, descriptors: [FdinfoEntry], files: [UInt32: FileEntry]) throws {
        for (index, pgrp) in controlledTerminals(session: process.pid) where pgrp != 0 {
            try withTerminalFD(index, in: process, descriptors: descriptors, files: files) { fd in
                let scratch = process.scratch!.address
                try process.memory.write(Int32(bitPattern: pgrp), at: scratch)
                _ = try process.checkedSyscall("ioctl(TIOCSPGRP \(pgrp)) on /dev/pts/\(index)", 16, [fd, TerminalResource.TIOCSPGRP, scratch])
            }
        }
    }

    /// Runs `body` with an fd of `process` on pair `index`: one of its own (the slave
    /// preferred), or else Cryo's master lent for the moment — a session leader may have
    /// closed every fd on its terminal and still control it.
    private func withTerminalFD(_ index: UInt32, in process: RemoteProcess, descriptors: [FdinfoEntry], files: [UInt32: FileEntry],
                                _ body: (UInt64) throws -> Void) throws {
        let onPair = descriptors.filter { d in files[d.id].flatMap { ownIndex(of: $0) } == index }
        if let own = onPair.first(where: { files[$0.id]!.tty.ttyInfoID & 1 == 0 }) ?? onPair.first {
            return try body(UInt64(own.fd))
        }
        try lendMaster(index, to: process, at: UInt64(descriptors.map(\.fd).max() ?? 0) + 1, body)
    }

    /// Installs Cryo's master of pair `index` in `process` at fd `fd` (free there), runs
    /// `body` with it, and closes it again. Terminal ioctls on a master act on its slave.
    private func lendMaster(_ index: UInt32, to process: RemoteProcess, at fd: UInt64, _ body: (UInt64) throws -> Void) throws {
        guard let master = masters[index] else { throw CryoError("no master was made for \(TerminalResource.slavePath(index))") }
        let installer = try FDInstaller(process, spare: fd + 1)
        defer { installer.close() }
        try installer.install(master, at: fd)
        defer { _ = try? process.syscall(Syscall.close, fd) }
        try body(fd)
    }
}
