"""Failures: cryo must exit non-zero (not by a signal) with a one-line `Error: ...` naming what
it failed on, never harm a dump's target, and never leave a half-restored process behind."""

import os
import re
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import (our_children, pid_exists, pids_running, poll,
                      proc_status)
from test_images import crit_decode

IMG_COMMON_MAGIC = 0x54564319
IMG_SERVICE_MAGIC = 0x55105940


def counter_lines(s):
    log = s.work / "counter.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def assert_clean_failure(cp, *names):
    """Non-zero exit that is not a signal, an `Error:` line, and each of names mentioned."""
    out = cp.stderr
    assert cp.returncode != 0, f"expected failure, got success:\n{out}\n{cp.stdout}"
    assert 0 < cp.returncode < 128, (
        f"exit status {cp.returncode} looks like a crash (signal)\nstderr:\n{out}")
    errors = [l for l in out.splitlines() if l.startswith("Error: ")]
    assert errors, f"no 'Error: ...' line on stderr:\n{out}"
    for n in names:
        assert str(n) in out, f"the error does not name {n!r}:\n{out}"


def assert_unharmed(h, s):
    """The target of a failed dump still runs, untraced, and passes its own check."""
    assert s.popen.poll() is None, f"{s.name} died (status {s.popen.returncode})"
    h.check_running(s.pid)
    if s.name == "counter":
        n = counter_lines(s)
        assert poll(lambda: counter_lines(s) >= n + 2, 10), "counter stopped making progress"
    h.finish(s.pid)


def live_children():
    return {p for p in our_children() if pid_exists(p)}


def assert_nothing_left(h, s, children_before, alive=()):
    """After a failed restore: no live process runs the subject's binary except `alive`, and
    no new live child of ours appeared."""
    binary = h.bins[s.name]
    ok = poll(lambda: pids_running(binary) == set(alive) and live_children() <= children_before,
              2.0)
    assert ok, (f"left behind: processes running {binary.name}: {sorted(pids_running(binary))} "
                f"(expected {sorted(alive)}); new children: "
                f"{sorted(live_children() - children_before)}")


# ---------------------------------------------------------------------------------------------
# dump failures


def free_pid():
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    for pid in range(pid_max - 1, 1, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    pytest.fail("no free pid")


def test_dump_nonexistent_pid(h):
    pid = free_pid()
    cp = h.cryo("dump", "-t", str(pid), "-D", str(h.images), "-o", "dump.log", "-v4", check=False)
    assert_clean_failure(cp, pid)


def test_dump_with_tcp_socket_refused(h):
    """An established TCP connection needs CRIU's --tcp-established, which Cryo does not have:
    refused, naming the process, the fd and both ends of the connection."""
    s = h.start_subject("socket", "--kind", "tcp")
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{s.pid}/fd")
                 if os.readlink(f"/proc/{s.pid}/fd/{fd}").startswith("socket:"))
    cp = h.dump(s, check=False)
    assert_clean_failure(cp, f"process {s.pid}", "ESTABLISHED", "--tcp-established")
    assert any(re.search(rf"\bfd {fd}\b", cp.stderr) for fd in fds), f"no fd of {fds} named:\n{cp.stderr}"
    assert re.search(r"tcp 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+ ESTABLISHED", cp.stderr), (
        f"the connection is not named:\n{cp.stderr}")
    assert_unharmed(h, s)


def test_unix_socketpair_with_queued_data_round_trip(h):
    """Unix socketpairs are supported now: the 5 queued bytes and both directions survive."""
    s = h.start_subject("socket", "--kind", "unix")
    h.dump(s)
    pid = h.restore()
    assert pid == s.pid
    h.finish(pid)


PENDING_LISTENER = """
import socket, sys, time
name = "\\0" + sys.argv[1]  # abstract
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(name); l.listen(4)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(name)  # never accepted
open(sys.argv[2], "w").write("ready")
while True:
    time.sleep(1)
"""


def test_dump_listener_with_unaccepted_connection_refused(h):
    """A listening unix socket (abstract name) with a connection not yet accepted: refused,
    naming the socket, and the program runs on with its listener and the pending connection."""
    name, ready = f"cryo-pending-{os.getpid()}", h.work / "ready"
    p = h.start_program(["python3", "-c", PENDING_LISTENER, name, ready], log=h.work / "log")
    assert poll(ready.exists, 10), f"the program did not get ready: {(h.work / 'log').read_text()}"
    cp = h.dump(p.pid, check=False)
    assert_clean_failure(cp, "not yet accepted", str(p.pid))
    assert p.poll() is None, "the program died"
    h.check_running(p.pid)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect("\0" + name)  # the listener still takes connections


