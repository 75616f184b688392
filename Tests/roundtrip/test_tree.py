"""Process trees and what their processes share, after a real dump -> kill -> restore.

The tree subjects (conftest.TREE_SUBJECTS, built on Tests/Subjects/family.h) check themselves
from inside: every process its identity and state, every parent its children over pipes, and
the root collects every verdict into its PASS/FAIL. From outside these tests check, for every
process of the tree, before the dump and after the restore:
  - pid, parent, process group, session, thread ids, zombie or not (`tree_info`);
  - which fds share an open file description (kcmp) and which share a pipe, each fd's kind
    and flags (`fd_layout`);
  - MAP_SHARED mappings: addresses, offsets, names, and which processes map the same object
    (same inode) (`shared_maps`).
Then: real programs from Debian (dash, cat, sleep, seq) and a dump that must be refused.
"""

import ctypes
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (CRIT, TREE_SUBJECTS, sysv_segments, assert_running_free, our_children, pid_exists,
                      poll, session_members)
from test_errors import assert_clean_failure
from test_images import crit_decode, crit_env

SETTLE = 0.3  # seconds a tree runs after a restore before it is told to finish
O_LARGEFILE = 0o100000
SYS_KCMP = 312  # x86_64
KCMP_FILE = 0

# Options the round trips give a subject, and what they do to it once it runs again.
EXTRA_ARGS = {"eventfds": ["--expect-usr2", "1"]}


def poke(name, pid):
    """After a restore (or a --leave-running dump): give the subject what EXTRA_ARGS promised."""
    if name == "eventfds":
        os.kill(pid, signal.SIGUSR2)  # it must arrive through the restored signalfd + epoll


# ---------------------------------------------------------------------------------------------
# What a tree looks like from outside


def proc_stat(pid):
    """comm, state, ppid, pgid, sid of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    comm = data[data.index("(") + 1:data.rindex(")")]
    fields = data[data.rindex(")") + 2:].split()
    return {"comm": comm, "state": fields[0], "ppid": int(fields[1]), "pgid": int(fields[2]),
            "sid": int(fields[3])}


def comm_of(pid):
    """comm of pid, None once it is gone (children come and go while we look)."""
    try:
        return proc_stat(pid)["comm"]
    except (FileNotFoundError, ProcessLookupError):
        return None


def children_of(pid):
    kids = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.update(int(x) for x in f.read().split())
    except FileNotFoundError:
        pass
    return kids


def tree_pids(root):
    """root and all its descendants (zombies included), parents first."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(sorted(children_of(pid)))
    return out


def tree_info(root):
    """pid -> (comm, zombie, ppid, pgid, sid, thread ids) for the whole tree; the root's ppid is
    left out (a restored root is the child of whoever restored it)."""
    info = {}
    for pid in tree_pids(root):
        st = proc_stat(pid)
        tids = tuple(sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")))
        info[pid] = (st["comm"], st["state"] == "Z", None if pid == root else st["ppid"],
                     st["pgid"], st["sid"], tids)
    return info


def describe_tree(info):
    lines = []
    for pid, (comm, zombie, ppid, pgid, sid, tids) in sorted(info.items()):
        lines.append(f"  {pid} {comm}{' (zombie)' if zombie else ''} ppid {ppid} pgid {pgid} "
                     f"sid {sid} tids {list(tids)}")
    return "\n".join(lines)


def assert_same_tree(before, after, what="after restore"):
    if before == after:
        return
    diff = []
    for pid in sorted(set(before) | set(after)):
        b, a = before.get(pid), after.get(pid)
        if b != a:
            diff.append(f"  pid {pid}: was {b}, {what} {a}")
    pytest.fail(f"the tree {what} differs:\n" + "\n".join(diff) +
                f"\nbefore:\n{describe_tree(before)}\n{what}:\n{describe_tree(after)}")


def assert_tree_running(root, info):
    """Every live process of the tree runs, untraced; zombies are still zombies."""
    for pid, (comm, zombie, *_rest) in info.items():
        if zombie:
            assert proc_stat(pid)["state"] == "Z", f"{comm} ({pid}) is no longer a zombie"
        else:
            assert_running_free(pid)


_libc = ctypes.CDLL(None, use_errno=True)


def same_description(a, b):
    """kcmp(KCMP_FILE): do (pid, fd) a and b refer to one open file description?"""
    r = _libc.syscall(SYS_KCMP, a[0], b[0], KCMP_FILE, a[1], b[1])
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"kcmp {a} {b}: {os.strerror(err)}")
    return r == 0


def fd_layout(pids):
    """(per-fd kind and flags, open-file-description classes, pipe classes) of live pids.

    kind: the fd's link with pipe/socket inode numbers dropped (they change on restore);
    flags: fdinfo flags without O_LARGEFILE. Classes are frozensets of (pid, fd) with more than
    one member: fds sharing one open file description (kcmp), fds on one pipe (either end)."""
    kinds, by_target, pipes = {}, {}, {}
    for pid in pids:
        if proc_stat(pid)["state"] == "Z":
            continue
        for fd in sorted(int(x) for x in os.listdir(f"/proc/{pid}/fd")):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = next(int(l.split()[1], 8) for l in f if l.startswith("flags:"))
            except FileNotFoundError:
                continue
            if target.startswith(f"/proc/{pid}/"):
                continue  # a subject reading its own /proc (count_threads) for a moment
            kind = target
            if target.startswith(("pipe:[", "socket:[")):
                kind = target.split(":")[0]
                pipes.setdefault(target, set()).add((pid, fd))
            kinds[(pid, fd)] = (kind, flags & ~O_LARGEFILE)
            by_target.setdefault(target, []).append((pid, fd))
    descs = set()
    for members in by_target.values():
        classes = []
        for m in members:
            for c in classes:
                if same_description(c[0], m):
                    c.append(m)
                    break
            else:
                classes.append([m])
        descs.update(frozenset(c) for c in classes if len(c) > 1)
    pipe_classes = {frozenset(m) for t, m in pipes.items() if t.startswith("pipe:") and len(m) > 1}
    return kinds, descs, pipe_classes


def describe_classes(classes):
    return "\n".join("  " + " ".join(f"{p}:{fd}" for p, fd in sorted(c)) for c in
                     sorted(classes, key=lambda c: sorted(c)))


def assert_same_fds(before, after):
    kb, db, pb = before
    ka, da, pa = after
    if kb != ka:
        diff = [f"  pid {k[0]} fd {k[1]}: was {kb.get(k)}, now {ka.get(k)}"
                for k in sorted(set(kb) | set(ka)) if kb.get(k) != ka.get(k)]
        pytest.fail("fds differ after restore (kind, flags):\n" + "\n".join(diff))
    assert db == da, (f"open file descriptions are shared differently after restore\n"
                      f"before:\n{describe_classes(db)}\nafter:\n{describe_classes(da)}")
    assert pb == pa, (f"pipes connect different fds after restore\n"
                      f"before:\n{describe_classes(pb)}\nafter:\n{describe_classes(pa)}")


