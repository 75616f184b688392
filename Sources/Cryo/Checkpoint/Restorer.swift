import CLinux
import Foundation
import Glibc
import SystemPackage

/// What `cryo restore` was asked to do.
public struct RestoreOptions: Sendable {
    public var images: ImageDirectory
    /// `--shell-job`: a tree dumped from a shell's session joins Cryo's session and process
    /// group, and the shell's terminal becomes Cryo's stdin terminal.
    public var shellJob = false
    /// How many threads rebuild processes at once (each traces the processes it builds).
    public var tracers = min(max(ProcessInfo.processInfo.activeProcessorCount, 1), 8)
    public init(images: ImageDirectory) { self.images = images }
}

/// Recreates a process tree from its images, with its PIDs and TIDs, from outside.
///
/// The root is cloned by Cryo with its PID; it maps a small helper (a `syscall` page and
/// scratch space) and stops itself. Each process is then rebuilt by remote system calls, in
/// this order: session, files, memory, mm fields; then its children are forked from it by a
/// remote `clone3` (so they inherit its open files, and share them as before) and built the
/// same way; then the rest of its state, its threads, and its credentials last. Zombies are
/// forked like the others and made to exit with their status at the end.
///
/// Subtrees are built in parallel, one per tracer thread (`TracerPool`): a child forked while
/// another thread has nothing to do is handed to it. What processes share is made once, by
/// whichever needs it first, and handed to the others: descriptions are created in Cryo and
/// passed with SCM_RIGHTS, shared memory is mapped from its first user's map_files.
public enum Restorer {
    /// The helper mapping's size: a code page, then scratch space.
    static let helperSize = 64 * 1024

    /// Restores the tree and lets it run. Returns the root's pid; the caller is its parent.
    public static func restore(_ options: RestoreOptions, log: Log) throws -> pid_t {
        let started = monotonicMicroseconds()
        var tree = try TreeImage.load(options.images)
        try tree.joinRestoringSession(shellJob: options.shellJob, log: log)
        defer { tree.ghosts.removeAll() }
        let pid = tree.root.pid
        log.info("Restoring \(tree.processes.count) process(es) rooted at \(pid) from \(options.images.path)")
        let helper = try chooseHelperAddress(tree.processes.flatMap(\.mm.vmas))
        // The root is cloned (and traced) by this thread: worker 0 of the pool.
        _ = try spawn(pid: pid, helper: helper)
        let pool = TracerPool(count: min(options.tracers, tree.processes.count))
        defer { pool.shutdown() }
        let builder: TreeBuilder
        do {
            builder = try TreeBuilder(tree: tree, images: options.images, shellJob: options.shellJob, pool: pool, log: log)
            builder.adopt(try RemoteProcess.adoptRestoreChild(pid, helper: helper, helperSize: helperSize), worker: 0)
        } catch {
            Glibc.kill(pid, SIGKILL); _ = try? WaitStatus.wait(pid)
            throw error
        }
        do {
            let root = tree.root
            pool.submit(to: 0) { worker in try builder.build(root, inherited: nil, worker: worker) }
            try pool.drain()
            let forked = monotonicMicroseconds()
            try builder.finish()
            var r = RestoreStatsEntry()
            r.pagesCompared = builder.sharing.pagesCompared
            r.pagesSkippedCow = builder.sharing.pagesSkipped
            r.forkingTime = UInt32(forked - started)
            r.restoreTime = UInt32(monotonicMicroseconds() - started)
            r.pagesRestored = builder.pagesRestored
            var stats = StatsEntry()
            stats.restore = r
            do { try options.images.write("stats-restore.img", magic: .stats, stats) }
            catch { log.warn("cannot write stats-restore.img: \(error)") }
            log.info("\(tree.processes.count) process(es) restored in \(r.restoreTime) µs by \(pool.count) thread(s)")
        } catch {
            log.warn("restore failed; killing every process it made")
            builder.killAll()
            throw error
        }
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
        guard let address = MemoryResource.freeAddress(length: UInt64(helperSize), avoiding: ours + theirs, from: 0x1000_0000,
                                                       step: 0x1000_0000, startingBelow: 0x7000_0000_0000) else {
            throw CryoError("no free address for the restore helper")
        }
        return address
    }

