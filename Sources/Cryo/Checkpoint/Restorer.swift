import CLinux
import Foundation
import Glibc
import SystemPackage

/// What `cryo restore` was asked to do.
public struct RestoreOptions: Sendable {
    public var images: ImageDirectory
    public init(images: ImageDirectory) { self.images = images }
}

/// Everything read from an images directory about one process, checked before anything is
/// created.
struct ProcessImage {
    var pstree: PstreeEntry
    var cores: [pid_t: CoreEntry]
    var mm: MmEntry
    var pagemap: [PagemapEntry]
    var pagesPath: String
    var files: [UInt32: FileEntry]
    var descriptors: [FdinfoEntry]
    var fs: FsEntry

    var pid: pid_t { pid_t(pstree.pid) }
    var leader: CoreEntry { cores[pid]! }

    static func load(_ images: ImageDirectory) throws -> ProcessImage {
        guard images.contains("inventory.img") else {
            throw CryoError("\(images.path) holds no complete dump: inventory.img is missing")
        }
        let inventory: InventoryEntry = try images.readOne("inventory.img", magic: .inventory)
        guard inventory.imgVersion == 2 else {
            throw CryoError("\(images.url("inventory.img")): image version \(inventory.imgVersion) is not supported (expected 2)")
        }
        let tree: [PstreeEntry] = try images.read("pstree.img", magic: .pstree)
        guard tree.count == 1, let root = tree.first else {
            throw CryoError("\(images.url("pstree.img")) describes \(tree.count) processes; Cryo restores single processes only so far")
        }
        let pid = pid_t(root.pid)
        var cores: [pid_t: CoreEntry] = [:]
        for tid in root.threads {
            let core: CoreEntry = try images.readOne("core-\(tid).img", magic: .core)
            guard core.mtype == .x8664, core.hasThreadInfo else {
                throw CryoError("\(images.url("core-\(tid).img")) is not an x86_64 thread image")
            }
            cores[pid_t(tid)] = core
        }
        guard cores[pid]?.hasTc == true else { throw CryoError("\(images.url("core-\(pid).img")) has no task state") }
        let mm: MmEntry = try images.readOne("mm-\(pid).img", magic: .mm)
        let ids: TaskKobjIdsEntry = try images.readOne("ids-\(pid).img", magic: .ids)
        let fs: FsEntry = try images.readOne("fs-\(pid).img", magic: .fs)
        let fileList: [FileEntry] = try images.read("files.img", magic: .files)
        let descriptors: [FdinfoEntry] = try images.read("fdinfo-\(ids.filesID).img", magic: .fdinfo)
        // pagemap: a head, then entries.
        let pagemapFile = images.url("pagemap-\(pid).img")
        let bytes: [UInt8]
        do { bytes = try readWholeFile(pagemapFile) } catch let e as Errno { throw CryoError("cannot read image \(pagemapFile)", errno: e) }
        let (magic, start) = try ImageCodec.readHeader(bytes, file: pagemapFile)
        guard magic == .pagemap else { throw CryoError("image \(pagemapFile) is not a pagemap image") }
        let frames = try ImageCodec.frames(bytes, from: start, file: pagemapFile)
        guard let first = frames.first else { throw CryoError("image \(pagemapFile) is empty") }
        let head: PagemapHead
        var pagemap: [PagemapEntry] = []
        do {
            head = try PagemapHead(serializedBytes: Array(bytes[first]))
            for f in frames.dropFirst() { pagemap.append(try PagemapEntry(serializedBytes: Array(bytes[f]))) }
        } catch { throw CryoError("image \(pagemapFile) is corrupt: \(error)") }
        let pagesPath = images.url("pages-\(head.pagesID).img")
        var st = stat()
        guard stat(pagesPath, &st) == 0 else { throw CryoError("cannot restore: \(pagesPath) is missing", errno: Errno(rawValue: errnoValue)) }
        let expected = pagemap.reduce(UInt64(0)) { $0 + UInt64($1.nrPages) * 4096 }
        guard UInt64(st.st_size) == expected else {
            throw CryoError("cannot restore: \(pagesPath) holds \(st.st_size) bytes but \(pagemapFile) describes \(expected)")
        }
        var files: [UInt32: FileEntry] = [:]
        for f in fileList { files[f.id] = f }
        let image = ProcessImage(pstree: root, cores: cores, mm: mm, pagemap: pagemap, pagesPath: pagesPath,
                                 files: files, descriptors: descriptors, fs: fs)
        try image.verify()
        return image
    }