def maps_lines(pid):
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end, parts[1], int(parts[2], 16), parts[3], int(parts[4]),
                        parts[5].strip() if len(parts) > 5 else ""))
    return out


def shared_maps(pids):
    """(per-pid MAP_SHARED mappings (start, end, perms, offset, name), classes of (pid, start)
    mapping the same object). The inode numbers of shared anonymous memory change on restore;
    which processes share one must not."""
    per_pid, by_inode = {}, {}
    for pid in pids:
        if proc_stat(pid)["state"] == "Z":
            continue
        mine = []
        for start, end, perms, off, dev, ino, name in maps_lines(pid):
            if perms[3] == "s":
                mine.append((start, end, perms, off, name))
                by_inode.setdefault((dev, ino), set()).add((pid, start))
        per_pid[pid] = mine
    return per_pid, {frozenset(v) for v in by_inode.values()}


def assert_same_shared_maps(before, after):
    mb, cb = before
    ma, ca = after
    for pid in sorted(set(mb) | set(ma)):
        assert mb.get(pid) == ma.get(pid), (
            f"pid {pid}: shared anonymous mappings were\n  {mb.get(pid)}\nafter restore\n"
            f"  {ma.get(pid)}")
    assert cb == ca, (f"shared anonymous mappings are shared by different processes after "
                      f"restore\nbefore: {sorted(sorted(c) for c in cb)}\n"
                      f"after:  {sorted(sorted(c) for c in ca)}")


class TreeState:
    """Everything compared before the dump and after the restore."""

    def __init__(self, root):
        self.root = root
        self.info = tree_info(root)
        live = [p for p, i in self.info.items() if not i[1]]
        self.fds = fd_layout(live)
        self.maps = shared_maps(live)

    def assert_same(self, other):
        assert_same_tree(self.info, other.info)
        assert_same_fds(self.fds, other.fds)
        assert_same_shared_maps(self.maps, other.maps)


def wait_tree_gone(pids, sid, timeout=10.0):
    """After a dump that kills: every process of the tree, and of its session, is gone. Those
    reparented to us (the subreaper) are reaped, so their pids (also as process group and
    session ids) are free for the restore. (The session matters for trees that fork while they
    are dumped: `sleep` in a shell loop is a new pid every 50 ms.)"""
    def members():
        return set(pids) | session_members(sid)

    def gone():
        for pid in members():
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        return not any(os.path.exists(f"/proc/{p}") for p in members())
    if not poll(gone, timeout):
        left = {p: proc_stat(p) for p in members() if os.path.exists(f"/proc/{p}")}
        pytest.fail(f"after the dump these processes of the tree still exist: {left}")


def dump_tree(h, root, *extra, images=None):
    """Dump root's tree (killing it unless -R/-s) and wait until all of it is gone."""
    pids = tree_pids(root)
    sid = proc_stat(root)["sid"]
    h.dump(root, *extra, images=images)
    if not any(x in ("-R", "--leave-running", "-s", "--leave-stopped") for x in extra):
        wait_tree_gone(pids, sid)


def log_excerpt(images, name="restore.log", lines=40):
    try:
        text = (Path(images) / name).read_text(errors="replace").splitlines()
    except OSError:
        return f"(no {name})"
    return "\n".join(text[-lines:])


def start_tree(h, name, *args):
    s = h.start_subject(name, *EXTRA_ARGS.get(name, []), *args)
    time.sleep(SETTLE)  # let the protocols run so the dump catches data in flight
    h.check_running(s.pid)
    return s


def restore_and_compare(h, s, state, *extra, images=None):
    pid = h.restore(*extra, images=images, expect_pid=s.pid)
    after = TreeState(pid)
    try:
        state.assert_same(after)
        assert_tree_running(pid, after.info)
    except AssertionError as e:
        raise AssertionError(f"{e}\nrestore.log (tail):\n{log_excerpt(images or h.images)}") from None
    poke(s.name, pid)
    time.sleep(SETTLE)
    h.check_running(pid)
    return pid


# ---------------------------------------------------------------------------------------------
# Every tree subject: kill/restore, --leave-running, restore twice, the images


@pytest.mark.parametrize("name", TREE_SUBJECTS)
def test_tree_kill_restore(h, name):
    s = start_tree(h, name)
    before = TreeState(s.pid)
    assert len(before.info) >= 2, f"{name} is not a tree:\n{describe_tree(before.info)}"
    dump_tree(h, s.pid)
    pid = restore_and_compare(h, s, before)
    h.finish(pid)


@pytest.mark.parametrize("name", TREE_SUBJECTS)
def test_tree_leave_running(h, name):
    s = start_tree(h, name)
    before = TreeState(s.pid)
    dump_tree(h, s.pid, "--leave-running")
    assert s.popen.poll() is None, f"{name} died during a --leave-running dump"
    after = TreeState(s.pid)
    before.assert_same(after)
    assert_tree_running(s.pid, after.info)
    poke(name, s.pid)
    time.sleep(SETTLE)
    h.finish(s.pid)


@pytest.mark.parametrize("name", TREE_SUBJECTS)
def test_tree_restore_twice(h, name):
    s = start_tree(h, name)
    before = TreeState(s.pid)
    dump_tree(h, s.pid)
    files = h.snapshot()
    pid = restore_and_compare(h, s, before)
    h.finish(pid)
    wait_tree_gone(list(before.info), s.pid)
    h.restore_snapshot(files)
    pid = restore_and_compare(h, s, before)
    h.finish(pid)


def as_int(v):
    return int(v, 0) if isinstance(v, str) else int(v)


