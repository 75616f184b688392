#!/usr/bin/env python3
"""Dump and restore a tree of 101 processes; print the figures.

    sudo Benchmarks/tree.py [--children 100] [--runs 3] [--cryo PATH]

The tree is `dash -c 'for i in $(seq 100); do sleep 1000 & done; wait'` (dash and its 100
sleeping children). Each run: start it, dump it (`cryo dump -t PID -D DIR`, which kills it),
restore it (`cryo restore -D DIR -d`, which returns once the tree runs), check that dash has
the same 100 children again, kill it. Prints the medians of the runs. Uses the release build
(.build/release/cryo; built if missing). CRIU 4.2 on this machine: dump 0.52 s, restore 0.20 s.
"""
import argparse, ctypes, os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRIU_DUMP, CRIU_RESTORE = 0.52, 0.20


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(x) for x in f.read().split())
    except OSError:
        return []


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def session_members(sid):
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[3]) == sid:
                        out.add(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def wait_for(pred, what, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def reap_session(sid, timeout=30):
    """Wait until nothing is left in the session, reaping what was reparented to us."""
    def gone():
        for pid in session_members(sid):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        return not session_members(sid)
    wait_for(gone, f"session {sid} to end", timeout)


def kill_session(sid):
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cryo(args, *argv):
    t = time.perf_counter()
    r = subprocess.run([args.cryo, *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{args.cryo} {' '.join(argv)} failed ({r.returncode}):\n{r.stderr}")
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cryo", default=os.path.join(ROOT, ".build/release/cryo"))
    ap.add_argument("--restore-threads", type=int, default=None,
                    help="passed to cryo restore (default: cryo's own, one per CPU)")
    args = ap.parse_args()
    if not os.path.exists(args.cryo):
        subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True)
    # Restored trees are reparented to us, so we can reap them.
    if ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) != 0:
        raise SystemExit("cannot become a child subreaper (run as root)")
    work = tempfile.mkdtemp(prefix="cryo-bench-tree.")
    script = f"for i in $(seq {args.children}); do sleep 1000 & done; wait"
    dumps, restores = [], []
    threads = [] if args.restore_threads is None else ["--restore-threads", str(args.restore_threads)]
    print(f"{args.children + 1} processes, {args.cryo}")
    done = False
    try:
        for run in range(args.runs):
            images = os.path.join(work, f"img-{run}")
            os.makedirs(images)
            p = subprocess.Popen(["dash", "-c", script], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
            sid = p.pid
            try:
                wait_for(lambda: len(children(p.pid)) == args.children and
                         all(comm(k) == "sleep" for k in children(p.pid)), "the sleepers")
                kids = children(p.pid)
                dumps.append(cryo(args, "dump", "-t", str(p.pid), "-D", images, "-o", "dump.log"))
                p.wait()
                try:
                    reap_session(sid, timeout=10)  # every pid free again (zombies hold them)
                except SystemExit:
                    left = len(session_members(sid))
                    raise SystemExit(f"run {run}: {left} processes of the tree still run after "
                                     f"the dump: {args.cryo} did not dump (and kill) the whole "
                                     f"tree; see {images}/dump.log") from None
                restores.append(cryo(args, "restore", "-D", images, "-o", "restore.log", "-d", *threads))
                if children(p.pid) != kids:
                    raise SystemExit(f"run {run}: after restore dash has {len(children(p.pid))} "
                                     f"children, not the {len(kids)} it had")
                print(f"run {run + 1}: dump {dumps[-1]:.3f} s, restore {restores[-1]:.3f} s")
                sys.stdout.flush()
            finally:
                kill_session(sid)
                reap_session(sid)
                try:
                    p.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
            shutil.rmtree(images)
        dm, rm = statistics.median(dumps), statistics.median(restores)
        print(f"{'':>10} {'dump s':>8} {'restore s':>10}")
        print(f"{'cryo':>10} {dm:>8.3f} {rm:>10.3f}   (median of {args.runs})")
        print(f"{'CRIU 4.2':>10} {CRIU_DUMP:>8.2f} {CRIU_RESTORE:>10.2f}")
        done = True
    finally:
        if done:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
