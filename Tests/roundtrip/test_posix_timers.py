"""POSIX timers (timer_create) across dump and restore: the posixtimers subject checks from
inside that its timers keep their IDs, clocks, intervals, remaining times, si_value and target
thread and keep firing; these tests add what can be seen from outside, and the controls that
show the subject's checks can fail."""

import ctypes
import json
import signal
import subprocess

from conftest import task_ids
from test_images import CRIT, crit_decode, crit_env


def timers_text(pid):
    with open(f"/proc/{pid}/timers") as f:
        return f.read()


def test_posixtimers_same_in_proc_and_image(h):
    """/proc/PID/timers (IDs, signal, si_value, notify kind and target tid, clock) reads the
    same after restore as before the dump, and the core image has every timer with CRIU's
    fields: the thread-directed one names the worker thread."""
    s = h.start_subject("posixtimers")
    before = timers_text(s.pid)
    worker = [t for t in task_ids(s.pid) if t != s.pid]
    assert len(worker) == 1
    h.dump(s)
    timers = crit_decode(h.images / f"core-{s.pid}.img")["entries"][0]["tc"]["timers"]["posix"]
    listed = [int(line.split()[1]) for line in before.splitlines() if line.startswith("ID:")]
    assert sorted(t["it_id"] for t in timers) == sorted(listed)
    to_thread = [t for t in timers if t["it_sigev_notify"] == 4]
    assert len(to_thread) == 1 and to_thread[0]["notify_thread_id"] == worker[0], to_thread
    periodic = sorted((t["isec"], t["insec"]) for t in timers if t["isec"] or t["insec"])
    assert periodic == [(0, 20_000_000), (0, 25_000_000)], periodic
    pid = h.restore(expect_pid=s.pid)
    assert timers_text(pid) == before
    h.finish(pid)


def test_posixtimers_detects_missing_timers(h):
    """Negative control: the same images without the POSIX timers (crit decode / encode) restore
    a process that says FAIL."""
    s = h.start_subject("posixtimers")
    h.dump(s)
    core = h.images / f"core-{s.pid}.img"
    img = crit_decode(core)
    del img["entries"][0]["tc"]["timers"]["posix"]
    r = subprocess.run([CRIT, "encode", "-o", str(core)], input=json.dumps(img), text=True,
                       capture_output=True, env=crit_env())
    assert r.returncode == 0, f"crit encode failed: {r.stderr}"
    pid = h.restore(expect_pid=s.pid)
    text = h.finish(pid, expect="FAIL")
    assert "timer_gettime" in text, text


def test_posixtimers_notices_a_forged_timer_signal(hs):
    """Negative control, no checkpoint: a SIGRTMIN+1 queued by someone else (si_code SI_QUEUE)
    instead of by timer A is reported."""
    s = hs.start_subject("posixtimers")
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.sigqueue(s.pid, signal.SIGRTMIN + 1, ctypes.c_void_p(0xA1A1A1A1A1A1A1A1)) == 0
    text = hs.finish(s.pid, expect="FAIL")
    assert "not from a timer" in text, text


def test_posixtimers_dump_of_restored(h):
    """A restored process's timers dump and restore again, IDs and all (the restore left no
    explicit-ID mode or spare timer behind)."""
    s = h.start_subject("posixtimers")
    before = timers_text(s.pid)
    h.dump(s)
    pid = h.restore(expect_pid=s.pid)
    second = h.tmp / "images2"
    second.mkdir()
    h.dump(pid, images=second)
    pid2 = h.restore(images=second, expect_pid=s.pid)
    assert timers_text(pid2) == before
    h.finish(pid2)