    /// Clones the root with PID `pid`, waits for it to stop, and makes it ours.
    static func spawn(pid: pid_t, helper: UInt64) throws -> pid_t {
        var args = cl_restore_child_args(helper_address: helper, helper_size: UInt64(helperSize), pid: pid)
        var result: Int = 0
        // A dumped process killed moments ago may still be a zombie holding the PID.
        for attempt in 0..<60 {
            result = cl_spawn_restore_child(&args)
            if result != -Int(EEXIST) { break }
            if attempt == 0 { try checkPidFree(pid) }
            usleep(50_000)
        }
        if result == -Int(EEXIST) {
            throw CryoError("cannot restore: pid \(pid) is still in use, though no process has it: zombies (e.g. the killed processes of the dumped tree, not yet reaped by their new parent) still name it as their process group or session")
        }
        if result < 0 { throw CryoError("cannot create a process with pid \(pid) (clone3 with set_tid)", errno: Errno(rawValue: Int32(-result))) }
        try adoptNewChild(pid)
        return pid
    }

    /// Fails when `pid` belongs to a live process (a zombie may still go away).
    static func checkPidFree(_ pid: pid_t) throws {
        guard Glibc.kill(pid, 0) == 0, (try? ProcDirectory(pid: pid).status()["State"]?.hasPrefix("Z")) != true else { return }
        let comm = (try? ProcDirectory(pid: pid).text("comm").trimmingCharacters(in: "\n")) ?? "?"
        throw CryoError("cannot restore: pid \(pid) is in use by a running process (\(comm))")
    }

    /// The ptrace options of every restored process: it dies with its tracer, and what it
    /// clones is traced too (by the same thread).
    static let traceOptions = Int(CL_PTRACE_O_EXITKILL | CL_PTRACE_O_TRACECLONE | CL_PTRACE_O_TRACEFORK | CL_PTRACE_O_TRACESYSGOOD)

    /// Waits for a new child's first stop and sets the ptrace options every restored process needs.
    static func adoptNewChild(_ pid: pid_t) throws {
        let status: WaitStatus
        do { status = try WaitStatus.wait(pid) } catch { throw CryoError("waiting for new process \(pid)", errno: error) }
        guard case .stopped = status else {
            // Exit statuses of the restore child (shim.c): 71, no room for the helper; 72, no ptrace.
            let why: String
            switch status {
            case .exited(71): why = " (it could not map the restore helper)"
            case .exited(72): why = " (it could not be traced: is cryo itself traced, e.g. by strace -f?)"
            default: why = ""
            }
            throw CryoError("new process \(pid) did not stop as expected: \(status)\(why)")
        }
        do { try Ptrace.setOptions(pid, traceOptions) }
        catch { Glibc.kill(pid, SIGKILL); _ = try? WaitStatus.wait(pid); throw CryoError("cannot set ptrace options on \(pid)", errno: error) }
    }
}

/// Builds the processes of one restore and remembers what it made, to undo it on failure.
///
/// Its methods run on the pool's threads at once; a process is only ever worked on by the
/// worker that traces it (`tracer`), and what they share is locked.
final class TreeBuilder: @unchecked Sendable {
    let tree: TreeImage
    let log: Log
    let pool: TracerPool
    private let lock = NSLock()
    /// Every process created so far, live or to become a zombie.
    private var made: [pid_t: RemoteProcess] = [:]
    /// Which worker of the pool traces each process.
    private var tracer: [pid_t: Int] = [:]
    private(set) var pagesRestored: UInt64 = 0
    private(set) var sharing = MemoryRestore.Sharing()
    let objects: FileObjects
    /// Cryo's resource limits, which every process has until it sets its own.
    let ownLimits = LimitsResource.own()
    /// Cryo's credentials, which every thread has until `finish` sets its own.
    let ownCreds = CredentialsResource.own()
    let shared: SharedMemoryTable

    init(tree: TreeImage, images: ImageDirectory, shellJob: Bool, pool: TracerPool, log: Log) throws {
        self.tree = tree
        self.log = log
        self.pool = pool
        self.objects = try FileObjects(images, files: tree.files, shellJob: shellJob)
        self.shared = try SharedMemoryTable(tree, images: images)
    }