    /// Cross-checks the images and the files they name before the process is created.
    func verify() throws {
        var used = Set(descriptors.map(\.id))
        used.insert(mm.exeFileID)
        used.insert(fs.cwdID)
        used.insert(fs.rootID)
        for v in mm.vmas where v.status & (MemoryResource.filePrivate | MemoryResource.fileShared) != 0 { used.insert(UInt32(v.shmid)) }
        for id in used.sorted() {
            guard let f = files[id] else { throw CryoError("cannot restore: files.img has no entry for file id \(id)") }
            try f.verifyForRestore()
        }
        for e in pagemap {
            guard mm.vmas.contains(where: { $0.start <= e.vaddr && e.vaddr + UInt64(e.nrPages) * 4096 <= $0.end }) else {
                throw CryoError("cannot restore: pagemap entry at 0x\(String(e.vaddr, radix: 16)) lies outside every mapping of mm-\(pid).img")
            }
        }
    }
}

/// Recreates a process from its images, with its PID and TIDs, from outside: a child is
/// cloned with the right PID, stops itself, and is rebuilt by remote system calls.
public enum Restorer {
    /// The helper mapping's size: a code page, then scratch space.
    static let helperSize = 64 * 1024

    /// Restores the process and lets it run. Returns its pid; the caller is its parent.
    public static func restore(_ options: RestoreOptions, log: Log) throws -> pid_t {
        let started = monotonicMicroseconds()
        let image = try ProcessImage.load(options.images)
        let pid = image.pid
        log.info("Restoring process \(pid) (\(image.cores.count) thread(s)) from \(options.images.path)")
        let helper = try chooseHelperAddress(image.mm.vmas)
        let child = try spawn(pid: pid, helper: helper)
        let forked = monotonicMicroseconds()
        let process: RemoteProcess
        do {
            process = try RemoteProcess.adoptRestoreChild(pid, helper: helper, helperSize: helperSize)
        } catch {
            Glibc.kill(child, SIGKILL); _ = try? WaitStatus.wait(child)
            throw error
        }
        var pagesRestored: UInt64 = 0
        do {
            pagesRestored = try rebuild(process, image, options, log: log)
        } catch {
            log.error("restore of process \(pid) failed; killing what was made: \(error)")
            Glibc.kill(pid, SIGKILL)
            process.forget()
            for thread in process.threads { try? Ptrace.detach(thread.tid) }
            _ = try? WaitStatus.wait(pid)
            throw error
        }
        var r = RestoreStatsEntry()
        r.pagesCompared = 0
        r.pagesSkippedCow = 0
        r.forkingTime = UInt32(forked - started)
        r.restoreTime = UInt32(monotonicMicroseconds() - started)
        r.pagesRestored = pagesRestored
        var stats = StatsEntry()
        stats.restore = r
        do { try options.images.write("stats-restore.img", magic: .stats, stats) }
        catch { log.warn("cannot write stats-restore.img: \(error)") }
        log.info("Process \(pid) restored in \(r.restoreTime) µs")
        return pid
    }

    /// Reads the restore statistics written by the last restore, for `--display-stats`.
    public static func statistics(_ images: ImageDirectory) -> RestoreStatsEntry? {
        (try? images.readOne("stats-restore.img", magic: .stats, as: StatsEntry.self))?.restore
    }

    /// An address for the helper that no dumped mapping and none of ours uses.
    static func chooseHelperAddress(_ vmas: [VmaEntry]) throws -> UInt64 {
        let ours = try ProcDirectory(pid: getpid()).mappings().map { $0.start..<$0.end }
        let theirs = vmas.map { $0.start..<$0.end }
        let size = UInt64(helperSize)
        var candidate: UInt64 = 0x1000_0000
        while candidate < 0x7000_0000_0000 {
            let range = candidate..<(candidate + size)
            if !(ours + theirs).contains(where: { $0.overlaps(range) }) { return candidate }
            candidate += 0x1000_0000
        }
        throw CryoError("no free address for the restore helper")
    }

