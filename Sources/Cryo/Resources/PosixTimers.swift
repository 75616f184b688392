import Glibc

/// POSIX timers (`timer_create`) of a process, kept as CRIU keeps them in `tc.timers.posix`.
///
/// What identifies a timer and how it notifies (ID, clock, signal, `si_value`, notify type and
/// target thread) is listed in `/proc/PID/timers`; what only the process can ask (remaining time,
/// interval, overrun) is read by remote `timer_gettime` / `timer_getoverrun`. On restore each
/// timer is recreated with its own ID (`PR_TIMER_CREATE_RESTORE_IDS`, or by creating and
/// deleting timers until the kernel's counter reaches the ID on kernels without it) and armed
/// with what remained, counted from the restore: the time the process spent dumped does not count,
/// as for CRIU.
///
/// The overrun count is saved but not restored: no system call sets it. It is the number of extra
/// expirations folded into the last signal delivered, so after restore the process sees 0
/// until the next delivery. A timer signal that had fired but was not yet delivered at dump time is
/// in the pending signals (`SignalsResource`) with its siginfo (`si_timerid`, `si_value`); it is
/// delivered once after restore, with the overrun it had when dumped.
enum PosixTimersResource {
    /// `sigev_notify` values (`<asm-generic/siginfo.h>`); CRIU stores them as is.
    static let notifySignal: UInt32 = 0
    static let notifyNone: UInt32 = 1
    static let notifyThread: UInt32 = 2
    static let notifyThreadID: UInt32 = 4

    /// `prctl(PR_TIMER_CREATE_RESTORE_IDS, ON/OFF)` (Linux 6.15+): while on, `timer_create`
    /// takes the ID it creates from `*timerid` (EBUSY if taken).
    static let prTimerCreateRestoreIDs: UInt64 = 77

