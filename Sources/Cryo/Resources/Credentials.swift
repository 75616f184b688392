import Glibc

/// Credentials of a thread: uids, gids, groups, capabilities, securebits, no_new_privs.
/// Dumped from `/proc/PID/task/TID/status` (+ remote PR_GET_SECUREBITS), restored last, by
/// remote set*id/capset/prctl calls in each thread, so that a non-root process comes back with
/// its own uids without needing CAP_SYS_RESOURCE.
enum CredentialsResource {
    static func dump(status s: [String: String], securebits: UInt32) throws -> CredsEntry {
        func ids(_ key: String) throws -> [UInt32] {
            let v = (s[key] ?? "").split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
            guard key == "Groups" || v.count == 4 else { throw CryoError("cannot parse \(key) in status") }
            return v
        }
        func caps(_ key: String) -> [UInt32] {
            let v = UInt64(s[key] ?? "0", radix: 16) ?? 0
            return [UInt32(truncatingIfNeeded: v), UInt32(truncatingIfNeeded: v >> 32)]
        }
        let uid = try ids("Uid"), gid = try ids("Gid")
        var c = CredsEntry()
        c.uid = uid[0]; c.euid = uid[1]; c.suid = uid[2]; c.fsuid = uid[3]
        c.gid = gid[0]; c.egid = gid[1]; c.sgid = gid[2]; c.fsgid = gid[3]
        c.groups = try ids("Groups")
        c.capInh = caps("CapInh"); c.capPrm = caps("CapPrm"); c.capEff = caps("CapEff"); c.capBnd = caps("CapBnd")
        c.capAmb = caps("CapAmb")
        c.secbits = securebits
        c.noNewPrivs = UInt32(s["NoNewPrivs"] ?? "0") ?? 0
        return c
    }

    static func mask(_ words: [UInt32]) -> UInt64 {
        words.count == 2 ? UInt64(words[0]) | UInt64(words[1]) << 32 : 0
    }

    /// Puts back the credentials of one thread. Runs while the thread is still root, so every
    /// step is allowed: keep capabilities over the uid change, then set exactly the dumped sets.
    static func restore(_ c: CredsEntry, thread: RemoteThread, in process: RemoteProcess) throws {
        let scratch = process.scratch!.address
        let prctl = Syscall.prctl
        func call(_ what: String, _ nr: Int, _ args: UInt64...) throws {
            try process.checkedSyscall(what, nr, args, in: thread)
        }
        let ambient = mask(c.capAmb)
        let lastCap = UInt64(readWholeFileString("/proc/sys/kernel/cap_last_cap") ?? "40") ?? 40
        try call("prctl(PR_SET_KEEPCAPS)", prctl, 8, 1)
        let bounding = mask(c.capBnd)
        for cap in 0...lastCap where bounding & (1 << cap) == 0 {
            try call("prctl(PR_CAPBSET_DROP, \(cap))", prctl, 24, cap)
        }
        try process.memory.write(c.groups, at: scratch)
        try call("setgroups", Syscall.setgroups, UInt64(c.groups.count), scratch)
        try call("setresgid", Syscall.setresgid, UInt64(c.gid), UInt64(c.egid), UInt64(c.sgid))
        try call("setresuid", Syscall.setresuid, UInt64(c.uid), UInt64(c.euid), UInt64(c.suid))
        _ = try process.syscall(Syscall.setfsgid, UInt64(c.fsgid), in: thread)
        _ = try process.syscall(Syscall.setfsuid, UInt64(c.fsuid), in: thread)
        // Everything the restorer was permitted is still permitted (keepcaps): make it
        // effective for the steps below. The dumped sets can only be a subset of it.
        let held = UInt64(try process.proc.task(thread.tid).status()["CapPrm"] ?? "0", radix: 16) ?? 0
        let missing = (mask(c.capPrm) | mask(c.capEff)) & ~held
        if missing != 0 {
            throw CryoError("thread \(thread.tid) had capabilities 0x\(String(missing, radix: 16)) that the restorer itself does not hold")
        }
        try writeCapabilities(effective: held, permitted: held, inheritable: mask(c.capInh) | ambient, tid: thread.tid, at: scratch, process)
        try call("capset", Syscall.capset, scratch, scratch + 8)
        try call("prctl(PR_SET_SECUREBITS)", prctl, 28, UInt64(c.secbits))
        for cap in 0...lastCap where ambient & (1 << cap) != 0 {
            try call("prctl(PR_CAP_AMBIENT_RAISE, \(cap))", prctl, 47, 2, cap)
        }
        try writeCapabilities(effective: mask(c.capEff), permitted: mask(c.capPrm), inheritable: mask(c.capInh), tid: thread.tid, at: scratch, process)
        try call("capset", Syscall.capset, scratch, scratch + 8)
        if c.noNewPrivs != 0 { try call("prctl(PR_SET_NO_NEW_PRIVS)", prctl, 38, 1) }
    }

    private static func writeCapabilities(effective: UInt64, permitted: UInt64, inheritable: UInt64, tid: pid_t,
                                          at address: UInt64, _ process: RemoteProcess) throws {
        // struct __user_cap_header_struct { u32 version = _LINUX_CAPABILITY_VERSION_3; int pid; }
        // followed by two struct __user_cap_data_struct { u32 effective, permitted, inheritable; }.
        let words: [UInt32] = [0x2008_0522, UInt32(bitPattern: tid),
                               UInt32(truncatingIfNeeded: effective), UInt32(truncatingIfNeeded: permitted), UInt32(truncatingIfNeeded: inheritable),
                               UInt32(truncatingIfNeeded: effective >> 32), UInt32(truncatingIfNeeded: permitted >> 32), UInt32(truncatingIfNeeded: inheritable >> 32)]
        try process.memory.write(words, at: address)
    }
}

func readWholeFileString(_ path: String) -> String? {
    (try? readWholeFile(path)).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: " \n") }
}