    /// Records a new process, traced by `worker`.
    func adopt(_ process: RemoteProcess, worker: Int) {
        lock.withLock { made[process.pid] = process; tracer[process.pid] = worker }
    }

    /// The process made for `pid`.
    private func process(_ pid: pid_t) -> RemoteProcess { lock.withLock { made[pid]! } }

    /// The processes worker `worker` traces, in the tree's order, zombies or not.
    private func traced(by worker: Int, zombies: Bool) -> [(ProcessImage, RemoteProcess)] {
        lock.withLock {
            tree.processes.filter { tracer[$0.pid] == worker && $0.isZombie == zombies }.map { ($0, made[$0.pid]!) }
        }
    }

    /// Rebuilds `image` in its (stopped) process, then its children, on worker `worker` (the
    /// process's tracer). `inherited` is the fd table the process got from its parent (nil
    /// for the root).
    func build(_ image: ProcessImage, inherited: [FdinfoEntry]?, worker: Int) throws {
        let pid = image.pid
        // Another subtree failed: the restore is being undone.
        if pool.failed { throw CryoError("restore of \(pid) abandoned") }
        let process = process(pid)
        let tc = image.leader.tc
        let scratch = process.scratch!.address
        func call(_ what: String, _ nr: Int, _ args: UInt64...) throws -> Int64 {
            try process.checkedSyscall(what, nr, args)
        }
        func openRemote(_ path: String, _ flags: Int32) throws -> UInt64 {
            try process.memory.write(Array(path.utf8) + [0], at: scratch)
            return UInt64(try call("open \(path)", Syscall.openat, UInt64(bitPattern: -100), scratch, UInt64(UInt32(bitPattern: flags)), 0))
        }
        log.debug("building process \(pid) on thread \(worker)")
        // Session and group first: children inherit them.
        if image.pstree.sid == UInt32(pid) { _ = try call("setsid", 112) }
        else if image.pstree.pgid == UInt32(pid) { _ = try call("setpgid", 109, 0, 0) }
        if image.isZombie { return }

        // The session's terminal before the files (an fd on /dev/tty opens the controlling
        // terminal) and before any child is forked (children inherit it).
        if image.pstree.sid == UInt32(pid) {
            let inUse = (image.descriptors + (inherited ?? [])).map(\.fd).max() ?? 0
            try objects.withLock { try objects.terminals.restoreControllingTerminal(process, freeFD: UInt64(inUse) + 1) }
        }
        try FilesRestore.restore(process, image, files: tree.files, inherited: inherited, objects: objects, openRemote: openRemote)
        try FileLockResource.restore(tree.locks, process)
        // The parent it was forked from (nil for the root): what it inherited from it.
        let parent = pid == tree.root.pid ? nil : tree.process(pid_t(image.pstree.ppid))
        var sharing = MemoryRestore.Sharing()
        let pages = try MemoryRestore.restore(process, image, parent: parent, files: tree.files,
                                              shared: shared, memfds: objects.memfds, sharing: &sharing, log: log)
        lock.withLock {
            pagesRestored += pages
            self.sharing.pagesCompared += sharing.pagesCompared
            self.sharing.pagesSkipped += sharing.pagesSkipped
        }

        // mm fields: brk, arg/env, auxv, exe — one PR_SET_MM_MAP.
        let mm = image.mm
        // A forked child already runs its parent's exe, which it still maps: the kernel refuses
        // to replace an exe that is mapped (EBUSY), and there is nothing to replace.
        let exePath = tree.files[mm.exeFileID]!.reg.name
        let exeFD = (try? process.proc.link("exe")) == exePath ? UInt64(UInt32.max) : try openRemote(exePath, O_RDONLY)
        let auxvAddress = scratch + 256
        try process.memory.write(mm.mmSavedAuxv, at: auxvAddress)
        var map = cl_prctl_mm_map(start_code: mm.mmStartCode, end_code: mm.mmEndCode, start_data: mm.mmStartData,
                                  end_data: mm.mmEndData, start_brk: mm.mmStartBrk, brk: mm.mmBrk,
                                  start_stack: mm.mmStartStack, arg_start: mm.mmArgStart, arg_end: mm.mmArgEnd,
                                  env_start: mm.mmEnvStart, env_end: mm.mmEnvEnd, auxv: auxvAddress,
                                  auxv_size: UInt32(mm.mmSavedAuxv.count * 8), exe_fd: UInt32(exeFD))
        try withUnsafeBytes(of: &map) { try process.memory.write(scratch, $0) }
        _ = try call("prctl(PR_SET_MM, PR_SET_MM_MAP)", Syscall.prctl, 35, 14, scratch, UInt64(MemoryLayout<cl_prctl_mm_map>.size), 0)
        if exeFD != UInt64(UInt32.max) { _ = try call("close", Syscall.close, exeFD) }

        // What children inherit, set before they are forked; a child only changes what differs
        // from its parent (most often nothing: that is what makes trees fast to restore).
        if let cwd = tree.files[image.fs.cwdID]?.reg.name, cwd != parent.flatMap({ tree.files[$0.fs.cwdID]?.reg.name }) {
            try process.memory.write(Array(cwd.utf8) + [0], at: scratch)
            _ = try call("chdir \(cwd)", 80, scratch)
        }
        if image.fs.umask != parent?.fs.umask { _ = try call("umask", Syscall.umask, UInt64(image.fs.umask)) }
        if tc.personality != parent?.leader.tc.personality { _ = try call("personality", Syscall.personality, UInt64(tc.personality)) }
        try SignalsResource.restoreActions(tc.sigactions, process, inherited: parent?.leader.tc.sigactions)

        // Children: forked from this process now, so they inherit its files. Each is built
        // here, or by another worker if one is idle.
        for child in tree.children(of: pid) {
            try Restorer.checkPidFree(child.pid)
            try clone(in: process, id: child.pid, flags: 0, exitSignal: SIGCHLD, what: "process")
            try Restorer.adoptNewChild(child.pid)
            let new = try RemoteProcess.adoptRestoreChild(child.pid, helper: process.gadget, helperSize: Restorer.helperSize)
            adopt(new, worker: worker)
            if !child.isZombie && pool.hasIdleWorker {
                try handOff(new)
                let descriptors = image.descriptors
                pool.submit { other in
                    try self.takeOver(child.pid, helper: new.gadget, worker: other)
                    try self.build(child, inherited: descriptors, worker: other)
                }
            } else {
                try build(child, inherited: image.descriptors, worker: worker)
            }
        }

        // Where it stands: cwd, root, umask.
        if let root = tree.files[image.fs.rootID]?.reg.name, root != "/" {
            try process.memory.write(Array(root.utf8) + [0], at: scratch)
            _ = try call("chroot \(root)", Syscall.chroot, scratch)
        }
        try TimersResource.restore(tc.timers, process)
        try LimitsResource.restore(tc.rlimits, process, inherited: ownLimits, log: log)
        if tc.childSubreaper { _ = try call("prctl(PR_SET_CHILD_SUBREAPER)", Syscall.prctl, 36, 1) }
        if mm.thpDisabled { _ = try call("prctl(PR_SET_THP_DISABLE)", Syscall.prctl, 41, 1) }
        if tc.hasOomScoreAdj, let fd = fopen("/proc/\(pid)/oom_score_adj", "w") {
            fputs("\(tc.oomScoreAdj)\n", fd)
            if fclose(fd) != 0 { log.warn("cannot set oom_score_adj \(tc.oomScoreAdj) of \(pid)") }
        }

        // Threads: cloned from the leader with their TIDs, so they share everything above.
        for tid in image.pstree.threads.map({ pid_t($0) }) where tid != pid {
            try clone(in: process, id: tid, flags: 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000, // VM FS FILES SIGHAND THREAD SYSVSEM
                      exitSignal: 0, what: "thread")
            let status: WaitStatus
            do { status = try WaitStatus.wait(tid) } catch { throw CryoError("waiting for new thread \(tid)", errno: error) }
            guard case .stopped = status else { throw CryoError("new thread \(tid) \(status)") }
            process.addThread(try RemoteThread.adopt(tid))
        }
        // POSIX timers once every thread exists: a SIGEV_THREAD_ID timer names one.
        try PosixTimersResource.restore(tc.timers.posix, process)
        for thread in process.threads {
            try ThreadsResource.restore(image.cores[thread.tid]!, thread: thread, process)
        }
        if tc.hasSignalsS { try SignalsResource.restorePending(tc.signalsS, thread: nil, process) }
    }

