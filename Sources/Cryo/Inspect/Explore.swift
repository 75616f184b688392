import Foundation

/// `crit x DIR ps|fds|mems|rss`: the process tree, each process's descriptors, its mappings,
/// and its dumped (resident) pages per mapping — in crit's layout, line for line, so that
/// scripts written for crit keep working. (Where crit only prints `TYPE.id` for a descriptor,
/// Cryo names what it points at when the image says, e.g. an inet socket's addresses.)
public enum Explore {
    /// What to explore.
    public enum Topic: String, CaseIterable, Sendable {
        /// The process tree with pgid, sid and command.
        case ps
        /// Each process's descriptors, cwd and root.
        case fds
        /// Each process's mappings with protection and backing.
        case mems
        /// Each process's dumped pages, against the mappings they belong to.
        case rss
    }

    /// The report for `topic`, as crit prints it.
    public static func report(_ dump: DumpImages, _ topic: Topic) throws -> String {
        var out = ""
        switch topic {
        case .ps: try ps(dump, &out)
        case .fds: try fds(dump, &out)
        case .mems: try mems(dump, &out)
        case .rss: try rss(dump, &out)
        }
        return out
    }

    static func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
        s.count >= width ? s : left ? s + String(repeating: " ", count: width - s.count) : String(repeating: " ", count: width - s.count) + s
    }

    static func hex(_ v: UInt64, width: Int = 0) -> String {
        let h = String(v, radix: 16)
        return h.count >= width ? h : String(repeating: "0", count: width - h.count) + h
    }

    private static func ps(_ dump: DumpImages, _ out: inout String) throws {
        out += pad("PID", 7) + pad("PGID", 7) + pad("SID", 7) + "   COMM\n"
        var seen = Set<UInt32>()
        func show(_ e: PstreeEntry, _ depth: Int) throws {
            guard seen.insert(e.pid).inserted else { return }
            let p = try dump.process(e.pid)
            out += pad("\(e.pid)", 7) + pad("\(e.pgid)", 7) + pad("\(e.sid)", 7) + "   "
                + String(repeating: " ", count: 4 * depth) + p.command + "\n"
            for child in dump.children(of: e.pid) { try show(child, depth + 1) }
        }
        for root in dump.roots { try show(root, 0) }
    }

    private static func fds(_ dump: DumpImages, _ out: inout String) throws {
        for e in dump.pstree {
            let p = try dump.process(e.pid)
            out += "\(e.pid)\n"
            if p.isZombie { out += "\t(zombie)\n"; continue }
            for fd in p.fds {
                out += "\t" + pad("\(fd.fd)", 7) + ": " + dump.describeFile(id: fd.id, type: fd.type) + "\n"
            }
            if let fs = p.fs {
                out += "\t" + pad("cwd", 7) + ": " + dump.describeFile(id: fs.cwdID, type: .reg) + "\n"
                out += "\t" + pad("root", 7) + ": " + dump.describeFile(id: fs.rootID, type: .reg) + "\n"
            }
        }
    }

    private static func mems(_ dump: DumpImages, _ out: inout String) throws {
        var ids: [UInt64: Int] = [:]
        func vid(_ shmid: UInt64) -> Int {
            if let v = ids[shmid] { return v }
            ids[shmid] = ids.count + 1
            return ids.count
        }
        for e in dump.pstree {
            let p = try dump.process(e.pid)
            out += "\(e.pid)\n"
            guard let mm = p.mm else { out += "\t(zombie)\n"; continue }
            out += "\t" + pad("exe", 36, left: true) + "    " + dump.describeFile(id: mm.exeFileID, type: .reg) + "\n"
            for vma in mm.vmas {
                let st = vma.status
                var fn: String
                if st & VMAStatus.sysvipc != 0 {
                    fn = " ips[\(String(vid(vma.shmid), radix: 16))]"
                } else if st & VMAStatus.anonShared != 0 {
                    fn = " shmem[\(String(vid(vma.shmid), radix: 16))]"
                } else if st & VMAStatus.socket != 0 {
                    fn = " packet[\(String(vid(vma.shmid), radix: 16))]"
                } else if st & (VMAStatus.filePrivate | VMAStatus.fileShared) != 0 {
                    fn = " " + dump.describeFile(id: UInt32(truncatingIfNeeded: vma.shmid), type: .reg)
                    if vma.pgoff != 0 { fn += " + 0x" + hex(vma.pgoff) }
                    if st & VMAStatus.fileShared != 0 { fn += " (s)" }
                } else if st & VMAStatus.stack != 0 {
                    fn = " [stack]"
                } else if st & VMAStatus.vsyscall != 0 {
                    fn = " [vsyscall]"
                } else if st & VMAStatus.vdso != 0 {
                    fn = " [vdso]"
                } else if vma.flags & 0x100 != 0 {
                    fn = " [stack?]"
                } else {
                    fn = ""
                }
                if st & VMAStatus.regular == 0 { fn += " *" }
                let prot = (vma.prot & 1 != 0 ? "r" : "-") + (vma.prot & 2 != 0 ? "w" : "-") + (vma.prot & 4 != 0 ? "x" : "-")
                out += "\t" + pad(hex(vma.start, width: 8) + "-" + hex(vma.end, width: 8), 36, left: true) + prot + fn + "\n"
            }
        }
    }

    private static func rss(_ dump: DumpImages, _ out: inout String) throws {
        for e in dump.pstree {
            let p = try dump.process(e.pid)
            out += "\(e.pid)\n"
            guard let mm = p.mm, let pagemap = p.pagemap else { continue }
            let vmas = mm.vmas
            var vmi = 0
            var previous = -1
            for pm in pagemap.entries {
                let pstr = "\t" + hex(pm.vaddr) + " / " + pad("\(pm.nrPages)", 8, left: true)
                while vmi < vmas.count, vmas[vmi].end <= pm.vaddr { vmi += 1 }
                let pmEnd = pm.vaddr &+ UInt64(pm.nrPages) << 12
                var vstr = ""
                while vmi < vmas.count, vmas[vmi].start < pmEnd {
                    let vma = vmas[vmi]
                    if vmi == previous {
                        vstr += " ~"
                    } else {
                        vstr += " " + hex(vma.start, width: 8) + " / " + pad("\((vma.end &- vma.start) >> 12)", 8, left: true)
                        if vma.status & (VMAStatus.filePrivate | VMAStatus.fileShared) != 0 {
                            vstr += " " + dump.describeFile(id: UInt32(truncatingIfNeeded: vma.shmid), type: .reg)
                        }
                        previous = vmi
                    }
                    vstr += "\n\t" + String(repeating: " ", count: 23)
                    vmi += 1
                }
                vmi = max(0, vmi - 1)
                out += pad(pstr, 24, left: true) + vstr + "\n"
            }
        }
    }
}
