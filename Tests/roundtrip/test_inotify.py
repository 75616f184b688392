"""inotify across dump and restore: the inotify subject checks from inside that its watches keep
their wd numbers, masks and inodes and report events; these tests add an event made from
outside after restore, what /proc and files.img show, the refusals, and the controls."""

import os
import re

from test_errors import assert_clean_failure, assert_nothing_left, assert_unharmed, live_children
from test_images import crit_decode


def watches(pid):
    """{fd: sorted (wd, ino, sdev, mask) of its inotify watches} from /proc/PID/fdinfo."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
            continue
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            out[int(fd)] = sorted(re.findall(r"inotify wd:(\w+) ino:(\w+) sdev:(\w+) mask:(\w+)", f.read()))
    return out


def test_inotify_event_after_restore_same_wd(h):
    """After restore the watches read the same in fdinfo (wd, inode, device, mask), files.img
    names each watched path, and a file created from outside after restore is reported to the
    subject on the directory's original wd (the subject checks that at SIGTERM)."""
    s = h.start_subject("inotify", "--expect-outside", "from-outside")
    before = watches(s.pid)
    assert sorted(len(w) for w in before.values()) == [1, 2], before
    h.dump(s)
    files = crit_decode(h.images / "files.img")["entries"]
    paths = sorted(w["f_handle"]["path"] for f in files if f["type"] == "INOTIFY" for w in f["ify"]["wd"])
    assert paths == sorted(str(s.work / p) for p in ("b", "watched", "watched/a")), paths
    pid = h.restore(expect_pid=s.pid)
    assert watches(pid) == before
    (s.work / "watched" / "from-outside").touch()
    h.finish(pid)


def test_inotify_notices_a_missing_event(hs):
    """Negative control, no checkpoint: nobody creates the file --expect-outside names."""
    s = hs.start_subject("inotify", "--expect-outside", "never-made")
    text = hs.finish(s.pid, expect="FAIL")
    assert "never-made" in text, text


def test_inotify_unfindable_watch_refused(h):
    """A watch whose file handle cannot be opened back (a procfs file) is refused, naming the
    fd; the target keeps running and passes."""
    s = h.start_subject("inotify", "--watch-extra", "/proc/self/status")
    fd = [fd for fd, w in watches(s.pid).items() if len(w) == 3]
    assert len(fd) == 1
    cp = h.dump(s, check=False)
    assert_clean_failure(cp, f"fd {fd[0]} of process {s.pid}", "inotify")
    assert_unharmed(h, s)


def test_fanotify_refused(h):
    s = h.start_subject("inotify", "--fanotify", "1")
    cp = h.dump(s, check=False)
    assert_clean_failure(cp, "fanotify")
    assert_unharmed(h, s)


def test_inotify_restore_refuses_a_missing_watched_file(h):
    s = h.start_subject("inotify")
    h.dump(s)
    (s.work / "b").rename(s.work / "b.moved")
    before = live_children()
    cp = h.restore(check=False)
    assert_clean_failure(cp, s.work / "b", "inotify")
    assert_nothing_left(h, s, before)
    (s.work / "b.moved").rename(s.work / "b")
    pid = h.restore(expect_pid=s.pid)
    h.finish(pid)


def test_inotify_high_wds(h):
    """Watches numbered past 20000 (the subject used up 20000 wds first) get their numbers back:
    Cryo skips the wds below them on a throwaway inode, and none of the IN_IGNORED events that
    leaves (more than the queue holds) reaches the subject."""
    s = h.start_subject("inotify", "--skip-wds", "20000")
    before = watches(s.pid)
    assert min(int(w[0], 16) for ws in before.values() for w in ws if int(w[0], 16) > 1) > 20000, before
    h.dump(s)
    pid = h.restore(expect_pid=s.pid)
    assert watches(pid) == before
    h.finish(pid)


def test_inotify_on_tmpfs(h):
    """Watches on a tmpfs mount: its file handles open back on the mount too."""
    mnt = h.work / "tmpfs"
    mnt.mkdir()
    h.mount_tmpfs(mnt, "size=1m")
    s = h.start_subject("inotify", "--dir", str(mnt), defaults=False)
    before = watches(s.pid)
    h.dump(s)
    pid = h.restore(expect_pid=s.pid)
    assert watches(pid) == before
    h.finish(pid)


def test_inotify_unread_events_are_lost_with_a_warning(h):
    """What Cryo (like CRIU) cannot keep: events queued but unread at dump time. The one-shot
    watch fires on a chmod before the dump (its IN_ATTRIB and IN_IGNORED wait unread, and the
    kernel has removed the watch); the dump warns that they are dropped, and the restored
    subject, which expected its one-shot watch and event, says FAIL."""
    s = h.start_subject("inotify")
    oneshot = [fd for fd, w in watches(s.pid).items() if len(w) == 1]
    assert len(oneshot) == 1
    os.chmod(s.work / "watched" / "a", 0o600)
    assert watches(s.pid)[oneshot[0]] == [], "the one-shot watch did not fire"
    cp = h.dump(s)
    assert re.search(rf"fd {oneshot[0]} of process {s.pid}: \d+ bytes of inotify events are queued unread", cp.stderr), cp.stderr
    pid = h.restore(expect_pid=s.pid)
    text = h.finish(pid, expect="FAIL")
    assert f"fdinfo of fd {oneshot[0]} has no watch" in text, text