@pytest.mark.parametrize("name", TREE_SUBJECTS)
def test_tree_images(h, name):
    """crit reads the tree's images: pstree.img has every process with its parent, group,
    session and threads; zombies' cores say zombie and the wait status; fdinfo images give
    one file id to exactly the fds that share an open file description."""
    s = start_tree(h, name)
    state = TreeState(s.pid)
    h.dump(s, "--leave-running")
    poke(name, s.pid)
    h.finish(s.pid)

    pstree = crit_decode(h.images / "pstree.img")["entries"]
    got = {e["pid"]: (e["ppid"], e["pgid"], e["sid"], tuple(sorted(e.get("threads", []))))
           for e in pstree}
    want = {pid: (0 if pid == s.pid else ppid, pgid, sid, tids)
            for pid, (_c, _z, ppid, pgid, sid, tids) in state.info.items()}
    assert got == want, f"pstree.img says\n  {got}\n/proc said\n  {want}"
    assert pstree[0]["pid"] == s.pid, "the root is not the first pstree entry"

    files_of = {}
    for pid, (comm, zombie, *_r) in state.info.items():
        core = crit_decode(h.images / f"core-{pid}.img")["entries"][0]["tc"]
        if zombie:
            assert core["task_state"] == 6, f"zombie {comm} ({pid}): task_state {core}"
            zstatus = {"tree-Z": 7, "tree-AZ": 9}.get(comm)
            if zstatus is not None:
                assert core["exit_code"] == zstatus << 8, (
                    f"zombie {comm} ({pid}): exit_code {core['exit_code']}, expected the wait "
                    f"status {zstatus << 8} (exit {zstatus})")
            continue
        assert core["task_state"] == 1, f"{comm} ({pid}): task_state {core['task_state']}"
        ids = crit_decode(h.images / f"ids-{pid}.img")["entries"][0]
        files_of[pid] = ids["files_id"]

    ids_of = {}
    for pid, files_id in files_of.items():
        for e in crit_decode(h.images / f"fdinfo-{files_id}.img")["entries"]:
            ids_of[(pid, e["fd"])] = e["id"]
    kinds, descs, _pipes = state.fds
    assert set(ids_of) == set(kinds), (
        f"fdinfo images hold fds {sorted(set(ids_of) - set(kinds))} that /proc did not show, "
        f"and lack {sorted(set(kinds) - set(ids_of))}")
    shared = {}
    for key, file_id in ids_of.items():
        shared.setdefault(file_id, set()).add(key)
    image_classes = {frozenset(v) for v in shared.values() if len(v) > 1}
    assert image_classes == descs, (
        f"file ids shared in fdinfo images:\n{describe_classes(image_classes)}\n"
        f"descriptions shared according to kcmp:\n{describe_classes(descs)}")


# ---------------------------------------------------------------------------------------------
# The tree subject in detail


TREE_SHAPE = {  # comm -> (parent's comm, process group leader's comm, extra threads)
    "tree-R": (None, "tree-R", 1),
    "tree-Z": ("tree-R", "tree-R", 0),
    "tree-A": ("tree-R", "tree-A", 2),
    "tree-A1": ("tree-A", "tree-A", 0),
    "tree-A2": ("tree-A", "tree-A", 1),
    "tree-A2a": ("tree-A2", "tree-A", 0),
    "tree-AZ": ("tree-A", "tree-A", 0),
    "tree-B": ("tree-R", "tree-A", 0),
    "tree-B1": ("tree-B", "tree-A", 0),
    "tree-C": ("tree-R", "tree-R", 0),
    "tree-C1": ("tree-C", "tree-C1", 1),
}
TREE_ZOMBIES = {"tree-Z", "tree-AZ"}


def assert_tree_shape(root, info):
    by_comm = {i[0]: pid for pid, i in info.items()}
    assert set(by_comm) == set(TREE_SHAPE), (
        f"processes {sorted(by_comm)}, expected {sorted(TREE_SHAPE)}\n{describe_tree(info)}")
    for comm, (parent, leader, threads) in TREE_SHAPE.items():
        pid = by_comm[comm]
        _c, zombie, ppid, pgid, sid, tids = info[pid]
        assert zombie == (comm in TREE_ZOMBIES), f"{comm} ({pid}) zombie: {zombie}"
        if parent is not None:
            assert ppid == by_comm[parent], f"{comm} ({pid}): parent {ppid}, expected {parent}"
        assert pgid == by_comm[leader], f"{comm} ({pid}): group {pgid}, expected {leader}'s"
        assert sid == root, f"{comm} ({pid}): session {sid}, expected {root}"
        if not zombie:
            assert len(tids) == 1 + threads, f"{comm} ({pid}): threads {tids}"


def test_tree_shape_survives(h):
    """The exact shape: 11 processes (2 zombies), 3 process groups (one joined by a sibling),
    one session, threads in 4 processes — before the dump and after the restore; each zombie's
    exit status is what its parent's waitpid returns at the end (checked by the subject)."""
    s = start_tree(h, "tree")
    before = TreeState(s.pid)
    assert_tree_shape(s.pid, before.info)
    dump_tree(h, s.pid)
    pid = restore_and_compare(h, s, before)
    assert_tree_shape(pid, tree_info(pid))
    h.finish(pid)


def test_tree_restored_in_parallel(h):
    """Subtrees are built by two tracer threads at once: the log shows processes handed to the
    second thread, and the tree is exactly as it was (shape, shared files and memory, each
    process's own checks). With --restore-threads 1 nothing is handed over and the result is
    the same."""
    s = start_tree(h, "tree")
    before = TreeState(s.pid)
    dump_tree(h, s.pid)
    files = h.snapshot()
    pid = restore_and_compare(h, s, before, "--restore-threads", "2")
    log = (h.images / "restore.log").read_text()
    assert "by 2 thread(s)" in log and "taken over by thread 1" in log, log_excerpt(h.images)
    assert_tree_shape(pid, tree_info(pid))
    h.finish(pid)
    wait_tree_gone(list(before.info), s.pid)
    h.restore_snapshot(files)
    (h.images / "restore.log").unlink()
    pid = restore_and_compare(h, s, before, "--restore-threads", "1")
    log = (h.images / "restore.log").read_text()
    assert "by 1 thread(s)" in log and "taken over" not in log, log_excerpt(h.images)
    h.finish(pid)


def take_pid(pid, tries=50):
    """Starts `sleep` with pid `pid` (through ns_last_pid), or fails the test."""
    for _ in range(tries):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        p = subprocess.Popen(["sleep", "1000"])
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    pytest.fail(f"could not start a process with pid {pid}")


def test_tree_failure_in_a_subtree_undoes_everything(h):
    """A restore that fails in a subtree another thread builds (a grandchild's pid is taken)
    fails cleanly, naming the pid, and kills every process it made on every thread; once the
    pid is free again the same images restore."""
    s = start_tree(h, "tree")
    before = TreeState(s.pid)
    grandchild = next(p for p, i in before.info.items() if i[0] == "tree-A2a")
    dump_tree(h, s.pid)
    blocker = take_pid(grandchild)
    # New pids (cryo's own threads among them) must not land on the tree's other pids.
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(max(max(i[5], default=p) for p, i in before.info.items()) + 1000))
    try:
        cp = h.restore("--restore-threads", "2", check=False)
        assert_clean_failure(cp, grandchild)
        log = (h.images / "restore.log").read_text()
        assert "taken over by thread 1" in log, log_excerpt(h.images)
        ok = poll(lambda: not any(pid_exists(p) for p in before.info if p != grandchild), 5.0)
        assert ok, f"left behind: {[p for p in before.info if p != grandchild and pid_exists(p)]}"
    finally:
        blocker.kill()
        blocker.wait()
    wait_tree_gone(list(before.info), s.pid)  # reap the killed ones reparented to us
    pid = restore_and_compare(h, s, before)
    h.finish(pid)


