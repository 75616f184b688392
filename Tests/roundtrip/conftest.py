"""Round-trip test harness for Cryo.

Run as root from the repository root:

    python3 -m pytest Tests/roundtrip -v            # everything
    python3 -m pytest Tests/roundtrip/test_subjects_standalone.py   # subjects only, no cryo
    CRYO=/path/to/cryo python3 -m pytest Tests/roundtrip            # another binary (or criu)

Fixtures and helpers (see `Harness`):

    def test_x(h):                       # h: one Harness per test, own temp dirs
        s = h.start_subject("counter")   # compiled subject, default options, pidfile awaited
        h.dump(s)                        # cryo dump -t PID -D h.images -o dump.log -v4 (kill)
        pid = h.restore()                # cryo restore -D h.images -o restore.log -v4 -d
        assert pid == s.pid
        h.finish(pid)                    # SIGTERM, wait for exit, OUTFILE must be "PASS"

The pytest process makes itself a child subreaper, so processes restored with -d are
reparented to it and reaped with os.waitpid. Teardown kills (by pid) and reaps everything a
test started or restored, and unmounts what it mounted.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import stat
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBJECTS_SRC = REPO / "Tests" / "Subjects"
CRIT = "/usr/bin/crit"
CC_FLAGS = ["-O1", "-g", "-pthread"]

# Subjects and the options they get by default. "{work}" is the test's work directory
# (mode 0777: the nonroot subject writes there as uid 65534).
SUBJECT_ARGS = {
    "counter": ["--log", "{work}/counter.log"],
    "memory": ["--dir", "{work}"],
    "threads": ["--threads", "4"],
    "signals": ["--dir", "{work}"],
    "files": ["--dir", "{work}"],
    "nonroot": ["--uid", "65534", "--gid", "65534", "--group", "100"],
    "mixed": [],
    "socket": [],
    "tree": [],
    "pipes": [],
    "fdshare": ["--dir", "{work}"],
    "eventfds": [],
    "shmem": [],
    "fifos": ["--dir", "{work}"],
    "memfds": [],
    "usockets": ["--dir", "{work}"],
    "sysvshm": [],
    "posixtimers": [],
    "inotify": ["--dir", "{work}"],
    "pty": [],
    "ttyjob": [],
    "ptytree": [],
    "cowtree": [],
}
ROUNDTRIP_SUBJECTS = ["counter", "memory", "threads", "signals", "files", "nonroot", "mixed", "posixtimers", "inotify",
                      "pty"]
# Subjects that are process trees (Tests/Subjects/family.h); round-tripped by test_tree.py.
TREE_SUBJECTS = ["tree", "pipes", "fdshare", "eventfds", "shmem", "fifos", "memfds", "usockets", "sysvshm", "ptytree",
                 "cowtree", "inet"]
# Subjects that run on a terminal (a shell job's): started on a pty by test_tty.py.
TERMINAL_SUBJECTS = ["ttyjob"]

PR_SET_CHILD_SUBREAPER = 36
READY_TIMEOUT = 10.0
FINISH_TIMEOUT = 60.0
CRYO_TIMEOUT = 180.0


def _make_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_CHILD_SUBREAPER)")


def cryo_binary() -> Path:
    return Path(os.environ.get("CRYO", str(REPO / ".build" / "debug" / "cryo")))


# ---------------------------------------------------------------------------------------------
# /proc helpers


def proc_status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def ppid_of(pid: int) -> int | None:
    try:
        return int(proc_status(pid)["PPid"])
    except (OSError, KeyError, ValueError):
        return None


def task_ids(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def read_maps(pid: int) -> list[tuple[int, int, str, str]]:
    """(start, end, perms, name) for each line of /proc/PID/maps."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            s, e = (int(x, 16) for x in parts[0].split("-"))
            out.append((s, e, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


def our_children() -> set[int]:
    """Pids whose parent is this pytest process (zombies included)."""
    me = os.getpid()
    kids = set()
    for d in os.listdir("/proc"):
        if d.isdigit() and ppid_of(int(d)) == me:
            kids.add(int(d))
    return kids


def exe_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def pids_running(exe: Path) -> set[int]:
    """Pids of live (non-zombie) processes whose executable is exe."""
    target = str(exe)
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit() and exe_of(int(d)) == target:
            try:
                if proc_status(int(d)).get("State", "").startswith("Z"):
                    continue
            except OSError:
                continue
            out.add(int(d))
    return out


def session_of(pid: int) -> int | None:
    """The session id of pid (field 6 of /proc/PID/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def session_members(sid: int) -> set[int]:
    """Pids of every process (zombies included) in session sid."""
    return {int(d) for d in os.listdir("/proc") if d.isdigit() and session_of(int(d)) == sid}


def pid_exists(pid: int) -> bool:
    """True if pid is a live, non-zombie process."""
    try:
        return not proc_status(pid).get("State", "").startswith("Z")
    except OSError:
        return False


def assert_running_free(pid: int) -> None:
    """The process and all its threads run: not stopped, not traced, not a zombie."""
    try:
        tids = task_ids(pid)
    except FileNotFoundError:
        raise AssertionError(f"process {pid} no longer exists") from None
    for tid in tids:
        try:
            st = proc_status(pid, tid)
        except FileNotFoundError:
            raise AssertionError(f"task {tid} of {pid} vanished") from None
        state = st.get("State", "")
        assert state[:1] not in ("T", "t", "Z", "X"), f"task {tid} of {pid} is in state {state!r}"
        assert st.get("TracerPid") == "0", f"task {tid} of {pid} is traced by {st.get('TracerPid')}"


def poll(predicate, timeout: float, interval: float = 0.02):
    """Call predicate until it returns a truthy value or timeout passes; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def tail(path: Path, lines: int = 80) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(data[-lines:])


# ---------------------------------------------------------------------------------------------
# Session fixtures


@pytest.fixture(scope="session", autouse=True)
def subreaper():
    _make_subreaper()
    yield


@pytest.fixture(scope="session")
def subject_bins(tmp_path_factory) -> dict[str, Path]:
    """Compile every Tests/Subjects/*.c once per session."""
    outdir = tmp_path_factory.mktemp("subjects")
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler (cc) on PATH")
    bins = {}
    errors = []
    for src in sorted(SUBJECTS_SRC.glob("*.c")):
        out = outdir / src.stem
        r = subprocess.run([cc, *CC_FLAGS, "-o", str(out), str(src)], capture_output=True, text=True)
        if r.returncode != 0:
            errors.append(f"{src.name}:\n{r.stderr}")
        bins[src.stem] = out
    if errors:
        pytest.fail("compiling subjects failed:\n" + "\n".join(errors))
    return bins


@pytest.fixture(scope="session")
def cryo_bin() -> Path:
    p = cryo_binary()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"cryo binary {p} does not exist or is not executable (build it, or set CRYO)")
    return p


# ---------------------------------------------------------------------------------------------
# Per-test harness


@dataclass
class Subject:
    name: str
    pid: int
    popen: subprocess.Popen
    out: Path  # OUTFILE
    pidfile: Path
    log: Path  # stdout+stderr
    args: list[str]
    work: Path

    def arg(self, option: str) -> str:
        return self.args[self.args.index(option) + 1]


@dataclass
class _Tracked:
    pid: int
    popen: subprocess.Popen | None = None  # our direct child via Popen
    via: subprocess.Popen | None = None  # its parent is this (non-detached) cryo restore
    reaped: bool = False
    status: int | None = None  # exit code (negative: signal)


class Harness:
    def __init__(self, tmp_path: Path, bins: dict[str, Path], cryo: Path | None, base: Path):
        self.tmp = tmp_path
        self.bins = bins
        self.cryo_bin = cryo
        self.base = base  # per-test dir outside pytest's tmp (kept when the test fails)
        self.work = base / "work"  # the subjects' files; mode 0777, reachable by any uid
        self.work.mkdir()
        os.chmod(self.work, 0o777)
        self.images = base / "images"
        self.images.mkdir()
        self.subjects: list[Subject] = []
        self.tracked: dict[int, _Tracked] = {}
        self.cryo_procs: list[subprocess.Popen] = []
        self.mounts: list[Path] = []
        self.sessions: set[int] = set()  # new sessions of started subjects/programs
        self._n = 0

    # -- subjects ------------------------------------------------------------------------------

    def start_subject(self, name: str, *args: str, defaults: bool = True) -> Subject:
        """Start a subject (options: its defaults from SUBJECT_ARGS, then args), wait for its
        pidfile (bounded), and return it."""
        if name not in self.bins:
            pytest.fail(f"no subject named {name!r} (have {sorted(self.bins)})")
        self._n += 1
        tag = f"{name}-{self._n}"
        out = self.work / f"{tag}.out"
        pidfile = self.work / f"{tag}.pid"
        log = self.work / f"{tag}.log"
        opts = [a.format(work=self.work) for a in (SUBJECT_ARGS.get(name, []) if defaults else [])]
        opts += [a.format(work=self.work) for a in args]
        argv = [str(self.bins[name]), "--out", str(out), "--pidfile", str(pidfile), *opts]
        with open(log, "wb") as logf, open(os.devnull, "rb") as devnull:
            p = subprocess.Popen(argv, stdin=devnull, stdout=logf, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True, cwd=self.work)
        self.tracked[p.pid] = _Tracked(p.pid, popen=p)
        self.sessions.add(p.pid)
        deadline = time.monotonic() + READY_TIMEOUT
        while not pidfile.exists():
            if p.poll() is not None:
                self.tracked[p.pid].reaped = True
                pytest.fail(f"subject {name} exited with {p.returncode} before it was ready\n"
                            f"argv: {argv}\nlog:\n{tail(log)}\nout: {tail(out)}")
            if time.monotonic() > deadline:
                pytest.fail(f"subject {name} (pid {p.pid}) not ready after {READY_TIMEOUT} s\n"
                            f"log:\n{tail(log)}")
            time.sleep(0.01)
        pid = int(pidfile.read_text())
        assert pid == p.pid, f"pidfile says {pid}, Popen says {p.pid}"
        s = Subject(name, pid, p, out, pidfile, log, opts, self.work)
        self.subjects.append(s)
        return s

    def start_program(self, argv: list[str], log: Path | None = None) -> subprocess.Popen:
        """Start any program (not a subject) like a subject: in a new session, in the work
        dir, stdin /dev/null, stdout+stderr to log (default /dev/null). It is tracked like a
        subject (dump/kill/wait_gone by pid); teardown kills its whole session."""
        out = open(log, "wb") if log is not None else open(os.devnull, "wb")
        with out, open(os.devnull, "rb") as devnull:
            p = subprocess.Popen([str(a) for a in argv], stdin=devnull, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, cwd=self.work)
        self.tracked[p.pid] = _Tracked(p.pid, popen=p)
        self.sessions.add(p.pid)
        return p

    def kill_session(self, sid: int) -> None:
        """SIGKILL every process in session sid (a subject's or program's whole tree, also
        what a restore brought back in it)."""
        for pid in session_members(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def finish(self, pid: int, expect: str = "PASS", subject: Subject | None = None) -> str:
        """SIGTERM pid, wait for it to exit (original child, reparented restored process, or
        child of a non-detached cryo restore), then check its OUTFILE is exactly PASS and its
        exit status 0. Returns the OUTFILE text."""
        subject = subject or self._subject_for(pid)
        t = self.tracked.get(pid)
        if t is None or t.reaped:
            t = self.adopt(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # already gone: _wait reports how it ended
        status = self._wait(t, FINISH_TIMEOUT)
        if status is None:
            info = self._describe(pid)
            self.kill(pid)
            pytest.fail(f"pid {pid} did not exit within {FINISH_TIMEOUT} s of SIGTERM: {info}")
        text = subject.out.read_text() if subject.out.exists() else None
        if expect == "PASS":
            assert text == "PASS\n", (
                f"{subject.name} (pid {pid}) wrote {text!r}, exit status {status}\n"
                f"log:\n{tail(subject.log)}")
            assert status == 0, f"{subject.name} wrote PASS but exited with {status}"
        return text or ""

    def _subject_for(self, pid: int) -> Subject:
        for s in reversed(self.subjects):
            if s.pid == pid:
                return s
        pytest.fail(f"pid {pid} is not one of this test's subjects")

    def adopt(self, pid: int, via: subprocess.Popen | None = None) -> _Tracked:
        """Track a process this test did not start with Popen (e.g. a restored one)."""
        t = _Tracked(pid, via=via)
        self.tracked[pid] = t
        return t

    def _wait(self, t: _Tracked, timeout: float) -> int | None:
        """Reap t; return its exit code (negative for a signal) or None on timeout."""
        if t.reaped:
            return t.status
        deadline = time.monotonic() + timeout
        if t.popen is not None:
            try:
                t.status = t.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
            t.reaped = True
            return t.status
        if t.via is not None:
            # Restored under a non-detached cryo: cryo exits with the process's status.
            try:
                t.status = t.via.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
            t.reaped = True
            return t.status
        while True:
            try:
                wpid, st = os.waitpid(t.pid, os.WNOHANG)
            except ChildProcessError:
                # Not our child (should not happen with the subreaper): wait for it to vanish.
                if not pid_exists(t.pid):
                    t.reaped = True
                    return t.status
                wpid = 0
            if wpid == t.pid:
                t.reaped = True
                t.status = os.waitstatus_to_exitcode(st)
                return t.status
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def kill(self, pid: int) -> None:
        """SIGKILL and reap a process this test started or restored."""
        t = self.tracked.get(pid)
        if t is None or t.reaped:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._wait(t, 10.0)

    def wait_gone(self, pid: int, timeout: float = 10.0) -> int:
        """After a dump that kills: reap the dumped process (the original child or a restored
        one) so its pid is free again."""
        t = self.tracked.get(pid)
        if t is None:
            pytest.fail(f"pid {pid} was not started or restored by this test")
        status = self._wait(t, timeout)
        if status is None:
            pytest.fail(f"pid {pid} still exists {timeout} s after the dump "
                        f"({self._describe(pid)})")
        return status

    def check_running(self, pid: int) -> None:
        """assert_running_free, and if the process died, say how (exit status, its log)."""
        if not pid_exists(pid):
            t = self.tracked.get(pid)
            status = self._wait(t, 1.0) if t is not None else None
            s = next((x for x in reversed(self.subjects) if x.pid == pid), None)
            pytest.fail(f"process {pid} died (exit status {status}); "
                        f"out: {s.out.read_text() if s and s.out.exists() else None!r}; "
                        f"log:\n{tail(s.log) if s else ''}")
        assert_running_free(pid)

    def _describe(self, pid: int) -> str:
        try:
            st = proc_status(pid)
            return f"State {st.get('State')}, TracerPid {st.get('TracerPid')}, PPid {st.get('PPid')}"
        except OSError:
            return "gone"

    # -- cryo ----------------------------------------------------------------------------------

    def cryo(self, *args: str, check: bool = True, timeout: float = CRYO_TIMEOUT,
             log: Path | None = None) -> subprocess.CompletedProcess:
        """Run cryo with args; output captured. With check, a failure fails the test with the
        tool's stderr and its log file (log, or -D/-o from args)."""
        if self.cryo_bin is None:
            pytest.fail("this test needs the cryo binary")
        argv = [str(self.cryo_bin), *map(str, args)]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, close_fds=True)
        self.cryo_procs.append(p)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            pytest.fail(f"{' '.join(argv)} did not finish in {timeout} s\nstderr:\n{err}\n"
                        f"log:\n{tail(self._log_path(args, log))}")
        cp = subprocess.CompletedProcess(argv, p.returncode, out, err)
        if check and cp.returncode != 0:
            pytest.fail(f"{' '.join(argv)} exited with {cp.returncode}\nstderr:\n{err}\n"
                        f"stdout:\n{out}\nlog {self._log_path(args, log)}:\n"
                        f"{tail(self._log_path(args, log))}")
        return cp

    @staticmethod
    def _log_path(args, log: Path | None) -> Path:
        if log is not None:
            return log
        args = [str(a) for a in args]
        d = o = None
        for i, a in enumerate(args[:-1]):
            if a in ("-D", "--images-dir"):
                d = args[i + 1]
            if a in ("-o", "--log-file"):
                o = args[i + 1]
        if o is None:
            return Path("/nonexistent")
        return Path(o) if os.path.isabs(o) or d is None else Path(d) / o

    def dump(self, s: Subject | int, *extra: str, images: Path | None = None,
             check: bool = True, log: str = "dump.log") -> subprocess.CompletedProcess:
        """cryo dump -t PID -D images -o dump.log -v4 [extra] of a subject (or a pid this test
        restored). Without --leave-running / --leave-stopped (-R/-s) the dumped process is
        reaped afterwards so its pid is free for a restore."""
        pid = s if isinstance(s, int) else s.pid
        images = images or self.images
        cp = self.cryo("dump", "-t", str(pid), "-D", str(images), "-o", log, "-v4", *extra,
                       check=check)
        leave = any(x in ("-R", "--leave-running", "-s", "--leave-stopped") for x in extra)
        if cp.returncode == 0 and not leave:
            self.wait_gone(pid)
        return cp

    def restore(self, *extra: str, images: Path | None = None, detached: bool = True,
                check: bool = True, log: str = "restore.log", expect_pid: int | None = None):
        """cryo restore -D images -o restore.log -v4 [-d] --pidfile F [extra].

        Detached (default): returns the restored pid (read from --pidfile), now a child of
        this process (subreaper). Not detached: returns (pid, cryo Popen) once the pidfile
        appears; finish(pid) then waits for cryo, which exits with the process's status.
        With check=False returns the CompletedProcess (detached) instead."""
        images = images or self.images
        self._n += 1
        pidfile = self.tmp / f"restored-{self._n}.pid"
        argv = ["restore", "-D", str(images), "-o", log, "-v4", "--pidfile", str(pidfile), *extra]
        if not detached:
            if self.cryo_bin is None:
                pytest.fail("this test needs the cryo binary")
            full = [str(self.cryo_bin), *argv]
            errf = open(self.tmp / f"restore-{self._n}.stderr", "w+")
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                 close_fds=True)
            self.cryo_procs.append(p)
            ok = poll(lambda: pidfile.exists() and pidfile.read_text().strip() or p.poll() is not None,
                      CRYO_TIMEOUT)
            if not pidfile.exists() or not pidfile.read_text().strip():
                errf.seek(0)
                pytest.fail(f"{' '.join(full)} did not write its pidfile (exit {p.poll()}, {ok})\n"
                            f"output:\n{errf.read()}\nlog:\n{tail(images / log)}")
            pid = int(pidfile.read_text())
            self.adopt(pid, via=p)
            if expect_pid is not None:
                assert pid == expect_pid, f"restored pid {pid}, expected {expect_pid}"
            return pid, p
        argv.insert(1, "-d")
        cp = self.cryo(*argv, check=check, log=images / log)
        if not check:
            self._adopt_from_pidfile(pidfile)
            return cp
        if not pidfile.exists():
            pytest.fail(f"cryo restore -d succeeded but wrote no pidfile {pidfile}\n"
                        f"stderr:\n{cp.stderr}")
        pid = int(pidfile.read_text())
        self.adopt(pid)
        ppid = ppid_of(pid)
        assert ppid == os.getpid(), (
            f"restored pid {pid} has parent {ppid}, expected this test process {os.getpid()} "
            f"(the subreaper) after cryo restore -d exited")
        if expect_pid is not None:
            assert pid == expect_pid, f"restored pid {pid}, expected {expect_pid}"
        return pid

    def _adopt_from_pidfile(self, pidfile: Path) -> None:
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            return
        if ppid_of(pid) == os.getpid():
            self.adopt(pid)

    # -- files ---------------------------------------------------------------------------------

    def snapshot(self, root: Path | None = None) -> dict[Path, tuple[bytes, os.stat_result]]:
        """Contents and stat of every regular file under root (default: the work dir, plus the
        subjects' POSIX shared memory objects in /dev/shm); FIFOs with contents None (they are
        kept as they are)."""
        root = root or self.work
        snap = {}
        for dirpath, _, files in os.walk(root):
            for fn in files:
                p = Path(dirpath) / fn
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode):
                    snap[p] = (p.read_bytes(), st)
                elif stat.S_ISFIFO(st.st_mode):
                    snap[p] = (None, st)
        if root == self.work:
            for p in self._shm_files():
                snap[p] = (p.read_bytes(), os.lstat(p))
        return snap

    def _shm_files(self) -> list[Path]:
        """POSIX shared memory objects of this test's subjects: they name them /cryo-shm-PID."""
        return [p for pid in self.tracked if (p := Path(f"/dev/shm/cryo-shm-{pid}")).exists()]

    def restore_snapshot(self, snap, root: Path | None = None) -> None:
        """Put files back as they were at snapshot() — in place (same inodes), same size,
        mode, owner and mtime; files created since are removed."""
        root = root or self.work
        for dirpath, _, files in os.walk(root):
            for fn in files:
                p = Path(dirpath) / fn
                if p not in snap:
                    p.unlink()
        for p, (data, st) in snap.items():
            if data is None:
                if not p.exists():
                    os.mkfifo(p, stat.S_IMODE(st.st_mode))
                continue
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.ftruncate(fd, 0)
                os.write(fd, data)
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                os.fchown(fd, st.st_uid, st.st_gid)
            finally:
                os.close(fd)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    # -- mounts --------------------------------------------------------------------------------

    def mount_tmpfs(self, path: Path, options: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"cannot mount tmpfs ({options}) on {path}: {r.stderr.strip()}")
        self.mounts.append(path)

    # -- teardown ------------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        problems = []
        for p in self.cryo_procs:
            if p.poll() is None:
                problems.append(f"cryo pid {p.pid} still running at teardown")
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    problems.append(f"cryo pid {p.pid} did not die")
        # Whole trees first (children of a killed parent would otherwise linger).
        for sid in self.sessions:
            self.kill_session(sid)
        for t in list(self.tracked.values()):
            if not t.reaped:
                self.kill(t.pid)
        # Orphans of this test reparented to us (e.g. a restore that failed half-way): only
        # processes running one of our session's subject binaries or the cryo binary.
        ours = {str(b) for b in self.bins.values()}
        if self.cryo_bin is not None:
            ours.add(str(self.cryo_bin))
        for pid in our_children():
            if exe_of(pid) in ours:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Reap every zombie child (restored processes, orphans).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                wpid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if wpid == 0:
                if not our_children():
                    break
                time.sleep(0.02)
        for path in self._shm_files():
            path.unlink(missing_ok=True)
        remove_sysv_segments({(n << 28) | pid for pid in self.tracked for n in (1, 2)})
        for m in reversed(self.mounts):
            r = subprocess.run(["umount", str(m)], capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", str(m)], capture_output=True)
        self.mounts.clear()
        return problems


def sysv_segments() -> dict[int, int]:
    """The System V shared memory segments of this IPC namespace: id -> key."""
    out = {}
    with open("/proc/sysvipc/shm") as f:
        next(f)
        for line in f:
            key, shmid = line.split()[:2]
            out[int(shmid)] = int(key) & 0xffffffff
    return out


def remove_sysv_segments(keys: set[int]) -> None:
    """IPC_RMID every segment with one of these keys (subjects key theirs (n << 28) | PID)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for shmid, key in sysv_segments().items():
        if key in keys:
            libc.shmctl(shmid, 0, None)  # IPC_RMID


@pytest.fixture(scope="session")
def work_root():
    """Parent of the per-test work dirs. pytest's tmp_path is 0700 root-only, but the nonroot
    subject must reach its work dir, so these live in a 0711 dir of their own."""
    root = Path(tempfile.mkdtemp(prefix="cryo-roundtrip-", dir="/tmp"))
    os.chmod(root, 0o711)
    yield root
    try:
        root.rmdir()  # only when every test cleaned up after itself (failures keep theirs)
    except OSError:
        pass


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _make_harness(request, tmp_path, bins, cryo, work_root):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    base = Path(tempfile.mkdtemp(prefix=name + "-", dir=work_root))
    os.chmod(base, 0o711)
    harness = Harness(tmp_path, bins, cryo, base)
    yield harness
    problems = harness.cleanup()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed:
        # Keep the evidence of failures; drop the (large) images and files of passes.
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"\nkept: {harness.work} and {harness.images}")
    if problems:
        pytest.fail("teardown: " + "; ".join(problems))


@pytest.fixture
def h(request, tmp_path, subject_bins, work_root) -> Harness:
    """Harness with cryo (the test fails when the binary is missing)."""
    cryo = request.getfixturevalue("cryo_bin")
    yield from _make_harness(request, tmp_path, subject_bins, cryo, work_root)


@pytest.fixture
def hs(request, tmp_path, subject_bins, work_root) -> Harness:
    """Harness without cryo: for running subjects on their own."""
    yield from _make_harness(request, tmp_path, subject_bins, None, work_root)


def pytest_configure(config):
    config.addinivalue_line("markers", "bench: a benchmark that prints figures; run with -m bench, never part of the test run")