    /// Lets go of a new process so that another worker can trace it: it waits in `pause()` (all
    /// its signals are blocked, so nothing but ptrace or SIGKILL wakes it).
    private func handOff(_ process: RemoteProcess) throws {
        // Untraced, it is no longer killed with its tracer (PTRACE_O_EXITKILL): let it die with
        // its parent instead, which still is (until `takeOver` puts the setting back).
        try process.checkedSyscall("prctl(PR_SET_PDEATHSIG, SIGKILL)", Syscall.prctl, [1, UInt64(SIGKILL)])
        var regs = process.leader.stoppedRegisters
        regs.rip = process.gadget
        regs.rax = UInt64(Syscall.pause)
        regs.orig_rax = UInt64.max
        do {
            try Ptrace.setRegisters(process.pid, regs)
            try Ptrace.detach(process.pid)
        } catch { throw CryoError("cannot hand new process \(process.pid) to another thread", errno: error) }
        // This object must not put the process back as it found it when it goes away: the
        // worker that takes the process over makes its own.
        process.forget()
    }

    /// Traces a process another worker handed off (`handOff`), from worker `worker`.
    ///
    /// PTRACE_ATTACH, not PTRACE_SEIZE: the process then stops for its SIGSTOP exactly as a
    /// new restore child does, and is traced the same way as the processes cloned from it.
    private func takeOver(_ pid: pid_t, helper: UInt64, worker: Int) throws {
        do { try Ptrace.attach(pid) } catch { throw CryoError("cannot trace new process \(pid) from another thread", errno: error) }
        try Restorer.adoptNewChild(pid)
        let process = try RemoteProcess.adoptRestoreChild(pid, helper: helper, helperSize: Restorer.helperSize)
        adopt(process, worker: worker)
        try process.checkedSyscall("prctl(PR_SET_PDEATHSIG, 0)", Syscall.prctl, [1, 0])  // its own comes with its threads
        log.debug("process \(pid) taken over by thread \(worker)")
    }