def test_tree_dump_of_restored(h):
    """A restored tree can be dumped and restored again."""
    s = start_tree(h, "tree")
    before = TreeState(s.pid)
    dump_tree(h, s.pid)
    pid = restore_and_compare(h, s, before)
    second = h.tmp / "images2"
    second.mkdir()
    dump_tree(h, pid, images=second)
    pid = restore_and_compare(h, s, before, images=second)
    h.finish(pid)


def test_eventfds_notices_a_missing_signal(hs):
    """Not vacuous (no cryo): told to expect a SIGUSR2 from outside that never comes, the
    subject FAILs — so in the round trips the one sent after the restore did arrive."""
    s = hs.start_subject("eventfds", "--expect-usr2", "1")
    text = hs.finish(s.pid, expect="FAIL")
    assert text.startswith("FAIL: ") and "SIGUSR2 from outside" in text, text


def test_tree_notices_a_lost_grandchild(hs):
    """Not vacuous (no cryo): a grandchild killed behind the tree's back is a FAIL naming it."""
    s = hs.start_subject("tree")
    info = tree_info(s.pid)
    victim = next(p for p, i in info.items() if i[0] == "tree-B1")
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.1)
    text = hs.finish(s.pid, expect="FAIL")
    assert text.startswith("FAIL: ") and "tree-B1" in text and str(victim) in text, text


# ---------------------------------------------------------------------------------------------
# Pipes, shared memory: variants


def test_pipes_big_capacity(h):
    """A pipe enlarged to 256 KiB (F_SETPIPE_SZ) holding 200000 unread bytes: capacity and
    every byte come back."""
    s = start_tree(h, "pipes", "--pipe-size", "262144", "--left", "200000")
    before = TreeState(s.pid)
    dump_tree(h, s.pid)
    sizes = sorted(e.get("bytes", 0) for e in crit_decode(h.images / "pipes-data.img")["entries"])
    assert 200000 in sizes and 1000 in sizes, (
        f"pipes-data.img does not hold the 200000 and 1000 unread bytes: {sizes}")
    pid = restore_and_compare(h, s, before)
    h.finish(pid)


def test_fifos_data_in_image(h):
    """The FIFOs' buffers are in fifo-data.img (left's 5000 bytes, rd's 100, chan's messages),
    each FIFO entry points at a path entry of the FIFO, and the tree continues from them."""
    s = start_tree(h, "fifos")
    before = TreeState(s.pid)
    dump_tree(h, s.pid)
    sizes = sorted(e.get("bytes", 0) for e in crit_decode(h.images / "fifo-data.img")["entries"])
    assert 5000 in sizes and 100 in sizes and len(sizes) == 3, f"fifo-data.img holds {sizes}"
    files = {e["id"]: e for e in crit_decode(h.images / "files.img")["entries"]}
    fifos = [e for e in files.values() if e["type"] == "FIFO"]
    assert len(fifos) == 6, f"expected 6 FIFO descriptions (chan x2, left, rd x3): {fifos}"
    for f in fifos:
        path = files[f["fifo"]["regf_id"]]["reg"]["name"]
        assert Path(path).name in {"chan", "left", "rd"}, path
    pid = restore_and_compare(h, s, before)
    h.finish(pid)


def test_fifos_notice_lost_data(hs):
    """Not vacuous (no cryo): 8 bytes taken out of `chan` and one out of `left` from outside
    make the subject FAIL naming both."""
    s = hs.start_subject("fifos")
    time.sleep(0.2)  # A has filled chan by now
    for name, count in (("chan", 8), ("left", 1)):
        fd = os.open(s.work / name, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert len(os.read(fd, count)) == count, f"nothing to read in {name}"
        finally:
            os.close(fd)
    text = hs.finish(s.pid, expect="FAIL")
    assert "chan" in text and "left" in text, text


def test_memfds_in_image(h):
    """memfd.img names every memfd with its size and seals; only the pages that hold data are
    stored (cryo-data's 16 pattern pages and R's counter page, not its holes); every mapping of
    a memfd is marked VMA_AREA_MEMFD and points at a MEMFD file entry."""
    s = start_tree(h, "memfds")
    before = TreeState(s.pid)
    dump_tree(h, s.pid)
    inodes = {e["name"]: e for e in crit_decode(h.images / "memfd.img")["entries"]}
    assert set(inodes) == {"cryo-data", "cryo-sealed", "cryo-priv", "cryo-hidden"}, inodes
    assert inodes["cryo-data"]["size"] == 256 * 4096 + 100
    # F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
    assert inodes["cryo-sealed"]["seals"] == 0xf, inodes["cryo-sealed"]
    pages = sum(e.get("nr_pages", 0) for e in crit_decode(
        h.images / f"pagemap-shmem-{inodes['cryo-data']['shmid']}.img")["entries"])
    assert pages == 17, f"cryo-data: {pages} pages stored, expected 16 of pattern + 1 counter page"
    files = {e["id"]: e for e in crit_decode(h.images / "files.img")["entries"]}
    vmas = crit_decode(h.images / f"mm-{s.pid}.img")["entries"][0]["vmas"]
    memfd_vmas = [v for v in vmas if int(v["status"]) & (1 << 14)]
    assert len(memfd_vmas) == 3, memfd_vmas
    assert all(files[v["shmid"]]["type"] == "MEMFD" for v in memfd_vmas), memfd_vmas
    pid = restore_and_compare(h, s, before)
    h.finish(pid)


def test_usockets_in_image(h):
    """Listeners keep their backlog, names (path with its file mode, abstract with its leading
    NUL) are in files.img, accepted connections carry their listener's name, and the socket
    files the dump found are still there after the restore."""
    s = start_tree(h, "usockets")
    before = TreeState(s.pid)
    dump_tree(h, s.pid)
    socks = [e["usk"] for e in crit_decode(h.images / "files.img")["entries"] if e["type"] == "UNIXSK"]
    srv = [u for u in socks if u.get("name", "").startswith(str(h.work / "srv.sock"))]
    assert sorted(u["state"] for u in srv) == [1, 10], srv
    listener = next(u for u in srv if u["state"] == 10)
    assert listener["backlog"] == 7 and listener["file_perms"]["mode"] & 0o7777 == 0o640, listener
    assert any(u.get("name", "").startswith("=00cryo-seq-") for u in socks), socks
    assert not any(u["state"] == 10 and "gone.sock" in u.get("name", "") for u in socks), (
        "gone.sock's listener was closed: it must not be in the dump")
    pid = restore_and_compare(h, s, before)
    for name in ("srv.sock", "gone.sock", "dg.sock"):
        assert stat.S_ISSOCK(os.lstat(h.work / name).st_mode), f"{name} is not a socket file"
    h.finish(pid)


def test_restore_unix_name_taken_by_live_socket(h):
    """Between dump and restore someone listens on the path a dumped socket was bound to:
    the restore fails naming the path, leaves no process, and that listener is untouched."""
    s = start_tree(h, "usockets")
    dump_tree(h, s.pid)
    path = s.work / "srv.sock"
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:
        squatter.bind(str(path))
        squatter.listen(1)
        cp = h.restore(check=False)
        assert_clean_failure(cp, str(path))
        assert not pid_exists(s.pid), "a process of the failed restore is left"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(path))
    path.unlink()
    pid = h.restore()
    h.finish(pid)