    /// One timer as `/proc/PID/timers` lists it:
    /// `ID: 3` / `signal: 10/0000000000000055` / `notify: signal/tid.1234` / `ClockID: 1`.
    static func parse(_ text: String, pid: pid_t) throws -> [PosixTimerEntry] {
        var timers: [PosixTimerEntry] = []
        func bad(_ line: Substring) -> CryoError {
            CryoError("cannot parse /proc/\(pid)/timers line \"\(line)\"; this kernel's format is not supported")
        }
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { throw bad(line) }
            let key = line[..<colon]
            let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
            if key == "ID" {
                guard let id = UInt32(value) else { throw bad(line) }
                var t = PosixTimerEntry()
                t.itID = id
                timers.append(t)
                continue
            }
            guard !timers.isEmpty else { throw bad(line) }
            switch key {
            case "signal":
                let parts = value.split(separator: "/")
                guard parts.count == 2, let signo = UInt32(parts[0]), let sival = UInt64(parts[1], radix: 16) else { throw bad(line) }
                timers[timers.count - 1].siSigno = signo
                timers[timers.count - 1].sivalPtr = sival
            case "notify":
                // "signal/pid.N", "none/pid.N", "thread/pid.N", or ".../tid.N" for SIGEV_THREAD_ID.
                let parts = value.split(separator: "/")
                guard parts.count == 2, let dot = parts[1].firstIndex(of: "."), let target = Int32(parts[1][parts[1].index(after: dot)...]) else { throw bad(line) }
                let kinds: [Substring: UInt32] = ["signal": notifySignal, "none": notifyNone, "thread": notifyThread]
                guard var notify = kinds[parts[0]] else { throw bad(line) }
                if parts[1].hasPrefix("tid") {
                    notify |= notifyThreadID
                    timers[timers.count - 1].notifyThreadID = target
                }
                timers[timers.count - 1].itSigevNotify = notify
            case "ClockID":
                guard let clock = Int32(value) else { throw bad(line) }
                timers[timers.count - 1].clockID = UInt32(bitPattern: clock)
            default:
                continue // fields of newer kernels carry nothing CRIU's image has room for
            }
        }
        return timers
    }

    /// Every POSIX timer of the (frozen) process, with its remaining time, interval and overrun.
    static func dump(_ process: RemoteProcess) throws -> [PosixTimerEntry] {
        var timers = try parse(try process.proc.text("timers"), pid: process.pid)
        guard !timers.isEmpty else { return [] }
        let area = try process.scratchArea()
        for i in timers.indices {
            let id = UInt64(timers[i].itID)
            try process.checkedSyscall("timer_gettime(\(id)) in process \(process.pid)", Syscall.timer_gettime, id, area)
            // struct itimerspec { it_interval { sec, nsec }, it_value { sec, nsec } }
            let spec = try process.memory.read(area, count: 32).withUnsafeBytes { raw in
                (0..<4).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
            }
            timers[i].isec = spec[0]; timers[i].insec = spec[1]
            timers[i].vsec = spec[2]; timers[i].vnsec = spec[3]
            let overrun = try process.checkedSyscall("timer_getoverrun(\(id)) in process \(process.pid)", Syscall.timer_getoverrun, id)
            timers[i].overrun = UInt32(truncatingIfNeeded: overrun)
        }
        return timers.sorted { $0.itID < $1.itID }
    }

    /// Recreates the timers in `process`, whose threads must all exist already (a
    /// SIGEV_THREAD_ID timer names one of them), each with its dumped ID, then arms them.
    static func restore(_ timers: [PosixTimerEntry], _ process: RemoteProcess) throws {
        guard !timers.isEmpty else { return }
        let pid = process.pid
        let area = process.scratch!.address
        let idAddress = area + 64 // after the 64-byte struct sigevent
        let explicitIDs = try process.syscall(Syscall.prctl, prTimerCreateRestoreIDs, 1, 0, 0, 0) == 0
        defer { if explicitIDs { _ = try? process.syscall(Syscall.prctl, prTimerCreateRestoreIDs, 0, 0, 0, 0) } }
        for t in timers.sorted(by: { $0.itID < $1.itID }) {
            // struct sigevent { sigval (8), signo (4), notify (4), tid (4), padding to 64 }
            var sigevent = withUnsafeBytes(of: t.sivalPtr.littleEndian) { Array($0) }
            for word in [Int32(bitPattern: t.siSigno), Int32(bitPattern: t.itSigevNotify), t.notifyThreadID] {
                sigevent += withUnsafeBytes(of: word.littleEndian) { Array($0) }
            }
            sigevent += [UInt8](repeating: 0, count: 64 - sigevent.count)
            let what = "timer_create of timer \(t.itID) (clock \(Int32(bitPattern: t.clockID)), notify \(t.itSigevNotify)\(t.notifyThreadID != 0 ? " to thread \(t.notifyThreadID)" : "")) in process \(pid)"
            while true {
                try process.memory.write(sigevent + withUnsafeBytes(of: Int32(bitPattern: t.itID).littleEndian) { Array($0) }, at: area)
                try process.checkedSyscall(what, Syscall.timer_create, UInt64(t.clockID), area, idAddress)
                let made = UInt32(bitPattern: try process.memory.read(Int32.self, at: idAddress))
                if made == t.itID { break }
                // Without the prctl IDs come from a per-process counter: burn the ones below.
                try process.checkedSyscall("timer_delete(\(made)) in process \(pid)", Syscall.timer_delete, UInt64(made))
                if explicitIDs {
                    throw CryoError("\(what) made timer \(made), not the ID asked for with PR_TIMER_CREATE_RESTORE_IDS")
                }
                if made > t.itID {
                    throw CryoError("\(what) made timer \(made): the ID counter is past \(t.itID), and this kernel cannot create a timer with a given ID (no PR_TIMER_CREATE_RESTORE_IDS)")
                }
            }
            // A disarmed timer reads as all zeros (disarming clears the interval too): nothing to arm.
            guard t.vsec != 0 || t.vnsec != 0 else { continue }
            try process.memory.write([t.isec, t.insec, t.vsec, t.vnsec], at: area)
            try process.checkedSyscall("timer_settime of timer \(t.itID) in process \(pid)", Syscall.timer_settime, UInt64(t.itID), 0, area, 0)
        }
    }
}
