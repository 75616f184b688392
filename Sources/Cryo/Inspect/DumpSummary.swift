import Foundation
import Glibc

/// The one screen a person reads first about a checkpoint (`cryo inspect`): when and how it
/// was made, the process tree with command lines, memory sizes, open files, sockets, and the
/// dump/restore statistics. ``text`` is for people, ``json`` for scripts (stable keys, sizes
/// in bytes, times in microseconds, addresses as `0x` strings).
public struct DumpSummary {
    /// One process.
    public struct Process {
        /// Process id, parent, process group and session, as dumped.
        public let pid, ppid, pgid, sid: UInt32
        /// Depth in the tree (0 for a root).
        public let depth: Int
        /// alive, stopped, zombie, dead.
        public let state: String
        /// `comm`.
        public let command: String
        /// The command line, read from the process's memory in the image (empty if unknown).
        public let arguments: [String]
        /// (tid, thread name) per thread.
        public let threads: [(tid: UInt32, name: String)]
        /// Real and effective user id, if known.
        public let uid: UInt32?
        /// Bytes mapped and bytes in the pages image.
        public let mapped, dumped: UInt64
        /// Number of mappings.
        public let mappings: Int
        /// Open descriptors.
        public let files: [File]
        /// Working and root directories.
        public let cwd, root: String?
    }

    /// One open descriptor.
    public struct File {
        /// The descriptor number.
        public let fd: UInt32
        /// CRIU's type name (`REG`, `PIPE`, `INETSK`...).
        public let type: String
        /// What it points at.
        public let target: String
        /// Open flags by name (`O_RDWR | O_APPEND`), for files that have them.
        public let mode: String
        /// File position of a regular file.
        public let position: UInt64?
        /// Close-on-exec.
        public let cloexec: Bool
    }

    /// The images directory.
    public let directory: String
    /// When inventory.img was written (the end of the dump), if it exists.
    public let dumpedAt: Date?
    /// `dump_uptime`: the machine's uptime at the dump, in microseconds.
    public let uptime: UInt64?
    /// The number of image files.
    public let imageCount: Int
    /// Their total size.
    public let imageBytes: UInt64
    /// The size of the raw pages images among them.
    public let pagesBytes: UInt64
    /// The inventory as crit prints it (nil without inventory.img).
    public let inventory: JSONValue?
    /// How the dump was made, as far as the images tell: name → value.
    public let options: [(String, String)]
    /// Log files in the directory: name, lines, warnings, errors.
    public let logs: [(name: String, lines: Int, warnings: Int, errors: Int)]
    /// The processes, parents before children.
    public let processes: [Process]
    /// Sockets: pid, fd, description.
    public let sockets: [(pid: UInt32, fd: UInt32, type: String, description: String)]
    /// File locks (`file-locks.img`): pid, fd, kind (posix, flock, ofd, lease), type, range.
    public let locks: [(pid: Int32, fd: Int32, kind: String, type: String, start: Int64, length: Int64)]
    /// `stats-dump.img`, if there is one.
    public let dumpStats: DumpStatsEntry?
    /// `stats-restore.img`, if there is one (a restore writes it).
    public let restoreStats: RestoreStatsEntry?