def test_sysvshm_in_image(h):
    """ipcns-shm-1.img holds the three segments with their keys, modes and sizes (the removed
    one marked SHM_DEST), and the VMAs that attach them are VMA_AREA_SYSVIPC with the ids."""
    s = start_tree(h, "sysvshm")
    before = TreeState(s.pid)
    segments = {k: i for i, k in sysv_segments().items()}
    dump_tree(h, s.pid)
    entries = {e["desc"]["id"]: e for e in crit_decode(h.images / "ipcns-shm-1.img")["entries"]}
    data = entries[segments[(1 << 28) | s.pid]]
    assert data["size"] == 256 * 4096 + 100 and data["desc"]["mode"] & 0o777 == 0o600, data
    assert entries[segments[(2 << 28) | s.pid]]["desc"]["mode"] & 0o777 == 0o640
    dest = [e for e in entries.values() if e["desc"]["mode"] & 0o1000]
    assert len(entries) == 3 and len(dest) == 1 and dest[0]["desc"]["key"] == 0, entries
    vmas = crit_decode(h.images / f"mm-{s.pid}.img")["entries"][0]["vmas"]
    assert sorted(v["shmid"] for v in vmas if int(v["status"]) & (1 << 10)) == sorted(entries), vmas
    pid = restore_and_compare(h, s, before)
    h.finish(pid)


def test_sysvshm_id_taken_fails_cleanly(h):
    """The id of a dumped segment belongs to another segment at restore time: a clear error
    naming the segment, no process left, the other segment untouched; once it is gone the
    segment is made again with its id and key."""
    s = start_tree(h, "sysvshm")
    key = (1 << 28) | s.pid
    shmid = {k: i for i, k in sysv_segments().items()}[key]
    dump_tree(h, s.pid)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.shmctl(shmid, 0, None) == 0  # IPC_RMID
    Path("/proc/sys/kernel/shm_next_id").write_text(f"{shmid}\n")
    other = libc.shmget(0x7e57 << 16 | (s.pid & 0xffff), 4096, 0o1000 | 0o600)  # IPC_CREAT
    try:
        assert other == shmid, f"could not take id {shmid}: got {other}"
        cp = h.restore(check=False)
        assert_clean_failure(cp, str(shmid))
        assert not pid_exists(s.pid), "a process of the failed restore is left"
        assert sysv_segments().get(shmid) == 0x7e57 << 16 | (s.pid & 0xffff), "the other segment was touched"
    finally:
        libc.shmctl(other, 0, None)
    pid = h.restore()
    assert sysv_segments().get(shmid) == key, "the segment was not made again with its id and key"
    h.finish(pid)


# ---------------------------------------------------------------------------------------------
# Copy-on-write memory: stored once, shared after restore (Tests/Subjects/cowtree.c)


COW_MIB = 48
COW_PAGE_COW_PARENT = 0x8  # Cryo's pagemap flag: the parent's page (crit shows "0x8")
COW_NEEDLE_PAGE, COW_B_NEEDLE_PAGE, COW_NEEDLE_WORD = 1000, 3, 16  # as in cowtree.c