EXTERNAL_DGRAM = """
import os, signal, socket, sys, time
c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
c.connect("\\0" + sys.argv[1])  # a server outside the dump (the test's)
open(sys.argv[2], "w").write("ready")
n = 0
while True:
    try:
        c.send(b"tick %d" % n, socket.MSG_DONTWAIT)
    except BlockingIOError:
        pass
    n += 1
    time.sleep(0.05)
"""


def start_external_dgram_client(h):
    """A program whose datagram socket is connected to a server socket the test holds."""
    name, ready = f"cryo-ext-{os.getpid()}-{time.monotonic_ns()}", h.work / "ready"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    p = h.start_program(["python3", "-c", EXTERNAL_DGRAM, name, ready], log=h.work / "log")
    assert poll(ready.exists, 10), f"the program did not get ready: {(h.work / 'log').read_text()}"
    server.settimeout(10)
    assert server.recv(100).startswith(b"tick")
    return p, server


def test_dump_external_unix_connection_refused_without_ext_unix_sk(h):
    """A datagram socket connected outside the tree: refused without --ext-unix-sk, naming
    the socket and the option, and the program keeps sending."""
    p, server = start_external_dgram_client(h)
    with server:
        cp = h.dump(p.pid, check=False)
        sent_by_now = time.monotonic()
        assert_clean_failure(cp, "--ext-unix-sk", "belongs to no process of the dump")
        h.check_running(p.pid)
        # Ticks keep coming: some are sent after the failed dump (the queue holds the rest).
        server.settimeout(10)
        ticks = [server.recv(100) for _ in range(5)]
        assert all(t.startswith(b"tick") for t in ticks), ticks
        assert poll(lambda: server.recv(100) and time.monotonic() > sent_by_now + 0.5, 10), "the ticks stopped"


def test_external_unix_dgram_reconnected_with_ext_unix_sk(h):
    """With --ext-unix-sk the socket is dumped with its outside peer's name (an external
    entry, as CRIU marks it) and connected to it again on restore: the ticks come again."""
    p, server = start_external_dgram_client(h)
    with server:
        h.dump(p.pid, "--ext-unix-sk")
        files = [e for e in crit_decode(h.images / "files.img")["entries"] if e["type"] == "UNIXSK"]
        external = [e["usk"] for e in files if e["usk"].get("uflags", 0) & 1]
        assert len(external) == 1 and external[0]["name"].startswith("=00cryo-ext-"), files
        server.settimeout(0.2)
        try:
            while True:
                server.recv(100)
        except TimeoutError:
            pass
        pid = h.restore("--ext-unix-sk")
        assert pid == p.pid
        server.settimeout(10)
        assert server.recv(100).startswith(b"tick"), "no tick after the restore"
        h.check_running(pid)


def test_dump_images_dir_missing(h):
    s = h.start_subject("counter")
    missing = h.tmp / "no-such-dir" / "images"
    cp = h.dump(s, images=missing, check=False)
    assert_clean_failure(cp, missing)
    assert not missing.exists()
    assert_unharmed(h, s)


def test_dump_images_dir_read_only(h):
    s = h.start_subject("counter")
    ro = h.tmp / "ro-images"
    h.mount_tmpfs(ro, "ro,size=1m")
    cp = h.dump(s, images=ro, check=False)
    assert_clean_failure(cp)
    assert str(ro) in cp.stderr or "ead-only" in cp.stderr, (
        f"the error names neither {ro} nor a read-only file system:\n{cp.stderr}")
    assert_unharmed(h, s)


def test_dump_disk_full(h):
    s = h.start_subject("memory")
    small = h.tmp / "small"
    h.mount_tmpfs(small, "size=1m")
    cp = h.dump(s, images=small, check=False)
    assert_clean_failure(cp)
    assert re.search(r"space|ENOSPC|full", cp.stderr, re.I), (
        f"the error does not say the disk is full:\n{cp.stderr}")
    assert not (small / "inventory.img").exists(), "inventory.img left after a failed dump"
    assert_unharmed(h, s)


def test_dump_leave_stopped_failure_keeps_running_state(h):
    """A dump that fails must not leave the target stopped, even with --leave-stopped."""
    s = h.start_subject("socket", "--kind", "tcp")
    cp = h.dump(s, "--leave-stopped", check=False)
    assert_clean_failure(cp)
    st = proc_status(s.pid)
    assert st["TracerPid"] == "0"
    if st["State"].startswith("T"):  # tolerated: --leave-stopped asked for it
        os.kill(s.pid, signal.SIGCONT)
    assert_unharmed(h, s)


# ---------------------------------------------------------------------------------------------
# restore failures