    /// Clones the child with PID `pid`, waits for it to stop, and makes it ours.
    static func spawn(pid: pid_t, helper: UInt64) throws -> pid_t {
        var args = cl_restore_child_args(helper_address: helper, helper_size: UInt64(helperSize), pid: pid)
        var result: Int = 0
        // A dumped process killed moments ago may still be a zombie holding the PID.
        for attempt in 0..<60 {
            result = cl_spawn_restore_child(&args)
            if result != -Int(EEXIST) { break }
            if attempt == 0, Glibc.kill(pid, 0) == 0, (try? ProcDirectory(pid: pid).status()["State"]?.hasPrefix("Z")) != true {
                let comm = (try? ProcDirectory(pid: pid).text("comm").trimmingCharacters(in: "\n")) ?? "?"
                throw CryoError("cannot restore: pid \(pid) is in use by a running process (\(comm))")
            }
            usleep(50_000)
        }
        if result == -Int(EEXIST) { throw CryoError("cannot restore: pid \(pid) is in use") }
        if result < 0 { throw CryoError("cannot create a process with pid \(pid) (clone3 with set_tid)", errno: Errno(rawValue: Int32(-result))) }
        let status: WaitStatus
        do { status = try WaitStatus.wait(pid) } catch { throw CryoError("waiting for new process \(pid)", errno: error) }
        guard case .stopped(SIGSTOP, _) = status else {
            throw CryoError("new process \(pid) did not stop as expected: \(status)")
        }
        do { try Ptrace.setOptions(pid, Int(CL_PTRACE_O_EXITKILL | CL_PTRACE_O_TRACECLONE | CL_PTRACE_O_TRACESYSGOOD)) }
        catch { Glibc.kill(pid, SIGKILL); _ = try? WaitStatus.wait(pid); throw CryoError("cannot set ptrace options on \(pid)", errno: error) }
        return pid
    }

    /// Rebuilds the process in the stopped child. Returns the number of pages restored.
    private static func rebuild(_ process: RemoteProcess, _ image: ProcessImage, _ options: RestoreOptions, log: Log) throws -> UInt64 {
        let pid = image.pid
        let tc = image.leader.tc
        let scratch = process.scratch!.address
        func call(_ what: String, _ nr: Int, _ args: UInt64...) throws -> Int64 {
            try process.checkedSyscall(what, nr, args)
        }
        func openRemote(_ path: String, _ flags: Int32) throws -> UInt64 {
            try process.memory.write(Array(path.utf8) + [0], at: scratch)
            return UInt64(try call("open \(path)", Syscall.openat, UInt64(bitPattern: -100), scratch, UInt64(UInt32(bitPattern: flags)), 0))
        }

        let pages = try MemoryRestore.restore(process, image, openRemote: openRemote, log: log)
        log.debug("memory of \(pid) restored: \(pages) pages")

        // mm fields: brk, arg/env, auxv, exe — one PR_SET_MM_MAP.
        let mm = image.mm
        let exeFD = try openRemote(image.files[mm.exeFileID]!.reg.name, O_RDONLY)
        let auxvAddress = scratch + 256
        try process.memory.write(mm.mmSavedAuxv, at: auxvAddress)
        var map = cl_prctl_mm_map(start_code: mm.mmStartCode, end_code: mm.mmEndCode, start_data: mm.mmStartData,
                                  end_data: mm.mmEndData, start_brk: mm.mmStartBrk, brk: mm.mmBrk,
                                  start_stack: mm.mmStartStack, arg_start: mm.mmArgStart, arg_end: mm.mmArgEnd,
                                  env_start: mm.mmEnvStart, env_end: mm.mmEnvEnd, auxv: auxvAddress,
                                  auxv_size: UInt32(mm.mmSavedAuxv.count * 8), exe_fd: UInt32(exeFD))
        try withUnsafeBytes(of: &map) { try process.memory.write(scratch, $0) }
        _ = try call("prctl(PR_SET_MM, PR_SET_MM_MAP)", Syscall.prctl, 35, 14, scratch, UInt64(MemoryLayout<cl_prctl_mm_map>.size), 0)
        _ = try call("close", Syscall.close, exeFD)

        try FilesRestore.restore(process, image, openRemote: openRemote)

        // Where it stands: cwd, root, umask.
        if let root = image.files[image.fs.rootID]?.reg.name, root != "/" {
            try process.memory.write(Array(root.utf8) + [0], at: scratch)
            _ = try call("chroot \(root)", Syscall.chroot, scratch)
        }
        if let cwd = image.files[image.fs.cwdID]?.reg.name {
            try process.memory.write(Array(cwd.utf8) + [0], at: scratch)
            _ = try call("chdir \(cwd)", 80, scratch)
        }
        _ = try call("umask", Syscall.umask, UInt64(image.fs.umask))
        _ = try call("personality", Syscall.personality, UInt64(tc.personality))
        try SignalsResource.restoreActions(tc.sigactions, process)
        try TimersResource.restore(tc.timers, process)
        try LimitsResource.restore(tc.rlimits, process, log: log)
        if tc.childSubreaper { _ = try call("prctl(PR_SET_CHILD_SUBREAPER)", Syscall.prctl, 36, 1) }
        if mm.thpDisabled { _ = try call("prctl(PR_SET_THP_DISABLE)", Syscall.prctl, 41, 1) }
        if tc.hasOomScoreAdj, let fd = fopen("/proc/\(pid)/oom_score_adj", "w") {
            fputs("\(tc.oomScoreAdj)\n", fd)
            if fclose(fd) != 0 { log.warn("cannot set oom_score_adj \(tc.oomScoreAdj) of \(pid)") }
        }
        if image.pstree.sid == UInt32(pid) { _ = try call("setsid", 112) }
        else if image.pstree.pgid == UInt32(pid) { _ = try call("setpgid", 109, 0, 0) }

        // Threads: cloned from the leader with their TIDs, so they share everything above.
        for tid in image.pstree.threads.map({ pid_t($0) }) where tid != pid {
            try process.memory.write(UInt64(tid), at: scratch + 128)
            var args = cl_clone_args()
            args.flags = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000 // VM FS FILES SIGHAND THREAD SYSVSEM
            args.set_tid = scratch + 128
            args.set_tid_size = 1
            try withUnsafeBytes(of: &args) { try process.memory.write(scratch, $0) }
            let new = try call("clone3 of thread \(tid)", Syscall.clone3, scratch, UInt64(MemoryLayout<cl_clone_args>.size))
            guard new == Int64(tid) else { throw CryoError("clone3 made thread \(new), expected \(tid)") }
            let status: WaitStatus
            do { status = try WaitStatus.wait(tid) } catch { throw CryoError("waiting for new thread \(tid)", errno: error) }
            guard case .stopped = status else { throw CryoError("new thread \(tid) \(status)") }
            process.addThread(try RemoteThread.adopt(tid))
        }
        for thread in process.threads {
            try ThreadsResource.restore(image.cores[thread.tid]!, thread: thread, process)
        }
        if tc.hasSignalsS { try SignalsResource.restorePending(tc.signalsS, thread: nil, process) }
        // Credentials last: after them, the process may no longer be allowed the calls above.
        for thread in process.threads {
            try CredentialsResource.restore(image.cores[thread.tid]!.threadCore.creds, thread: thread, in: process)
        }
        if mm.hasDumpable { _ = try call("prctl(PR_SET_DUMPABLE)", Syscall.prctl, 4, UInt64(mm.dumpable)) }

        try finish(process, image)
        return pages
    }