def memory_use(pids):
    """Sum of Rss and of Pss (kB) over pids, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "Rss":
                    rss += int(value.split()[0])
                elif key == "Pss":
                    pss += int(value.split()[0])
    return rss, pss


def cow_tree(root):
    """comm -> pid of the cowtree processes, and the address of the shared region."""
    by_comm = {comm_of(pid): pid for pid in tree_pids(root)}
    assert set(by_comm) == {"cowtree-R", "cowtree-A", "cowtree-A1", "cowtree-B"}, by_comm
    region = [s for s, e, *_ in maps_lines(root) if e - s == COW_MIB << 20]
    assert len(region) == 1, f"no single {COW_MIB} MiB mapping in cowtree-R"
    return by_comm, region[0]


def pages_file(images, pid):
    """The pages image of process pid, and its pagemap entries (crit's JSON)."""
    entries = crit_decode(images / f"pagemap-{pid}.img")["entries"]
    return images / f"pages-{entries[0]['pages_id']}.img", entries[1:]


def flagged_pages(entries):
    """Pages of pagemap entries marked as the parent's (crit decode without --pretty gives the
    flags as a number; --pretty names this bit "0x8")."""
    return sum(e["nr_pages"] for e in entries if int(e.get("flags", 0)) & COW_PAGE_COW_PARENT)


def test_cow_pages_stored_once_and_shared_after_restore(h, tmp_path):
    """A 48 MiB parent and its three descendants (cowtree): pages a child still shares with
    its parent are stored once, in the parent's images (pagemap flag 0x8 in the children's);
    only what each changed is in its own. The dump leaves the live tree's memory shared (a
    --leave-running dump must not unshare it), --no-cow-dedup stores every process in full,
    crit and `cryo decode` read the flagged pagemaps alike, memparse and coredump follow the
    flag to the parent's pages, and after dump -> kill -> restore the tree's PSS is what it was
    (each process checks its memory from inside: the parent's data and its own changes)."""
    s = start_tree(h, "cowtree")
    before = TreeState(s.pid)
    procs, region = cow_tree(s.pid)
    children = [procs[c] for c in ("cowtree-A", "cowtree-A1", "cowtree-B")]
    size = COW_MIB << 20
    rss0, pss0 = memory_use(procs.values())
    assert pss0 < rss0 / 2, f"the subject's memory is not shared to begin with: Rss {rss0} kB, Pss {pss0} kB"

    # In full, and the running tree keeps sharing its memory.
    full = tmp_path / "full"
    full.mkdir()
    started = time.monotonic()
    dump_tree(h, s.pid, "--leave-running", "--no-cow-dedup", images=full)
    full_time = time.monotonic() - started
    rss1, pss1 = memory_use(procs.values())
    assert pss1 < pss0 * 1.1 + 4096, (
        f"a --leave-running dump unshared the tree's memory: Pss {pss0} kB before, {pss1} kB after")
    for comm, pid in procs.items():
        pages, entries = pages_file(full, pid)
        assert pages.stat().st_size >= size, f"--no-cow-dedup: {comm}'s pages hold {pages.stat().st_size} bytes"
        assert flagged_pages(entries) == 0, f"--no-cow-dedup: {comm}'s pagemap has entries marked 0x8"

    # Deduplicated (and the tree killed).
    started = time.monotonic()
    dump_tree(h, s.pid)
    dedup_time = time.monotonic() - started
    parent_pages, _ = pages_file(h.images, procs["cowtree-R"])
    assert parent_pages.stat().st_size >= size, "the parent's pages image does not hold the region"
    for comm in ("cowtree-A", "cowtree-A1", "cowtree-B"):
        pages, entries = pages_file(h.images, procs[comm])
        assert pages.stat().st_size < 1 << 20, f"{comm}'s pages image holds {pages.stat().st_size} bytes"
        assert flagged_pages(entries) >= size // 4096 - 16, (
            f"{comm}: only {flagged_pages(entries)} pages marked as its parent's")
        pagemap = h.images / f"pagemap-{procs[comm]}.img"
        ours = h.cryo("decode", "-i", pagemap, "--pretty").stdout
        theirs = subprocess.run([CRIT, "decode", "-i", str(pagemap), "--pretty"], capture_output=True, text=True,
                                env=crit_env(), check=True).stdout
        assert ours == theirs, f"cryo decode and crit decode differ on {pagemap.name}"
    stats = crit_decode(h.images / "stats-dump.img")["entries"][0]["dump"]
    assert stats["pages_skipped_parent"] >= 3 * (size // 4096 - 16), stats
    total = lambda d: sum(f.stat().st_size for f in d.glob("pages-*.img"))
    print(f"\ncowtree images: {total(full) >> 20} MiB in full ({full_time:.2f} s), "
          f"{total(h.images) >> 20} MiB deduplicated ({dedup_time:.2f} s)")

    # Inspect follows the flag: R's text is in A1 (through A, then R) and in B (its page 3 is its own).
    needle = region + COW_NEEDLE_PAGE * 4096 + COW_NEEDLE_WORD * 8
    b_needle = region + COW_B_NEEDLE_PAGE * 4096 + COW_NEEDLE_WORD * 8
    for comm, text, address in (("cowtree-A1", "cryo-cow-needle-from-R", needle),
                                ("cowtree-B", "cryo-cow-needle-from-R", needle),
                                ("cowtree-B", "cryo-cow-needle-from-B", b_needle)):
        out = h.cryo("memparse", h.images, "--pid", procs[comm], "--search", text).stdout
        assert f"0x{address:x}" in out, f"memparse --pid {procs[comm]} ({comm}) does not find {text} at 0x{address:x}:\n{out}"
    cores = tmp_path / "cores"
    h.cryo("coredump", "-D", h.images, "--pid", procs["cowtree-B"], "-o", cores)
    gdb = subprocess.run(["/usr/bin/gdb", "-batch", "-nx", "-ex", f"x/s 0x{needle:x}", "-ex", f"x/s 0x{b_needle:x}",
                          "-ex", f"x/gx 0x{region + 4000 * 4096:x}", str(h.bins["cowtree"]),
                          str(cores / f"core.{procs['cowtree-B']}")], capture_output=True, text=True, timeout=120)
    assert re.search(rf"0x{needle:x}:\s+\"cryo-cow-needle-from-R", gdb.stdout), gdb.stdout + gdb.stderr
    assert re.search(rf"0x{b_needle:x}:\s+\"cryo-cow-needle-from-B", gdb.stdout), gdb.stdout + gdb.stderr
    assert not re.search(rf"0x{region + 4000 * 4096:x}:\s+0x0+$", gdb.stdout, re.M), (
        f"the core of cowtree-B reads zeros where the parent's pages are:\n{gdb.stdout}")

    pid = restore_and_compare(h, s, before)
    rss2, pss2 = memory_use(procs.values())
    assert pss2 < pss0 * 1.25 + 4096, (
        f"memory is not shared after restore: Pss {pss0} kB before the dump, {pss2} kB after "
        f"(Rss {rss0} / {rss2} kB)")
    assert rss2 > 4 * size // 1024 * 0.95, f"the restored tree maps less memory: Rss {rss2} kB, was {rss0} kB"
    h.finish(pid)


@pytest.mark.parametrize("victim,page", [("cowtree-A1", 5000), ("cowtree-B", 2)])
def test_cowtree_notices_changed_memory(hs, victim, page):
    """Not vacuous (no cryo): a page of a child changed from outside (/proc/PID/mem) — one it
    shares with its parent, one of its own — is a FAIL naming the process and the page."""
    s = hs.start_subject("cowtree")
    procs, region = cow_tree(s.pid)
    fd = os.open(f"/proc/{procs[victim]}/mem", os.O_RDWR)
    try:
        os.pwrite(fd, b"\xff" * 8, region + page * 4096 + 64)
    finally:
        os.close(fd)
    text = hs.finish(s.pid, expect="FAIL")
    assert victim in text and f"page {page} " in text, text


def test_cow_page_outside_an_inherited_mapping_fails_cleanly(h):
    """A hand-edited image: a child's mapping no longer the same as its parent's (another
    protection) while its pagemap still marks the pages there as the parent's. The restore
    refuses before it creates anything, naming the process and the address."""
    s = start_tree(h, "cowtree")
    procs, region = cow_tree(s.pid)
    dump_tree(h, s.pid)
    child = procs["cowtree-A"]
    mm_path = h.images / f"mm-{child}.img"
    original = mm_path.read_bytes()
    mm = crit_decode(mm_path)
    vma = next(v for v in mm["entries"][0]["vmas"] if int(str(v["start"]), 0) == region)
    vma["prot"] = 1  # PROT_READ
    r = subprocess.run([CRIT, "encode", "-o", str(mm_path)], input=json.dumps(mm), text=True,
                       capture_output=True, env=crit_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    cp = h.restore(check=False)
    assert_clean_failure(cp, f"process {child}", f"0x{region:x}", "parent")
    assert not pid_exists(s.pid), "a process of the failed restore is left"
    mm_path.write_bytes(original)
    pid = h.restore()
    h.finish(pid)


# Short ids: the usockets work dir must leave room for its socket names in 108 bytes.
@pytest.mark.parametrize("name,image", [("fifos", "fifo-data.img"), ("memfds", "memfd.img"),
                                        ("sysvshm", "ipcns-shm-1.img"), ("usockets", "sk-queues.img")],
                         ids=["fifos", "memfds", "sysvshm", "usockets"])
def test_short_image_fails_cleanly(h, name, image):
    """An image of a shared object cut short: the restore stops with an error naming the file,
    leaves no process behind, and works once the image is whole again."""
    s = start_tree(h, name)
    dump_tree(h, s.pid)
    path = h.images / image
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])
    cp = h.restore(check=False)
    assert_clean_failure(cp, image)
    assert not pid_exists(s.pid), "a process of the failed restore is left"
    path.write_bytes(whole)
    pid = h.restore()
    h.finish(pid)


