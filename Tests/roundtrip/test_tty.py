"""Terminals: a shell job (--shell-job, -j) moved from one terminal to another, and the
pseudo-terminals a subject opens itself (the pty subject; its plain round trips are in
test_roundtrip.py and test_images.py, with the other single-process subjects).

The shell job runs like one a user starts from a shell: a pty made here, whose slave is the
controlling terminal of a session led by dash, which runs the ttyjob subject (dash without
job control: the subject is in dash's group, the foreground one). The restore runs cryo as
the leader of a session on a second, fresh pty — as a user would run `cryo restore -j` on
another terminal — and not detached, as cryo then stays the job's parent.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import subprocess
import termios
import time
from pathlib import Path

import pytest

from conftest import CRYO_TIMEOUT, READY_TIMEOUT, SUBJECT_ARGS, Subject, _Tracked, poll, proc_status
from test_images import decode_all


class Terminal:
    """A pty owned by the test: it keeps the master; programs started on it get the slave as
    stdin, stdout, stderr and controlling terminal, in a new session they lead."""

    def __init__(self):
        self.master, self._slave = os.openpty()
        self.name = os.ttyname(self._slave)
        self.rdev = os.fstat(self._slave).st_rdev
        self.seen = b""

    def start(self, argv: list[str], cwd: Path) -> subprocess.Popen:
        def lead_session():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        p = subprocess.Popen([str(a) for a in argv], stdin=self._slave, stdout=self._slave,
                             stderr=self._slave, preexec_fn=lead_session, close_fds=True, cwd=cwd)
        os.close(self._slave)  # from now on only the session holds the slave
        self._slave = -1
        return p

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, text: str, timeout: float = 10.0) -> None:
        """Waits until the terminal has shown text (since the last expect)."""
        want = text.encode()
        deadline = time.monotonic() + timeout
        while want not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{self.name} never showed {text!r}; it showed {self.seen[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: no slave is open (yet or any more)
                    chunk = b""
                    time.sleep(0.05)
                self.seen += chunk
        self.seen = self.seen[self.seen.index(want) + len(want):]

    def close(self) -> None:
        for fd in (self.master, self._slave):
            if fd >= 0:
                os.close(fd)


@pytest.fixture
def terminals():
    made: list[Terminal] = []

    def make() -> Terminal:
        t = Terminal()
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def start_on_terminal(h, term: Terminal, name: str, in_shell: bool = True) -> Subject:
    """Subject name on term: as a job of a dash session (in_shell; the Popen is dash's, which
    exits with the subject's status) or as the session's leader itself."""
    h._n += 1
    tag = f"{name}-{h._n}"
    out, pidfile, log = h.work / f"{tag}.out", h.work / f"{tag}.pid", h.work / f"{tag}.log"
    argv = [str(h.bins[name]), "--out", str(out), "--pidfile", str(pidfile),
            *(a.format(work=h.work) for a in SUBJECT_ARGS.get(name, []))]
    p = term.start(["dash", "-c", " ".join(argv) + "; exit $?"] if in_shell else argv, cwd=h.work)
    h.sessions.add(p.pid)
    if not poll(lambda: pidfile.exists() or p.poll() is not None, READY_TIMEOUT) or not pidfile.exists():
        pytest.fail(f"{name} not ready (exit {p.poll()}); terminal showed {term.seen!r}")
    pid = int(pidfile.read_text())
    s = Subject(name, pid, p, out, pidfile, log, [], h.work)
    h.subjects.append(s)
    h.tracked[pid] = _Tracked(pid, popen=p)
    return s


def start_job(h, term: Terminal) -> Subject:
    return start_on_terminal(h, term, "ttyjob")


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat fields after the command name: [0] is state (field 3)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def restore_on(h, term: Terminal, *extra: str) -> tuple[int, subprocess.Popen]:
    """cryo restore -j (not detached) as the leader of a session on term."""
    h._n += 1
    pidfile = h.tmp / f"restored-{h._n}.pid"
    p = term.start([h.cryo_bin, "restore", "-D", h.images, "-o", "restore.log", "-v4",
                    "--pidfile", pidfile, *extra], cwd=h.work)
    h.cryo_procs.append(p)
    h.sessions.add(p.pid)
    if not poll(lambda: (pidfile.exists() and pidfile.read_text().strip()) or p.poll() is not None, CRYO_TIMEOUT) \
            or not pidfile.exists():
        pytest.fail(f"cryo restore did not write its pidfile (exit {p.poll()})\nterminal: {term.seen!r}\n"
                    f"log: {(h.images / 'restore.log').read_text()[-3000:]}")
    pid = int(pidfile.read_text())
    h.adopt(pid, via=p)
    return pid, p


def test_ttyjob_alone(h, terminals):
    """The subject itself, no checkpoint: it answers on its terminal and passes."""
    term = terminals()
    s = start_job(h, term)
    term.type("hello\n")
    term.expect("echo: hello")
    h.finish(s.pid)


def test_shell_job_refused_without_j(h, terminals):
    """Without -j the dump refuses a job of an outside session and names --shell-job; the job
    keeps running on its terminal."""
    term = terminals()
    s = start_job(h, term)
    cp = h.dump(s, check=False)
    assert cp.returncode != 0
    log = (h.images / "dump.log").read_text()
    assert "--shell-job" in cp.stderr + log, cp.stderr + log[-2000:]
    h.check_running(s.pid)
    term.type("still here\n")
    term.expect("echo: still here")
    h.finish(s.pid)


def test_terminal_of_session_leader_refused_without_j(h, terminals):
    """A session leader whose stdio is a terminal it does not own (the master is outside the
    dump): its session is in the tree, but its terminal is not, so without -j the dump refuses
    it with the message naming --shell-job, and leaves it running."""
    term = terminals()
    s = start_on_terminal(h, term, "counter", in_shell=False)
    cp = h.dump(s, check=False)
    assert cp.returncode != 0
    text = cp.stderr + (h.images / "dump.log").read_text()
    assert re.search(r"fd 0 of process \d+ is the terminal /dev/pts/\d+, whose master is outside the dump", text), text[-2000:]
    assert "--shell-job" in text
    h.check_running(s.pid)
    h.finish(s.pid)


def test_shell_job_roundtrip(h, terminals):
    """dump -j on one terminal; restore -j on another: fds 0-2 are the new terminal, the job
    is in cryo's session and group, which is the terminal's foreground group, and it still
    answers what is typed."""
    old = terminals()
    s = start_job(h, old)
    old.type("before\n")
    old.expect("echo: before")
    h.dump(s, "-j")
    dash = h.tracked[s.pid].popen
    assert poll(lambda: dash.poll() is not None, 10), "dash did not end with its job"

    images = decode_all(h.images)
    infos = images["tty-info.img"]["entries"]
    assert [i["type"] for i in infos] == ["PTY"] and infos[0]["id"] % 2 == 0, infos  # a slave, no master
    assert infos[0]["pty"]["index"] == int(old.name.rsplit("/", 1)[1])
    ttys = [f for f in images["files.img"]["entries"] if f["type"] == "TTY"]
    assert ttys and all(f["tty"]["tty_info_id"] == infos[0]["id"] for f in ttys)

    # Without -j the restore refuses, naming the option, and leaves nothing behind.
    cp = h.cryo("restore", "-D", h.images, "-o", "restore-no-j.log", "-v4", "-d", check=False)
    assert 0 < cp.returncode < 128
    assert "--shell-job" in cp.stderr + (h.images / "restore-no-j.log").read_text()
    assert not os.path.exists(f"/proc/{s.pid}")
    # With -j but no terminal on stdin: refused too.
    cp = h.cryo("restore", "-j", "-D", h.images, "-o", "restore-no-tty.log", "-v4", "-d", check=False)
    assert 0 < cp.returncode < 128
    assert "not a terminal" in cp.stderr + (h.images / "restore-no-tty.log").read_text()
    assert not os.path.exists(f"/proc/{s.pid}")

    new = terminals()
    pid, cryo = restore_on(h, new, "-j")
    assert pid == s.pid
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == new.name
    f = stat_fields(pid)
    pgrp, session, tty_nr, tpgid = int(f[2]), int(f[3]), int(f[4]), int(f[5])
    assert session == cryo.pid, f"session {session}, cryo {cryo.pid}"
    assert pgrp == cryo.pid, f"group {pgrp}, cryo's {cryo.pid}"
    assert tty_nr == os.major(new.rdev) << 8 | os.minor(new.rdev), "its controlling terminal is not the new one"
    assert tpgid == pgrp, f"foreground group {tpgid}, the job's {pgrp}"
    assert proc_status(pid)["State"][0] in "SR"
    new.type("after\n")
    new.expect("echo: after")
    h.finish(pid)
    assert cryo.wait(timeout=10) == 0


TIOCGPTN = 0x80045430  # not in Python's termios module


def test_shell_job_cat(h, terminals):
    """A real program as the job: cat under dash, dumped with -j, restored with -j on another
    terminal, copies what is typed there, and ends on ^D with status 0 (cryo's status)."""
    old = terminals()
    dash = old.start(["dash", "-c", "cat; exit $?"], cwd=h.work)
    h.sessions.add(dash.pid)
    children = Path(f"/proc/{dash.pid}/task/{dash.pid}/children")
    cat = poll(lambda: int(children.read_text().split()[0]) if children.read_text().split() else 0, 10)
    assert cat, "dash started no cat"
    h.tracked[cat] = _Tracked(cat, popen=dash)
    old.type("one\n")
    old.expect("one\r\none\r\n")  # the terminal's echo, then cat's copy
    h.dump(cat, "-j")
    decode_all(h.images)

    new = terminals()
    pid, cryo = restore_on(h, new, "-j")
    assert pid == cat
    assert [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)] == [new.name] * 3
    new.type("two\n")
    new.expect("two\r\ntwo\r\n")
    new.type("\x04")  # end of file at the start of a line
    assert cryo.wait(timeout=10) == 0


def hold_pty_index(index: int) -> list[int]:
    """Opens /dev/ptmx until the kernel hands out index; returns the fd holding it (the lower
    ones it handed out first are closed again)."""
    fds = []
    while True:
        fd = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
        n = int.from_bytes(fcntl.ioctl(fd, TIOCGPTN, b"\0\0\0\0"), "little")
        if n == index:
            for other in fds:
                os.close(other)
            return [fd]
        fds.append(fd)
        if n > index:
            for other in fds:
                os.close(other)
            pytest.fail(f"/dev/pts/{index} is taken by someone else")


def test_pty_index_taken(h):
    """The restore needs the dumped pty index: if it is taken, it fails naming /dev/pts/N and
    leaves nothing behind; once it is free again the restore works."""
    s = h.start_subject("pty")
    index = int(os.readlink(f"/proc/{s.pid}/fd/4").rsplit("/", 1)[1])
    h.dump(s)
    holder = hold_pty_index(index)
    try:
        cp = h.restore(check=False)
        assert 0 < cp.returncode < 128
        assert f"/dev/pts/{index}" in cp.stderr + (h.images / "restore.log").read_text()
        assert not os.path.exists(f"/proc/{s.pid}")
    finally:
        for fd in holder:
            os.close(fd)
    pid = h.restore(expect_pid=s.pid)
    h.finish(pid)


def test_pty_data_leave_running(h):
    """The queues are read and put back at dump: with --leave-running the original still
    reads exactly its unread bytes, and the restored copy too."""
    s = h.start_subject("pty")
    h.dump(s, "-R")
    h.finish(s.pid)
    data = decode_all(h.images)["tty-data.img"]["entries"]
    assert sorted(e["tty_id"] % 2 for e in data) == [0, 1], data  # both queues had bytes
    pid = h.restore(expect_pid=s.pid)
    h.finish(pid)


def test_pty_notices_lost_queues(h):
    """Negative control: without tty-data.img the restored pty subject finds its queues empty
    and fails, so its PASS after a real round trip means the bytes came back."""
    s = h.start_subject("pty")
    h.dump(s)
    (h.images / "tty-data.img").unlink()
    pid = h.restore(expect_pid=s.pid)
    text = h.finish(pid, expect="FAIL")
    assert "queued for the slave" in text and "queued for the master" in text, text


def test_session_leader_on_terminal_with_j(h, terminals):
    """With -j, a session leader on a foreign terminal is dumped; restored with -j it leads its
    own session again (its sid is its pid, in the tree) and its fds on the old terminal are
    the new one."""
    old = terminals()
    s = start_on_terminal(h, old, "counter", in_shell=False)
    h.dump(s, "-j")
    new = terminals()
    pid, cryo = restore_on(h, new, "-j")
    assert pid == s.pid
    assert [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)] == [new.name] * 3
    f = stat_fields(pid)
    assert int(f[2]) == pid and int(f[3]) == pid, f"group {f[2]}, session {f[3]}"
    h.finish(pid)
    assert cryo.wait(timeout=10) == 0