    /// Summarizes the dump in `dump`.
    public init(_ dump: DumpImages) throws {
        directory = dump.directory
        var st = stat()
        if stat(dump.path("inventory.img"), &st) == 0 {
            dumpedAt = Date(timeIntervalSince1970: Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9)
        } else {
            dumpedAt = nil
        }
        uptime = dump.inventory.flatMap { $0.hasDumpUptime ? $0.dumpUptime : nil }
        var count = 0
        var total: UInt64 = 0, pages: UInt64 = 0
        var logs: [(String, Int, Int, Int)] = []
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dump.directory)) ?? []).sorted()
        for name in names {
            guard stat(dump.path(name), &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            if name.hasSuffix(".img") {
                count += 1
                total += UInt64(st.st_size)
                if name.hasPrefix("pages-") { pages += UInt64(st.st_size) }
            } else if name.hasSuffix(".log"), let text = try? String(contentsOfFile: dump.path(name), encoding: .utf8) {
                let lines = text.split(separator: "\n")
                logs.append((name, lines.count, lines.filter { $0.contains("Warn") }.count, lines.filter { $0.contains("Error") }.count))
            }
        }
        imageCount = count
        imageBytes = total
        pagesBytes = pages
        self.logs = logs
        if dump.contains("inventory.img") {
            let path = dump.path("inventory.img")
            inventory = try ImageJSON.decode(try ImageReader.bytes(path), file: path).objectValue?["entries"]?.arrayValue?.first
        } else {
            inventory = nil
        }

        // What other images add about files: deleted files, queued pipe and socket data, locks.
        var remaps: [UInt32: RemapFilePathEntry] = [:]
        if dump.contains("remap-fpath.img") {
            for r in try ImageReader.entries(dump.path("remap-fpath.img"), magic: .remapFpath, as: RemapFilePathEntry.self) { remaps[r.origID] = r }
        }
        func queued(_ name: String, id: String, length: String) throws -> [UInt32: UInt64] {
            guard dump.contains(name) else { return [:] }
            let path = dump.path(name)
            var out: [UInt32: UInt64] = [:]
            for e in try ImageJSON.decode(try ImageReader.bytes(path), file: path, noPayload: true).objectValue?["entries"]?.arrayValue ?? [] {
                guard let o = e.objectValue, case .number(let i)? = o[id], case .number(let n)? = o[length],
                      let key = UInt32(i), let bytes = UInt64(n) else { continue }
                out[key, default: 0] += bytes
            }
            return out
        }
        let pipeData = try queued("pipes-data.img", id: "pipe_id", length: "bytes")
        let socketData = try queued("sk-queues.img", id: "id_for", length: "length")
        func plural(_ n: UInt64) -> String { "\(n) byte\(n == 1 ? "" : "s") queued" }
        var locks: [(Int32, Int32, String, String, Int64, Int64)] = []
        if dump.contains("file-locks.img") {
            for l in try ImageReader.entries(dump.path("file-locks.img"), magic: .fileLocks, as: FileLockEntry.self) {
                let kind = l.flag & 1 != 0 ? "posix" : l.flag & 2 != 0 ? "flock" : l.flag & 0x400 != 0 ? "ofd" : l.flag & 4 != 0 ? "lease" : "flag \(l.flag)"
                let type = [0: "read", 1: "write", 2: "unlock"][l.type] ?? "type \(l.type)"
                locks.append((l.pid, l.fd, kind, type, l.start, l.len))
            }
        }
        self.locks = locks

        var processes: [Process] = []
        var sockets: [(UInt32, UInt32, String, String)] = []
        let typeNames = CriuSchema.shared.enums["fd_types"]?.names ?? [:]
        var lazy = false
        func visit(_ e: PstreeEntry, _ depth: Int, _ seen: inout Set<UInt32>) throws {
            guard seen.insert(e.pid).inserted else { return }
            let p = try dump.process(e.pid)
            var arguments: [String] = []
            var mapped: UInt64 = 0, dumped: UInt64 = 0
            if let mm = p.mm {
                let memory = try ProcessMemory(dump, p)
                mapped = memory.vmas.reduce(0) { $0 &+ ($1.end &- $1.start) }
                dumped = memory.dumpedBytes
                if memory.hasMissingPages { lazy = true }
                if mm.mmArgEnd > mm.mmArgStart, mm.mmArgEnd - mm.mmArgStart < 1 << 20,
                   let raw = try? memory.read(mm.mmArgStart, count: Int(mm.mmArgEnd - mm.mmArgStart)) {
                    arguments = raw.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
                    while arguments.last == "" { arguments.removeLast() }
                }
            }
            var files: [File] = []
            for fd in p.fds {
                let type = typeNames[Int32(fd.type.rawValue)] ?? "\(fd.type.rawValue)"
                var target = dump.describeFile(id: fd.id, type: fd.type)
                let entry = dump.files[fd.id]
                if let remap = remaps[fd.id] {
                    target += remap.remapType == .linked ? " (deleted; linked)" : " (deleted; contents in the images)"
                }
                if fd.type == .pipe || fd.type == .fifo, let entry, let n = pipeData[entry.hasPipe ? entry.pipe.pipeID : entry.fifo.pipeID] {
                    target += ", " + plural(n)
                }
                if let n = socketData[fd.id] { target += ", " + plural(n) }
                var mode = "", position: UInt64?
                if let entry, entry.hasReg {
                    mode = Self.openMode(entry.reg.flags)
                    position = entry.reg.pos
                }
                files.append(File(fd: fd.fd, type: type, target: target, mode: mode, position: position, cloexec: fd.flags & 1 != 0))
                if type.hasSuffix("SK") { sockets.append((e.pid, fd.fd, type, target)) }
            }
            let leaderCreds = p.leader.threadCore.hasCreds ? p.leader.threadCore.creds : nil
            processes.append(Process(
                pid: e.pid, ppid: e.ppid, pgid: e.pgid, sid: e.sid, depth: depth, state: p.state, command: p.command,
                arguments: arguments,
                threads: p.cores.map { ($0.tid, $0.core.threadCore.hasComm ? $0.core.threadCore.comm : p.command) },
                uid: leaderCreds?.uid, mapped: mapped, dumped: dumped, mappings: p.mm?.vmas.count ?? 0, files: files,
                cwd: p.fs.map { dump.describeFile(id: $0.cwdID, type: .reg) },
                root: p.fs.map { dump.describeFile(id: $0.rootID, type: .reg) }))
            for child in dump.children(of: e.pid) { try visit(child, depth + 1, &seen) }
        }
        var seen = Set<UInt32>()
        for root in dump.roots { try visit(root, 0, &seen) }
        self.processes = processes
        self.sockets = sockets
        dumpStats = dump.dumpStats
        restoreStats = dump.restoreStats

        // How it was dumped, as far as the images tell.
        var options: [(String, String)] = []
        let members = Set(dump.pids)
        let outside = dump.roots.contains { !members.contains($0.sid) || !members.contains($0.pgid) }
        options.append(("shell job", outside ? "yes (the session or group leader is outside the dump)" : "no"))
        let inv = dump.inventory
        options.append(("image version", inv.map { "\($0.imgVersion)\($0.imgVersion == 2 ? " (CRIU images v1.1)" : "")" } ?? "unknown (no inventory.img: incomplete dump)"))
        if let inv {
            options.append(("descriptors", inv.fdinfoPerID ? "fdinfo per files table" : "fdinfo per process"))
            options.append(("namespaces", inv.nsPerID ? "per id" : "dumped with the root's"))
            options.append(("LSM", CriuSchema.shared.enums["lsmtype"]?.names[Int32(inv.lsmtype.rawValue)] ?? "\(inv.lsmtype.rawValue)"))
            options.append(("TCP", inv.tcpClose ? "connections closed (--tcp-close)" : "connections kept"))
            if inv.hasNetworkLockMethod { options.append(("network lock", inv.networkLockMethod == 1 ? "nftables" : "iptables")) }
            options.append(("pre-dump", inv.hasPreDumpMode ? (inv.preDumpMode == 2 ? "read mode" : "splice mode") : "no"))
        }
        var parent = [CChar](repeating: 0, count: 4096)
        let parentLink = readlink(dump.path("parent"), &parent, parent.count - 1)
        options.append(("parent images", parentLink > 0 ? String(cString: parent) + " (incremental dump)" : "none"))
        options.append(("lazy pages", lazy ? "yes: some pages are not in this directory" : "no"))
        self.options = options
    }

    /// O_* names of open flags (crit's `rfile.flags` table; `O_RDONLY` when no access bit).
    static func openMode(_ flags: UInt32) -> String {
        let names = CritText.flagNames(UInt64(flags), CritText.flagMaps["rfile.flags"] ?? [])
        return flags & 3 == 0 ? (names.isEmpty ? "O_RDONLY" : "O_RDONLY | " + names) : names
    }

    // MARK: - Text

    /// The human summary.
    public var text: String {
        var out = "Checkpoint  \(directory)\n"
        var dumped = dumpedAt.map { Self.utc($0) } ?? "unknown (no inventory.img: the dump did not finish)"
        if let uptime { dumped += " (machine up \(Self.duration(uptime)) at the dump)" }
        out += "  dumped    \(dumped)\n"
        out += "  images    \(imageCount) files, \(humanBytes(imageBytes)) (pages \(humanBytes(pagesBytes)))\n"
        out += "  options   " + options.map { "\($0.0): \($0.1)" }.joined(separator: "\n            ") + "\n"
        for log in logs {
            out += "  log       \(log.name): \(log.lines) lines, \(log.warnings) warning\(log.warnings == 1 ? "" : "s"), \(log.errors) error\(log.errors == 1 ? "" : "s")\n"
        }
        out += "\nProcesses (\(processes.count))\n"
        var table = TextTable(["PID", "PPID", "PGID", "SID", "STATE", "THREADS", "UID", "MAPPED", "DUMPED", "COMMAND"],
                              right: [0, 1, 2, 3, 5, 6, 7, 8])
        for p in processes {
            let command = p.arguments.isEmpty ? p.command : p.arguments.joined(separator: " ")
            let shown = command.count > 160 ? String(command.prefix(157)) + "..." : command
            table.add(["\(p.pid)", "\(p.ppid)", "\(p.pgid)", "\(p.sid)", p.state, "\(p.threads.count)", p.uid.map(String.init) ?? "-",
                       humanBytes(p.mapped), humanBytes(p.dumped),
                       String(repeating: "  ", count: p.depth) + (p.depth > 0 ? "└ " : "") + shown])
        }
        out += table.render(indent: "  ")
        let fdCount = processes.reduce(0) { $0 + $1.files.count }
        out += "\nFiles (\(fdCount) descriptor\(fdCount == 1 ? "" : "s"))\n"
        var files = TextTable(["PID", "FD", "TYPE", "MODE", "POS", "TARGET"], right: [0, 1, 4])
        for p in processes {
            for f in p.files {
                files.add(["\(p.pid)", "\(f.fd)", f.type, f.mode + (f.cloexec ? (f.mode.isEmpty ? "" : " ") + "cloexec" : ""),
                           f.position.map(String.init) ?? "", f.target])
            }
            if let cwd = p.cwd { files.add(["\(p.pid)", "cwd", "DIR", "", "", cwd]) }
            if let root = p.root { files.add(["\(p.pid)", "root", "DIR", "", "", root]) }
        }
        out += files.render(indent: "  ")
        if sockets.isEmpty {
            out += "\nSockets: none\n"
        } else {
            out += "\nSockets (\(sockets.count))\n"
            var t = TextTable(["PID", "FD", "TYPE", "SOCKET"], right: [0, 1])
            for s in sockets { t.add(["\(s.pid)", "\(s.fd)", s.type, s.description]) }
            out += t.render(indent: "  ")
        }
        if !locks.isEmpty {
            out += "\nLocks (\(locks.count))\n"
            var t = TextTable(["PID", "FD", "KIND", "TYPE", "RANGE"], right: [0, 1])
            for l in locks { t.add(["\(l.pid)", "\(l.fd)", l.kind, l.type, l.length == 0 ? "\(l.start)-EOF" : "\(l.start)+\(l.length)"]) }
            out += t.render(indent: "  ")
        }
        out += "\nStatistics\n"
        if let d = dumpStats {
            out += "  dump     freezing \(Self.ms(d.freezingTime)) · frozen \(Self.ms(d.frozenTime)) · memory dump \(Self.ms(d.memdumpTime)) · memory write \(Self.ms(d.memwriteTime))\n"
            out += "           pages scanned \(d.pagesScanned) · written \(d.pagesWritten) (\(humanBytes(d.pagesWritten &* 4096))) · skipped (in parent) \(d.pagesSkippedParent) · lazy \(d.pagesLazy)\n"
        } else {
            out += "  dump     none (no stats-dump.img)\n"
        }
        if let r = restoreStats {
            out += "  restore  forking \(Self.ms(r.forkingTime)) · restore \(Self.ms(r.restoreTime)) · pages restored \(r.pagesRestored) · compared \(r.pagesCompared) · skipped (COW) \(r.pagesSkippedCow)\n"
        } else {
            out += "  restore  none yet (a restore writes stats-restore.img)\n"
        }
        return out
    }

    static func ms(_ us: UInt32) -> String { String(format: "%.1f ms", Double(us) / 1000) }

    static func utc(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss 'UTC'"
        return f.string(from: date)
    }

    static func duration(_ us: UInt64) -> String {
        let s = us / 1_000_000
        let d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60
        return (d > 0 ? "\(d)d " : "") + String(format: "%dh%02dm%02ds", h, m, sec)
    }

    // MARK: - JSON

    /// The machine summary (`cryo inspect --json`), format `cryo-inspect/1`.
    public var json: JSONValue {
        var o = JSONObject()
        o["format"] = .string("cryo-inspect/1")
        o["directory"] = .string(directory)
        if let dumpedAt {
            let f = ISO8601DateFormatter()
            f.formatOptions = [.withInternetDateTime]
            o["dumped_at"] = .string(f.string(from: dumpedAt))
        } else {
            o["dumped_at"] = .null
        }
        o["dump_uptime_us"] = uptime.map { .int($0) } ?? .null
        var images = JSONObject()
        images["count"] = .int(imageCount)
        images["bytes"] = .int(imageBytes)
        images["pages_bytes"] = .int(pagesBytes)
        o["images"] = .object(images)
        o["inventory"] = inventory ?? .null
        var opts = JSONObject()
        for (k, v) in options { opts[k.replacingOccurrences(of: " ", with: "_").replacingOccurrences(of: "-", with: "_").lowercased()] = .string(v) }
        o["options"] = .object(opts)
        o["logs"] = .array(logs.map { l in
            var j = JSONObject()
            j["name"] = .string(l.name); j["lines"] = .int(l.lines); j["warnings"] = .int(l.warnings); j["errors"] = .int(l.errors)
            return .object(j)
        })
        o["processes"] = .array(processes.map { p in
            var j = JSONObject()
            j["pid"] = .int(p.pid); j["ppid"] = .int(p.ppid); j["pgid"] = .int(p.pgid); j["sid"] = .int(p.sid)
            j["depth"] = .int(p.depth)
            j["state"] = .string(p.state)
            j["comm"] = .string(p.command)
            j["cmdline"] = .array(p.arguments.map { .string($0) })
            j["uid"] = p.uid.map { .int($0) } ?? .null
            j["threads"] = .array(p.threads.map { t in
                var tj = JSONObject()
                tj["tid"] = .int(t.tid); tj["comm"] = .string(t.name)
                return .object(tj)
            })
            var memory = JSONObject()
            memory["mappings"] = .int(p.mappings)
            memory["mapped_bytes"] = .int(p.mapped)
            memory["dumped_bytes"] = .int(p.dumped)
            j["memory"] = .object(memory)
            j["fds"] = .array(p.files.map { f in
                var fj = JSONObject()
                fj["fd"] = .int(f.fd); fj["type"] = .string(f.type); fj["target"] = .string(f.target)
                fj["mode"] = .string(f.mode); fj["pos"] = f.position.map { .int($0) } ?? .null; fj["cloexec"] = .bool(f.cloexec)
                return .object(fj)
            })
            j["cwd"] = p.cwd.map { .string($0) } ?? .null
            j["root"] = p.root.map { .string($0) } ?? .null
            return .object(j)
        })
        o["sockets"] = .array(sockets.map { s in
            var j = JSONObject()
            j["pid"] = .int(s.pid); j["fd"] = .int(s.fd); j["type"] = .string(s.type); j["description"] = .string(s.description)
            return .object(j)
        })
        o["locks"] = .array(locks.map { l in
            var j = JSONObject()
            j["pid"] = .int(l.pid); j["fd"] = .int(l.fd); j["kind"] = .string(l.kind); j["type"] = .string(l.type)
            j["start"] = .int(l.start); j["length"] = .int(l.length)
            return .object(j)
        })
        var stats = JSONObject()
        if let d = dumpStats {
            var j = JSONObject()
            j["freezing_time_us"] = .int(d.freezingTime); j["frozen_time_us"] = .int(d.frozenTime)
            j["memdump_time_us"] = .int(d.memdumpTime); j["memwrite_time_us"] = .int(d.memwriteTime)
            j["pages_scanned"] = .int(d.pagesScanned); j["pages_skipped_parent"] = .int(d.pagesSkippedParent)
            j["pages_written"] = .int(d.pagesWritten); j["pages_lazy"] = .int(d.pagesLazy)
            stats["dump"] = .object(j)
        } else {
            stats["dump"] = .null
        }
        if let r = restoreStats {
            var j = JSONObject()
            j["forking_time_us"] = .int(r.forkingTime); j["restore_time_us"] = .int(r.restoreTime)
            j["pages_compared"] = .int(r.pagesCompared); j["pages_skipped_cow"] = .int(r.pagesSkippedCow)
            j["pages_restored"] = .int(r.pagesRestored)
            stats["restore"] = .object(j)
        } else {
            stats["restore"] = .null
        }
        o["stats"] = .object(stats)
        return .object(o)
    }
}