def test_fifo_removed_before_restore_fails_cleanly(h):
    """A FIFO that is gone at restore time: a clear error naming it, nothing left behind."""
    s = start_tree(h, "fifos")
    dump_tree(h, s.pid)
    (h.work / "left").unlink()
    cp = h.restore(check=False)
    assert cp.returncode != 0 and "left" in cp.stderr and "Error:" in cp.stderr, cp.stderr
    assert not pid_exists(s.pid)


def test_pipes_notice_a_forged_ack(hs):
    """Not vacuous (no cryo): a record written into the ack pipe from outside (through
    /proc/PID/fd) breaks the sequence and the subject says so."""
    s = hs.start_subject("pipes")
    time.sleep(0.2)
    child = next(p for p in children_of(s.pid) if proc_stat(p)["comm"] == "pipes-A")
    # The ack pipe: A's non-blocking write end (G made it so) of a pipe R holds too.
    r_reads = {os.readlink(f"/proc/{s.pid}/fd/{fd}"): fd for fd in os.listdir(f"/proc/{s.pid}/fd")}
    target = None
    for fd in os.listdir(f"/proc/{child}/fd"):
        link = os.readlink(f"/proc/{child}/fd/{fd}")
        with open(f"/proc/{child}/fdinfo/{fd}") as f:
            flags = int(next(l for l in f if l.startswith("flags:")).split()[1], 8)
        if (link in r_reads and link.startswith("pipe:") and flags & os.O_NONBLOCK and
                flags & os.O_ACCMODE == os.O_WRONLY):
            target = f"/proc/{child}/fd/{fd}"
    assert target, "no ack pipe found"
    with open(target, "wb", buffering=0) as f:
        f.write((2).to_bytes(4, "little") + (0).to_bytes(4, "little") + (10**12).to_bytes(8, "little"))
    text = hs.finish(s.pid, expect="FAIL")
    assert text.startswith("FAIL: ") and "acked" in text, text


def test_shmem_partial_mapping(h):
    """A child unmapped the first and last page of the shared region: its mapping starts 4 KiB
    into the shared object, and is still the same object as its relatives'."""
    s = start_tree(h, "shmem", "--partial")
    before = TreeState(s.pid)
    offsets = {m[3] for ms in before.maps[0].values() for m in ms}
    assert 4096 in offsets, f"no mapping at offset 4096: {before.maps[0]}"
    dump_tree(h, s.pid)
    pid = restore_and_compare(h, s, before)
    h.finish(pid)