    /// Makes process or thread `id` by a remote clone3 with set_tid in `process`'s leader.
    private func clone(in process: RemoteProcess, id: pid_t, flags: UInt64, exitSignal: Int32, what: String) throws {
        let scratch = process.scratch!.address
        try process.memory.write(UInt64(id), at: scratch + 128)
        var args = cl_clone_args()
        args.flags = flags
        args.exit_signal = UInt64(exitSignal)
        args.set_tid = scratch + 128
        args.set_tid_size = 1
        try withUnsafeBytes(of: &args) { try process.memory.write(scratch, $0) }
        let new = try process.checkedSyscall("clone3 of \(what) \(id)", Syscall.clone3, [scratch, UInt64(MemoryLayout<cl_clone_args>.size)])
        guard new == Int64(id) else { throw CryoError("clone3 made \(what) \(new), expected \(id)") }
    }

    /// Joins process groups, sets credentials, turns zombies into zombies, and lets every
    /// process go with its own registers. Each step is done by every worker for the processes
    /// it traces, and finished by all before the next begins.
    func finish() throws {
        try eachTraced { image, process in try self.shared.removeSpares(of: process) }
        try shared.sysv.removeDestroyed()
        try objects.memfds.applySeals()
        try eachTraced { image, process in
            if let pgid = try? process.proc.statFields()[2], pgid != "\(image.pstree.pgid)" {
                try process.checkedSyscall("setpgid(0, \(image.pstree.pgid))", 109, [0, UInt64(image.pstree.pgid)])
            }
        }
        // Foreground groups name groups that exist only now.
        try eachTraced { image, process in
            guard image.pstree.sid == UInt32(image.pid) else { return }
            try self.objects.withLock {
                try self.objects.terminals.restoreForegroundGroups(process, descriptors: image.descriptors, files: self.tree.files)
            }
        }
        // Credentials last: after them, a process may no longer be allowed the calls above.
        try eachTraced { image, process in
            for thread in process.threads {
                let creds = image.cores[thread.tid]!.threadCore.creds
                if creds == self.ownCreds { continue }  // it has them already
                try CredentialsResource.restore(creds, thread: thread, in: process)
            }
            if image.mm.hasDumpable { try process.checkedSyscall("prctl(PR_SET_DUMPABLE)", Syscall.prctl, [4, UInt64(image.mm.dumpable)]) }
        }
        try eachTraced(zombies: true, reversed: true) { image, process in
            try process.setName(image.leader.tc.comm, in: process.leader)
            try self.makeZombie(process, status: image.zombieStatus!)
        }
        try eachTraced(reversed: true) { image, process in try self.release(process, image) }
    }

