/// Interval timers (ITIMER_REAL/VIRTUAL/PROF) in `tc.timers`.
enum TimersResource {
    static func dump(_ process: RemoteProcess) throws -> TaskTimersEntry {
        let area = try process.scratchArea()
        func one(_ which: UInt64) throws -> ItimerEntry {
            try process.checkedSyscall("getitimer(\(which))", Syscall.getitimer, which, area)
            let v = try process.memory.read(area, count: 32).withUnsafeBytes { raw in
                (0..<4).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
            }
            var e = ItimerEntry()
            e.isec = v[0]; e.iusec = v[1]; e.vsec = v[2]; e.vusec = v[3]
            return e
        }
        var t = TaskTimersEntry()
        t.real = try one(0)
        t.virt = try one(1)
        t.prof = try one(2)
        return t
    }

    static func restore(_ t: TaskTimersEntry, _ process: RemoteProcess) throws {
        let area = process.scratch!.address
        for (which, e) in [(UInt64(0), t.real), (1, t.virt), (2, t.prof)] where e.vsec != 0 || e.vusec != 0 {
            try process.memory.write([e.isec, e.iusec, e.vsec, e.vusec], at: area)
            try process.checkedSyscall("setitimer(\(which))", Syscall.setitimer, which, area, 0)
        }
    }
}

/// Resource limits (`tc.rlimits`), read and set from inside the process (prlimit on another
/// uid's process would need CAP_SYS_RESOURCE).
enum LimitsResource {
    static let count = 16

    static func dump(_ process: RemoteProcess) throws -> TaskRlimitsEntry {
        let area = try process.scratchArea()
        var r = TaskRlimitsEntry()
        for resource in 0..<UInt64(count) {
            try process.checkedSyscall("prlimit64(\(resource)) read", Syscall.prlimit64, 0, resource, 0, area)
            let v = try process.memory.read(area, count: 16).withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            }
            var e = RlimitEntry()
            e.cur = v.0
            e.max = v.1
            r.rlimits.append(e)
        }
        return r
    }

    /// Sets the limits; a hard limit above the restorer's own cannot be raised without
    /// CAP_SYS_RESOURCE, which is reported as a warning, not a failure.
    static func restore(_ r: TaskRlimitsEntry, _ process: RemoteProcess, log: Log) throws {
        let area = process.scratch!.address
        for (resource, e) in r.rlimits.enumerated() {
            try process.memory.write([e.cur, e.max], at: area)
            let result = try process.syscall(Syscall.prlimit64, 0, UInt64(resource), area, 0)
            if result < 0 {
                log.warn("cannot set resource limit \(resource) to \(e.cur)/\(e.max) in process \(process.pid) (errno \(-result)); kept the restorer's")
            }
        }
    }
}
