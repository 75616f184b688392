import Foundation

/// Threads that drive traced processes, each process always from the same thread.
///
/// ptrace binds a tracee to the *thread* that attached it: only that thread may make
/// requests for it, and the processes it makes clone are attached to that thread too. To
/// work on several processes at once, the restore needs threads that keep their tracees for
/// as long as they trace them — not a dispatch queue, which may move work between threads.
///
/// Worker 0 is the thread that calls `drain`; the pool starts the others. Jobs go either to
/// any worker (`submit(_:)`) or to one (`submit(to:_:)`); `drain` runs them until none is
/// left. After a job fails, every queued job is dropped (running ones check `failed`) and
/// `drain` rethrows that first error.
final class TracerPool: @unchecked Sendable {
    /// A piece of work, given the index of the worker that runs it.
    typealias Job = (_ worker: Int) throws -> Void

    /// How many workers there are, the calling thread included.
    let count: Int
    private let condition = NSCondition()
    private var anyWorker: [Job] = []
    private var pinned: [[Job]]
    /// Jobs taken and not yet finished.
    private var running = 0
    /// Workers waiting for a job.
    private var waiting = 0
    private var failure: Error?
    private var stopping = false

    /// A pool of `count` workers: the caller of `drain` and `count - 1` new threads.
    init(count: Int) {
        self.count = max(1, count)
        pinned = Array(repeating: [], count: self.count)
        for index in 1..<self.count {
            // A strong reference: a restore that fails at once may drop the pool before its
            // threads first run; `serve` returns after `shutdown` and lets it go.
            let thread = Thread { self.serve(index) }
            thread.name = "cryo-tracer-\(index)"
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// Queues `job` for whichever worker is free first.
    func submit(_ job: @escaping Job) {
        condition.withLock { anyWorker.append(job); condition.broadcast() }
    }

    /// Queues `job` for worker `worker` (the one tracing the processes it works on).
    func submit(to worker: Int, _ job: @escaping Job) {
        condition.withLock { pinned[worker].append(job); condition.broadcast() }
    }

    /// Whether a worker is waiting with nothing to do, so that handing it work now pays off.
    var hasIdleWorker: Bool {
        condition.withLock { waiting > anyWorker.count && failure == nil }
    }

    /// Whether a job has failed (long jobs check it to stop early).
    var failed: Bool { condition.withLock { failure != nil } }

    /// Runs `body` once on every worker, then waits for all of them.
    func onEveryWorker(_ body: @escaping Job) throws {
        for worker in 0..<count { submit(to: worker, body) }
        try drain()
    }

    /// Runs jobs on the calling thread (as worker 0) until every job — including those
    /// queued meanwhile — is done. Rethrows the first failure.
    func drain() throws {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let job = take(0) {
                run(job, 0)
            } else if running == 0 && anyWorker.isEmpty && pinned.allSatisfy(\.isEmpty) {
                break
            } else {
                waiting += 1
                condition.wait()
                waiting -= 1
            }
        }
        if let failure {
            self.failure = nil
            throw failure
        }
    }

    /// Ends the pool's threads once they are idle. Call it after every tracee was let go:
    /// a tracer thread that exits takes its tracees with it (PTRACE_O_EXITKILL).
    func shutdown() {
        condition.withLock { stopping = true; condition.broadcast() }
    }

    /// The loop of worker `index` (not 0).
    private func serve(_ index: Int) {
        condition.lock()
        defer { condition.unlock() }
        while !stopping {
            if let job = take(index) {
                run(job, index)
            } else {
                waiting += 1
                condition.wait()
                waiting -= 1
            }
        }
    }

    /// The next job for `worker`; the lock is held.
    private func take(_ worker: Int) -> Job? {
        if !pinned[worker].isEmpty { return pinned[worker].removeFirst() }
        if !anyWorker.isEmpty { return anyWorker.removeFirst() }
        return nil
    }

    /// Runs `job` without the lock; the lock is held before and after.
    private func run(_ job: Job, _ worker: Int) {
        running += 1
        condition.unlock()
        var error: Error?
        do { try job(worker) } catch let e { error = e }
        condition.lock()
        running -= 1
        if let error, failure == nil {
            failure = error
            anyWorker.removeAll()
            for worker in pinned.indices { pinned[worker].removeAll() }
        }
        condition.broadcast()
    }
}
