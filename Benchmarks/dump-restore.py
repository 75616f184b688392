#!/usr/bin/env python3
"""Dump and restore a process with N GiB of dirtied memory; print the figures.

    sudo Benchmarks/dump-restore.py [--sizes 1,4] [--runs 3]

Uses the release build (.build/release/cryo; built if missing). Reports the median of the
runs: dump time (process frozen until images are on disk, then killed), restore time (until
the process runs again, `restore -d`), throughput and image size. Each restored process
checks all its memory on SIGTERM; a failed check fails the benchmark. CRIU 4.2 on these
machines (shared/DESIGN.md): 1 GiB dump 0.72 s / restore 1.2-1.3 s; 4 GiB 4.8 s / 4.7 s.
"""
import argparse, ctypes, os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for(path, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path) and open(path).read().strip():
            return open(path).read().strip()
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,4", help="GiB, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cryo", default=os.path.join(ROOT, ".build/release/cryo"))
    args = ap.parse_args()
    if not os.path.exists(args.cryo):
        subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True)
    # Restored processes are reparented to us, so we can reap them.
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
    work = tempfile.mkdtemp(prefix="cryo-bench.")
    hog = os.path.join(work, "memhog")
    subprocess.run(["cc", "-O2", "-o", hog, os.path.join(ROOT, "Benchmarks/memhog.c")], check=True)
    print(f"{'size':>6} {'dump s':>8} {'restore s':>10} {'dump MB/s':>10} {'restore MB/s':>13} {'image MiB':>10}")
    try:
        for gib in [int(s) for s in args.sizes.split(",")]:
            dumps, restores, image = [], [], 0
            for run in range(args.runs):
                d = os.path.join(work, f"{gib}g-{run}")
                os.makedirs(os.path.join(d, "img"))
                out, pidfile = os.path.join(d, "out"), os.path.join(d, "pid")
                p = subprocess.Popen([hog, str(gib * 1024), out, pidfile], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                pid = int(wait_for(pidfile))
                t = time.perf_counter()
                subprocess.run([args.cryo, "dump", "-t", str(pid), "-D", f"{d}/img", "-o", "dump.log"], check=True)
                dumps.append(time.perf_counter() - t)
                p.wait()
                image = sum(os.path.getsize(os.path.join(d, "img", f)) for f in os.listdir(os.path.join(d, "img")) if f.startswith("pages-"))
                # Warm cache, as in the CRIU figures.
                t = time.perf_counter()
                subprocess.run([args.cryo, "restore", "-D", f"{d}/img", "-o", "restore.log", "-d"], check=True)
                restores.append(time.perf_counter() - t)
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
                result = open(out).read().strip()
                if result != "PASS":
                    raise SystemExit(f"restored process failed its memory check: {result}")
                shutil.rmtree(d)
            dm, rm = statistics.median(dumps), statistics.median(restores)
            mb = gib * 1024 * 1.048576
            print(f"{gib:>4}Gi {dm:>8.3f} {rm:>10.3f} {mb / dm:>10.0f} {mb / rm:>13.0f} {image / 2**20:>10.0f}")
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