def test_shmem_same_object_in_maps(h):
    """/proc/PID/maps after restore: region 1 is one object (same device and inode) in all four
    processes, region 2 in A and G only, regions 3 and 4 in R only — four different objects."""
    s = start_tree(h, "shmem")
    dump_tree(h, s.pid)
    pid = h.restore(expect_pid=s.pid)
    objects = {}
    for p in tree_pids(pid):
        comm = proc_stat(p)["comm"]
        for start, end, perms, off, dev, ino, name in maps_lines(p):
            if perms[3] == "s" and (end - start) in (256 * 4096, 16 * 4096, 32 * 4096, 12 * 4096):
                objects.setdefault((end - start) // 4096, {})[comm] = (dev, ino, start, name)
    names = {k: sorted(v) for k, v in objects.items()}
    assert names == {256: ["shmem-A", "shmem-B", "shmem-G", "shmem-R"],
                     16: ["shmem-A", "shmem-G"], 32: ["shmem-R"], 12: ["shmem-R"]}, names
    for pages, procs in objects.items():
        inodes = {v[:3] for v in procs.values()}
        assert len(inodes) == 1, f"the {pages}-page region is not one object at one address: {procs}"
    all_inodes = [next(iter(procs.values()))[:2] for procs in objects.values()]
    assert len(set(all_inodes)) == 4, f"regions share an object: {objects}"
    h.finish(pid)


# ---------------------------------------------------------------------------------------------
# Programs nobody here wrote


def numbers_in(path):
    text = Path(path).read_text() if Path(path).exists() else ""
    return text, [int(x) for x in text.split("\n") if x]


def assert_consecutive(path, at_least):
    text, nums = numbers_in(path)
    assert text.endswith("\n"), f"{path} ends in a partial line: {text[-20:]!r}"
    bad = [(i, n) for i, n in enumerate(nums) if n != i + 1]
    assert not bad, (f"{path}: numbers are not 1..{len(nums)} consecutive: first wrong line "
                     f"{bad[0][0] + 1} is {bad[0][1]} (lines around: "
                     f"{nums[max(0, bad[0][0] - 3):bad[0][0] + 3]})")
    assert len(nums) >= at_least, f"{path}: only {len(nums)} numbers, expected >= {at_least}"
    return len(nums)


COUNTER_SCRIPT = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done | cat >> {out}"


def counter_parts(root):
    """(the loop's subshell, cat) of the dash pipeline."""
    kids = {proc_stat(p)["comm"]: p for p in children_of(root)}
    assert set(kids) == {"dash", "cat"}, f"dash {root} has children {kids}"
    return kids["dash"], kids["cat"]


def stop_counter(h, root):
    """Kill the loop; cat drains the pipe and exits 0, and so does dash."""
    loop, _cat = counter_parts(root)
    os.kill(loop, signal.SIGKILL)
    status = h.wait_gone(root, timeout=10)
    assert status == 0, f"dash exited with {status} after its loop was killed (cat's status)"


def test_dash_counter_pipeline(h):
    """dash | cat >> OUT, dumped while counting and restored: OUT goes on growing with the
    next numbers — nothing lost or repeated, including what sat in the pipe."""
    out = h.work / "count.out"
    p = h.start_program(["dash", "-c", COUNTER_SCRIPT.format(out=out)])
    assert poll(lambda: len(numbers_in(out)[1]) >= 10, 10), "the counter does not count"
    before = TreeState(p.pid)
    keep = {pid for pid, i in before.info.items() if i[0] != "sleep"}
    dump_tree(h, p.pid)
    at_dump = assert_consecutive(out, 10)
    time.sleep(0.3)
    assert len(numbers_in(out)[1]) == at_dump, "OUT grew while the pipeline was dumped (dead)"
    pid = h.restore(expect_pid=p.pid)
    after = tree_info(pid)
    assert_same_tree({k: v for k, v in before.info.items() if k in keep},
                     {k: v for k, v in after.items() if k in keep})
    assert poll(lambda: len(numbers_in(out)[1]) >= at_dump + 20, 10), (
        f"OUT stopped at {len(numbers_in(out)[1])} lines after restore (had {at_dump} at the "
        f"dump)\nrestore.log:\n{log_excerpt(h.images)}")
    stop_counter(h, pid)
    n = assert_consecutive(out, at_dump + 20)
    assert n >= at_dump + 20


def test_dash_counter_pipeline_restored_twice(h):
    """The same images restored twice (OUT put back as it was at the dump in between): both
    times the count goes on from the dump, without a gap."""
    out = h.work / "count.out"
    p = h.start_program(["dash", "-c", COUNTER_SCRIPT.format(out=out)])
    assert poll(lambda: len(numbers_in(out)[1]) >= 10, 10), "the counter does not count"
    sid = p.pid
    dump_tree(h, p.pid)
    at_dump = assert_consecutive(out, 10)
    files = h.snapshot()
    for attempt in (1, 2):
        pid = h.restore(expect_pid=p.pid)
        assert poll(lambda: len(numbers_in(out)[1]) >= at_dump + 10, 10), (
            f"restore {attempt}: OUT stopped at {len(numbers_in(out)[1])} lines (had {at_dump})")
        stop_counter(h, pid)
        assert_consecutive(out, at_dump + 10)
        wait_tree_gone([pid], sid)
        h.restore_snapshot(files)


def test_dash_counter_pipeline_leave_running(h):
    out = h.work / "count.out"
    p = h.start_program(["dash", "-c", COUNTER_SCRIPT.format(out=out)])
    assert poll(lambda: len(numbers_in(out)[1]) >= 10, 10), "the counter does not count"
    dump_tree(h, p.pid, "--leave-running")
    n = len(numbers_in(out)[1])
    assert poll(lambda: len(numbers_in(out)[1]) >= n + 10, 10), "the counter stopped after -R"
    for pid in tree_pids(p.pid):
        if proc_stat(pid)["state"] != "Z":
            assert_running_free(pid)
    stop_counter(h, p.pid)
    assert_consecutive(out, n + 10)


def sleeper_state(root):
    kids = sorted(children_of(root))
    out = {}
    for k in kids:
        st = proc_stat(k)
        with open(f"/proc/{k}/cmdline", "rb") as f:
            cmd = f.read()
        out[k] = (st["comm"], st["state"][0], st["ppid"], st["pgid"], st["sid"], cmd)
    return out


def test_dash_twenty_sleepers(h):
    """dash with 20 `sleep 1000 &` in `wait`: after restore dash has the same 20 children (in
    /proc/PID/task/PID/children), each still sleeping; when they are killed, dash's `wait`
    returns and it exits 0 — it is really their parent."""
    p = h.start_program(["dash", "-c", "for i in $(seq 20); do sleep 1000 & done; wait"])
    def all_asleep():
        kids = children_of(p.pid)
        try:
            return len(kids) == 20 and all(
                comm_of(k) == "sleep" and proc_stat(k)["state"] == "S" for k in kids)
        except FileNotFoundError:
            return False
    assert poll(all_asleep, 10), f"dash has children {sorted(children_of(p.pid))}"
    before = sleeper_state(p.pid)
    info = tree_info(p.pid)
    dump_tree(h, p.pid)
    pid = h.restore(expect_pid=p.pid)
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        listed = sorted(int(x) for x in f.read().split())
    assert listed == sorted(before), (
        f"/proc/{pid}/task/{pid}/children lists {listed}, expected {sorted(before)}\n"
        f"restore.log:\n{log_excerpt(h.images)}")
    assert_same_tree(info, tree_info(pid))
    time.sleep(1.0)  # the sleepers' restarted sleeps must not end early
    after = sleeper_state(pid)
    assert after == before, f"the sleepers changed:\nwas {before}\nnow {after}"
    assert all(v[1] == "S" for v in after.values()), after
    for k in before:
        with open(f"/proc/{k}/syscall") as f:
            nr = int(f.read().split()[0])
        assert nr in (35, 230), f"sleep {k} is in system call {nr}, not nanosleep/clock_nanosleep"
    for k in before:
        os.kill(k, signal.SIGTERM)
    status = h.wait_gone(pid, timeout=10)
    assert status == 0, f"dash exited with {status} once its children were killed"


# ---------------------------------------------------------------------------------------------
# What is not supported is refused, and the tree keeps running


@pytest.mark.parametrize("kind", ["tcp", "fifo"])
def test_dump_refuses_unsupported_in_tree(h, kind):
    """A dash tree in which one process holds something Cryo cannot dump (a TCP socket in the
    socket subject, a FIFO deleted while open in dash itself): the dump exits non-zero with an `Error:` line
    naming it, and every process of the tree runs on, untraced and unharmed."""
    fifo = h.work / "fifo"
    os.mkfifo(fifo)
    sock_out, sock_pid = h.work / "socket.out", h.work / "socket.pid"
    sock = f"{h.bins['socket']} --out {sock_out} --pidfile {sock_pid} --kind tcp"
    script = {"tcp": f"{sock} & sleep 1000 & wait",
              "fifo": f"exec 3<>{fifo}; rm {fifo}; sleep 1000 & wait"}[kind]
    p = h.start_program(["dash", "-c", script])
    if kind == "tcp":
        assert poll(lambda: sock_pid.exists() and sock_pid.read_text().strip(), 10)
        holder = int(sock_pid.read_text())
        assert holder in children_of(p.pid)
    else:
        holder = p.pid
        assert poll(lambda: os.path.exists(f"/proc/{p.pid}/fd/3") and not fifo.exists(), 10)
    want = ["sleep", "socket"] if kind == "tcp" else ["sleep"]
    assert poll(lambda: sorted(map(str, map(comm_of, children_of(p.pid)))) == want, 10), (
        f"dash's children did not become {want}")
    info = tree_info(p.pid)
    cp = h.dump(p.pid, check=False)
    assert cp.returncode != 0, f"the dump succeeded:\n{cp.stderr}"
    assert 0 < cp.returncode < 128, f"cryo crashed ({cp.returncode}):\n{cp.stderr}"
    errors = [l for l in cp.stderr.splitlines() if l.startswith("Error: ")]
    assert errors, f"no 'Error:' line:\n{cp.stderr}"
    word = {"tcp": "socket", "fifo": "fifo"}[kind]
    assert word in cp.stderr.lower() and str(holder) in cp.stderr, (
        f"the error names neither {word!r} nor pid {holder}:\n{cp.stderr}")
    assert_same_tree(info, tree_info(p.pid), what="after the refused dump")
    assert_tree_running(p.pid, info)
    if kind == "tcp":
        os.kill(holder, signal.SIGTERM)
        assert poll(lambda: sock_out.exists() and sock_out.read_text(), 20)
        assert sock_out.read_text() == "PASS\n", sock_out.read_text()
    for k in children_of(p.pid):
        if comm_of(k) == "sleep":
            os.kill(k, signal.SIGTERM)
    assert h.wait_gone(p.pid, timeout=20) == 0