    /// Gives every thread its registers and mask, unmaps the helper from the leader, and
    /// lets the process go.
    private static func finish(_ process: RemoteProcess, _ image: ProcessImage) throws {
        for thread in process.threads where thread.tid != process.pid {
            let core = image.cores[thread.tid]!
            do {
                try Ptrace.setRegisters(thread.tid, core.threadInfo.gpregs.userRegs)
                try Ptrace.setSignalMask(thread.tid, core.threadCore.blkSigset)
            } catch { throw CryoError("cannot set registers of thread \(thread.tid)", errno: error) }
        }
        // munmap(helper) from inside the helper: run to the syscall's exit, then jump away.
        let leader = process.leader
        var regs = leader.stoppedRegisters
        regs.rip = process.gadget
        regs.rax = UInt64(Syscall.munmap)
        regs.orig_rax = UInt64.max
        regs.rdi = process.gadget
        regs.rsi = UInt64(helperSize)
        do {
            try Ptrace.setRegisters(leader.tid, regs)
            for _ in 0..<2 {
                try Ptrace.syscall(leader.tid)
                guard case .stopped = try WaitStatus.wait(leader.tid) else { throw CryoError("process \(process.pid) died while unmapping the helper") }
            }
            let core = image.leader
            try Ptrace.setRegisters(leader.tid, core.threadInfo.gpregs.userRegs)
            try Ptrace.setSignalMask(leader.tid, core.threadCore.blkSigset)
        } catch let e as Errno { throw CryoError("cannot finish the restore of \(process.pid)", errno: e) }
        process.forget()
        for thread in process.threads.reversed() {
            do { try Ptrace.detach(thread.tid) } catch { throw CryoError("cannot detach from thread \(thread.tid)", errno: error) }
        }
    }
}