def test_restore_pid_taken(h):
    # A subject that changes no files while it runs, so only the pid is in the way.
    s = h.start_subject("threads")
    h.dump(s, "--leave-running")
    before = live_children()
    cp = h.restore(check=False)
    assert_clean_failure(cp, s.pid)
    assert_nothing_left(h, s, before, alive={s.pid})
    assert_unharmed(h, s)


def payload_offset(data: bytes) -> int:
    """Offset of the first entry's u32 size in a CRIU image."""
    (m,) = struct.unpack_from("<I", data, 0)
    return 8 if m in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC) else 4


def corrupt_core_magic(images, pid):
    p = images / f"core-{pid}.img"
    data = bytearray(p.read_bytes())
    off = payload_offset(data) - 4
    for i in range(4):
        data[off + i] ^= 0xFF
    p.write_bytes(bytes(data))
    return p.name


def corrupt_core_size(images, pid):
    p = images / f"core-{pid}.img"
    data = bytearray(p.read_bytes())
    struct.pack_into("<I", data, payload_offset(data), 0x7FFFFF00)
    p.write_bytes(bytes(data))
    return p.name


def corrupt_core_payload(images, pid):
    p = images / f"core-{pid}.img"
    data = bytearray(p.read_bytes())
    off = payload_offset(data) + 4
    data[off:off + 16] = b"\xff" * 16  # a varint longer than 10 bytes: invalid protobuf
    p.write_bytes(bytes(data))
    return p.name


def truncate_mm(images, pid):
    p = images / f"mm-{pid}.img"
    size = p.stat().st_size
    os.truncate(p, size // 2)
    return p.name


def truncate_pagemap(images, pid):
    p = images / f"pagemap-{pid}.img"
    os.truncate(p, p.stat().st_size - 3)
    return p.name


def delete_pages(images, pid):
    pages = sorted(images.glob("pages-*.img"))
    assert pages, "the dump wrote no pages-*.img"
    for p in pages:
        p.unlink()
    return pages[0].name


def truncate_pages(images, pid):
    pages = sorted(images.glob("pages-*.img"))
    assert pages, "the dump wrote no pages-*.img"
    os.truncate(pages[0], pages[0].stat().st_size // 2)
    return pages[0].name


def delete_inventory(images, pid):
    (images / "inventory.img").unlink()
    return "inventory.img"


def delete_pstree(images, pid):
    (images / "pstree.img").unlink()
    return "pstree.img"


CORRUPTIONS = [corrupt_core_magic, corrupt_core_size, corrupt_core_payload, truncate_mm,
               truncate_pagemap, delete_pages, truncate_pages, delete_inventory, delete_pstree]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=[c.__name__ for c in CORRUPTIONS])
def test_restore_corrupt_image(h, corrupt):
    s = h.start_subject("counter")
    h.dump(s)
    pristine = {p: p.read_bytes() for p in h.images.iterdir() if p.is_file()}
    named = corrupt(h.images, s.pid)
    before = live_children()
    cp = h.restore(check=False)
    assert_clean_failure(cp, named)
    assert_nothing_left(h, s, before)
    assert not pid_exists(s.pid), f"pid {s.pid} exists after a failed restore"
    # Put the images back: the same restore now works, so the failure left nothing in its way.
    for p in h.images.iterdir():
        if p.is_file() and p not in pristine:
            p.unlink()
    for p, data in pristine.items():
        p.write_bytes(data)
    pid = h.restore(expect_pid=s.pid)
    h.finish(pid)


def test_restore_file_deleted(h):
    s = h.start_subject("files")
    h.dump(s)
    (s.work / "rw.dat").unlink()
    before = live_children()
    cp = h.restore(check=False)
    assert_clean_failure(cp, "rw.dat")
    assert_nothing_left(h, s, before)


def test_restore_file_changed_size(h):
    s = h.start_subject("files")
    h.dump(s)
    files = h.snapshot()
    with open(s.work / "ro.txt", "a") as f:
        f.write("one more line\n")
    before = live_children()
    cp = h.restore(check=False)
    assert_clean_failure(cp, "ro.txt")
    assert_nothing_left(h, s, before)
    h.restore_snapshot(files)
    pid = h.restore(expect_pid=s.pid)
    h.finish(pid)


def test_restore_missing_images_dir(h):
    missing = h.tmp / "no-such-images"
    cp = h.cryo("restore", "-D", str(missing), "-o", "restore.log", "-v4", "-d", check=False)
    assert_clean_failure(cp, missing)


def test_unknown_option(h):
    cp = h.cryo("dump", "-t", "1", "-D", str(h.images), "--no-such-option", check=False)
    assert 0 < cp.returncode < 128
    assert "no-such-option" in cp.stderr