    /// One step of `finish`: every worker runs `body` for each process it traces (live ones,
    /// or zombies-to-be), in the tree's order or `reversed`; all are done when it returns.
    /// After a failure on any worker the others stop before their next process, so that
    /// nothing more is let go before the restore is undone.
    private func eachTraced(zombies: Bool = false, reversed: Bool = false,
                            _ body: @escaping (ProcessImage, RemoteProcess) throws -> Void) throws {
        try pool.onEveryWorker { worker in
            let mine = self.traced(by: worker, zombies: zombies)
            for (image, process) in reversed ? mine.reversed() : mine {
                if self.pool.failed { throw CryoError("restore of \(image.pid) abandoned") }
                try body(image, process)
            }
        }
    }

    /// Ends a process the way the dumped zombie ended, leaving it for its parent to reap.
    private func makeZombie(_ process: RemoteProcess, status: UInt32) throws {
        let signal = Int32(status & 0x7f)
        let pid = process.pid
        process.forget()
        if signal == 0 {
            var regs = process.leader.stoppedRegisters
            regs.rip = process.gadget
            regs.rax = UInt64(Syscall.exit_group)
            regs.orig_rax = UInt64.max
            regs.rdi = UInt64((status >> 8) & 0xff)
            do {
                try Ptrace.setRegisters(pid, regs)
                try Ptrace.cont(pid)
            } catch { throw CryoError("cannot end zombie \(pid)", errno: error) }
        } else {
            // Default action for the signal, nothing blocked, no core file: then the signal.
            _ = try process.syscall(Syscall.prctl, 4, 0)
            try process.memory.write([UInt64(0), 0, 0, 0], at: process.scratch!.address)
            _ = try process.syscall(Syscall.rt_sigaction, UInt64(signal), process.scratch!.address, 0, 8)
            do {
                try Ptrace.setSignalMask(pid, 0)
                try Ptrace.detach(pid)
            } catch { throw CryoError("cannot end zombie \(pid)", errno: error) }
            Glibc.kill(pid, signal)
        }
        // As its tracer (not its parent) we see it exit; it stays a zombie for its parent.
        while true {
            guard let s = try? WaitStatus.wait(pid) else { break }
            if case .stopped(let sig, _) = s { try? Ptrace.cont(pid, signal: sig == SIGSTOP || sig == SIGTRAP ? 0 : sig); continue }
            break
        }
    }

    /// Gives every thread its registers and mask, unmaps the helper from inside the leader,
    /// and detaches.
    private func release(_ process: RemoteProcess, _ image: ProcessImage) throws {
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
        regs.rsi = UInt64(Restorer.helperSize)
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

    /// Kills everything made so far, reaps what it must (see below), and removes the SysV
    /// segments it made.
    func killAll() {
        for (pid, process) in lock.withLock({ made }) {
            Glibc.kill(pid, SIGKILL)
            process.forget()
        }
        // Every killed thread reports its end to its tracer (one of our threads) and must be
        // waited for before its process's leader can be: reap them all until the root is.
        if let root = tree.processes.first?.pid {
            var status: Int32 = 0
            while true {
                let reaped = waitpid(-1, &status, __WALL)
                if reaped == root || (reaped < 0 && errnoValue != EINTR) { break }
            }
        }
        shared.sysv.abandon()
    }
}
