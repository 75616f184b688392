import Glibc
/// Interval timers (ITIMER_REAL/VIRTUAL/PROF) in `tc.timers`.
enum TimersResource {
    static func dump(_ process: RemoteProcess) throws -> TaskTimersEntry {
        var batch = try SyscallBatch(for: process)
        let area = try batch.reserve(3 * 32)
        for which in 0..<UInt64(3) { batch.add("getitimer(\(which))", Syscall.getitimer, which, area + which * 32) }
        try process.run(batch)
        let v = try process.memory.read(area, count: 3 * 32).withUnsafeBytes { raw in
            (0..<12).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
        }
        func entry(_ which: Int) -> ItimerEntry {
            var e = ItimerEntry()
            e.isec = v[which * 4]; e.iusec = v[which * 4 + 1]; e.vsec = v[which * 4 + 2]; e.vusec = v[which * 4 + 3]
            return e
        }
        var t = TaskTimersEntry()
        t.real = entry(0)
        t.virt = entry(1)
        t.prof = entry(2)
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
        var batch = try SyscallBatch(for: process)
        let area = try batch.reserve(count * 16)
        for resource in 0..<UInt64(count) {
            batch.add("prlimit64(\(resource)) read", Syscall.prlimit64, 0, resource, 0, area + resource * 16)
        }
        try process.run(batch)
        let words = try process.memory.read(area, count: count * 16).withUnsafeBytes { raw in
            (0..<(count * 2)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) }
        }
        var r = TaskRlimitsEntry()
        for resource in 0..<count {
            var e = RlimitEntry()
            e.cur = words[resource * 2]
            e.max = words[resource * 2 + 1]
            r.rlimits.append(e)
        }
        return r
    }

    /// Cryo's own limits: what every restored process starts with, since each sets its own
    /// only after its children are forked.
    static func own() -> TaskRlimitsEntry {
        var r = TaskRlimitsEntry()
        for resource in 0..<count {
            var limit = rlimit()
            var e = RlimitEntry()
            if getrlimit(__rlimit_resource_t(UInt32(resource)), &limit) == 0 { e.cur = UInt64(limit.rlim_cur); e.max = UInt64(limit.rlim_max) }
            r.rlimits.append(e)
        }
        return r
    }

    /// Sets the limits that differ from `inherited` (those the process has now); a hard limit above the restorer's own cannot be raised without CAP_SYS_RESOURCE,
    /// which is reported as a warning, not a failure.
    static func restore(_ r: TaskRlimitsEntry, _ process: RemoteProcess, inherited: TaskRlimitsEntry?, log: Log) throws {
        var batch = try SyscallBatch(for: process)
        var resources: [Int] = []
        for (resource, e) in r.rlimits.enumerated() {
            if let inherited, resource < inherited.rlimits.count, inherited.rlimits[resource] == e { continue }
            let area = try batch.place([e.cur, e.max])
            batch.add("prlimit64(\(resource))", Syscall.prlimit64, 0, UInt64(resource), area, 0, mayFail: true)
            resources.append(resource)
        }
        for (resource, result) in zip(resources, try process.run(batch)) where result < 0 {
            let e = r.rlimits[resource]
            log.warn("cannot set resource limit \(resource) to \(e.cur)/\(e.max) in process \(process.pid) (errno \(-result)); kept the restorer's")
        }
    }
}
