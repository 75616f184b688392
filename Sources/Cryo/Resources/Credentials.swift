import CLinux
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

    /// Cryo's own credentials, as an image would hold them: what every restored thread has
    /// until `restore` runs (they are all cloned from Cryo), so equal ones need no call at all.
    static func own() -> CredsEntry? {
        guard let status = try? ProcDirectory(pid: getpid()).status() else { return nil }
        let securebits = cl_raw_syscall6(Syscall.prctl, 27 /* PR_GET_SECUREBITS */, 0, 0, 0, 0, 0)
        guard securebits >= 0 else { return nil }
        return try? dump(status: status, securebits: UInt32(securebits))
    }

    /// Puts back the credentials of one thread. Runs while the thread is still root, so every
    /// step is allowed: keep capabilities over the uid change, then set exactly the dumped sets.
    static func restore(_ c: CredsEntry, thread: RemoteThread, in process: RemoteProcess) throws {
        let prctl = Syscall.prctl
        let tid = thread.tid
        let ambient = mask(c.capAmb)
        let lastCap = UInt64(readWholeFileString("/proc/sys/kernel/cap_last_cap") ?? "40") ?? 40
        var ids = try SyscallBatch(for: process)
        ids.add("prctl(PR_SET_KEEPCAPS) in thread \(tid)", prctl, 8, 1)
        let bounding = mask(c.capBnd)
        for cap in 0...lastCap where bounding & (1 << cap) == 0 {
            ids.add("prctl(PR_CAPBSET_DROP, \(cap)) in thread \(tid)", prctl, 24, cap)
        }
        ids.add("setgroups in thread \(tid)", Syscall.setgroups, UInt64(c.groups.count), try ids.place(c.groups.withUnsafeBytes { Array($0) }))
        ids.add("setresgid in thread \(tid)", Syscall.setresgid, UInt64(c.gid), UInt64(c.egid), UInt64(c.sgid))
        ids.add("setresuid in thread \(tid)", Syscall.setresuid, UInt64(c.uid), UInt64(c.euid), UInt64(c.suid))
        // setfs*id return the previous id, never an error.
        ids.add("setfsgid", Syscall.setfsgid, UInt64(c.fsgid), mayFail: true)
        ids.add("setfsuid", Syscall.setfsuid, UInt64(c.fsuid), mayFail: true)
        try process.run(ids, in: thread)
        // Everything the restorer was permitted is still permitted (keepcaps): make it
        // effective for the steps below. The dumped sets can only be a subset of it.
        let held = UInt64(try process.proc.task(tid).status()["CapPrm"] ?? "0", radix: 16) ?? 0
        let missing = (mask(c.capPrm) | mask(c.capEff)) & ~held
        if missing != 0 {
            throw CryoError("thread \(tid) had capabilities 0x\(String(missing, radix: 16)) that the restorer itself does not hold")
        }
        var caps = try SyscallBatch(for: process)
        let widened = try caps.place(capabilities(effective: held, permitted: held, inheritable: mask(c.capInh) | ambient, tid: tid))
        caps.add("capset in thread \(tid)", Syscall.capset, widened, widened + 8)
        caps.add("prctl(PR_SET_SECUREBITS) in thread \(tid)", prctl, 28, UInt64(c.secbits))
        for cap in 0...lastCap where ambient & (1 << cap) != 0 {
            caps.add("prctl(PR_CAP_AMBIENT_RAISE, \(cap)) in thread \(tid)", prctl, 47, 2, cap)
        }
        let exact = try caps.place(capabilities(effective: mask(c.capEff), permitted: mask(c.capPrm), inheritable: mask(c.capInh), tid: tid))
        caps.add("capset in thread \(tid)", Syscall.capset, exact, exact + 8)
        if c.noNewPrivs != 0 { caps.add("prctl(PR_SET_NO_NEW_PRIVS) in thread \(tid)", prctl, 38, 1) }
        try process.run(caps, in: thread)
    }

    /// capset's arguments: struct __user_cap_header_struct { u32 version =
    /// _LINUX_CAPABILITY_VERSION_3; int pid; } then two struct __user_cap_data_struct
    /// { u32 effective, permitted, inheritable; }.
    private static func capabilities(effective: UInt64, permitted: UInt64, inheritable: UInt64, tid: pid_t) -> [UInt8] {
        let words: [UInt32] = [0x2008_0522, UInt32(bitPattern: tid),
                               UInt32(truncatingIfNeeded: effective), UInt32(truncatingIfNeeded: permitted), UInt32(truncatingIfNeeded: inheritable),
                               UInt32(truncatingIfNeeded: effective >> 32), UInt32(truncatingIfNeeded: permitted >> 32), UInt32(truncatingIfNeeded: inheritable >> 32)]
        return words.withUnsafeBytes { Array($0) }
    }
}

func readWholeFileString(_ path: String) -> String? {
    (try? readWholeFile(path)).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: " \n") }
}
