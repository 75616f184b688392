"""Every subject on its own, no checkpoint tool: start, wait for the pidfile, SIGTERM, PASS.

If one of these fails, the subject (or the machine) is broken, not Cryo.
"""

import os
import shutil
import signal
import subprocess

import pytest

from conftest import (CC_FLAGS, ROUNDTRIP_SUBJECTS, SUBJECTS_SRC, TERMINAL_SUBJECTS, TREE_SUBJECTS,
                      assert_running_free, poll)

ALL_SUBJECTS = sorted(p.stem for p in SUBJECTS_SRC.glob("*.c"))


def test_subject_list_is_complete():
    """Every subject is used by some round trip: the single-process ones by test_roundtrip.py,
    the tree ones by test_tree.py, the terminal ones by test_tty.py."""
    assert set(ROUNDTRIP_SUBJECTS) | set(TREE_SUBJECTS) | set(TERMINAL_SUBJECTS) | {"socket"} == set(ALL_SUBJECTS)


@pytest.mark.parametrize("name", ALL_SUBJECTS)
def test_compiles_without_warnings(name, tmp_path):
    cc = shutil.which("cc")
    assert cc, "no C compiler"
    r = subprocess.run([cc, *CC_FLAGS, "-Wall", "-Wextra", "-Werror", "-o", str(tmp_path / name),
                        str(SUBJECTS_SRC / f"{name}.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def counter_lines(s):
    log = s.work / "counter.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.parametrize("name", sorted(set(ALL_SUBJECTS) - set(TERMINAL_SUBJECTS)))
def test_standalone_pass(hs, name):
    """(Terminal subjects need a terminal: test_tty.py runs them alone.)"""
    s = hs.start_subject(name)
    assert_running_free(s.pid)
    if name == "counter":
        assert poll(lambda: counter_lines(s) >= 3, 10), "counter wrote no lines"
    hs.finish(s.pid)


@pytest.mark.parametrize("args", [["--threads", "1"], ["--threads", "9"]])
def test_threads_counts(hs, args):
    s = hs.start_subject("threads", *args, defaults=False)
    hs.finish(s.pid)


def test_socket_tcp(hs):
    s = hs.start_subject("socket", "--kind", "tcp")
    hs.finish(s.pid)


def test_subject_stopped_and_continued(hs):
    """SIGSTOP/SIGCONT (what a freezer does to it) must not upset a subject."""
    s = hs.start_subject("threads")
    os.kill(s.pid, signal.SIGSTOP)
    assert poll(lambda: open(f"/proc/{s.pid}/status").read().find("State:\tT") >= 0, 5)
    os.kill(s.pid, signal.SIGCONT)
    hs.finish(s.pid)


def test_counter_detects_a_gap(hs):
    """The counter's check is not vacuous: a line added behind its back is a FAIL."""
    s = hs.start_subject("counter")
    assert poll(lambda: counter_lines(s) >= 2, 10)
    with open(s.work / "counter.log", "a") as f:
        f.write("count 999\n")
    text = hs.finish(s.pid, expect="FAIL")
    assert text.startswith("FAIL: "), text


def test_memory_detects_changed_file(hs):
    """The memory subject notices its private file mapping's file changed on disk."""
    s = hs.start_subject("memory")
    with open(s.work / "private.dat", "r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\0" * 4096)
    text = hs.finish(s.pid, expect="FAIL")
    assert text.startswith("FAIL: ") and "private" in text, text
