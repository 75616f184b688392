"""Network sockets: what survives without --tcp-established (listeners, bound and connected
UDP, TCP sockets not connected yet), what is refused, and a real server from Debian.

The inet subject (Tests/Subjects/inet.c) is also a tree subject: test_tree.py round-trips it
(kill/restore, --leave-running, restore twice, crit decode)."""

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import our_children, pid_exists, poll
from test_errors import assert_clean_failure, assert_unharmed
from test_images import crit_env
from test_inspect import strip_newer
from test_tree import dump_tree, start_tree

PYTHON = "/usr/bin/python3"  # Debian's, not a test venv's


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def socket_fds(pid):
    fds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                fds.append(int(fd))
        except FileNotFoundError:
            pass
    return fds


def fetch(port, name="hello.txt"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}", timeout=10) as r:
        return r.read()


def start_http_server(h):
    """python3 -m http.server on 127.0.0.1:PORT serving the work dir, answered one request and
    idle again: its only socket is the listener (the connection is closed on both sides)."""
    port = free_port()
    contents = f"hello from {os.getpid()}\n".encode() * 100
    (h.work / "hello.txt").write_bytes(contents)
    p = h.start_program([PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                         "--directory", h.work], log=h.work / "server.log")

    def answers():
        try:
            return fetch(port) == contents
        except OSError:
            return False
    assert poll(answers, 10), f"http.server does not answer:\n{(h.work / 'server.log').read_text()}"
    assert poll(lambda: len(socket_fds(p.pid)) == 1, 10), (
        f"http.server still has sockets {socket_fds(p.pid)} open after the request")
    return p, port, contents


def test_http_server_kill_restore(h):
    p, port, contents = start_http_server(h)
    dump_tree(h, p.pid)
    with pytest.raises(OSError):
        fetch(port)  # nobody listens while it is dumped
    pid = h.restore(expect_pid=p.pid)
    assert fetch(port) == contents
    assert fetch(port) == contents, "a second request failed"
    h.kill(pid)


def test_http_server_leave_running_then_restore(h):
    p, port, contents = start_http_server(h)
    dump_tree(h, p.pid, "--leave-running")
    files = h.snapshot()
    assert fetch(port) == contents, "the server stopped serving after a --leave-running dump"
    assert poll(lambda: len(socket_fds(p.pid)) == 1, 10)
    h.kill(p.pid)
    assert poll(lambda: not pid_exists(p.pid), 10)
    h.restore_snapshot(files)  # its log as at the dump (it logged the request since)
    pid = h.restore(expect_pid=p.pid)
    assert fetch(port) == contents
    h.kill(pid)


def test_restore_port_taken_fails_cleanly(h):
    """Another socket listens on the port: the restore fails naming 127.0.0.1:PORT and leaves
    no process; once the port is free it works."""
    p, port, contents = start_http_server(h)
    dump_tree(h, p.pid)
    children = set(our_children())
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        cp = h.restore(check=False)
        assert_clean_failure(cp, f"127.0.0.1:{port}")
        assert poll(lambda: not pid_exists(p.pid), 5), f"pid {p.pid} left after the failed restore"
        assert set(our_children()) <= children, "the failed restore left a child"
        squatter.settimeout(0.2)
        with pytest.raises(socket.timeout):
            squatter.accept()  # nothing connected to it, and it still listens
    pid = h.restore(expect_pid=p.pid)
    assert fetch(port) == contents
    h.kill(pid)


def test_dump_refuses_listener_with_pending_connection(h):
    s = h.start_subject("socket", "--kind", "tcp-pending")
    cp = h.dump(s, check=False)
    assert_clean_failure(cp, f"process {s.pid}", "not yet accepted", "--tcp-established", "LISTEN")
    assert_unharmed(h, s)


def test_dump_warns_about_queued_datagrams(h):
    """A UDP datagram waiting unread is not saved (as with CRIU): the dump says so."""
    s = h.start_subject("socket", "--kind", "udp-queued")
    cp = h.dump(s, "--leave-running")
    log = (h.images / "dump.log").read_text()
    assert "queued unread" in log and "udp 127.0.0.1:" in log, f"no warning in dump.log:\n{log[-2000:]}"
    h.finish(s.pid)


def test_inet_images(h):
    """files.img: crit reads every inet socket with its addresses, ports, state and options,
    and cryo decode prints exactly what crit prints."""
    s = start_tree(h, "inet")
    h.dump(s, "--leave-running")
    h.finish(s.pid)
    crit = subprocess.run(["/usr/bin/crit", "decode", "--pretty", "-i", h.images / "files.img"],
                          capture_output=True, env=crit_env(), check=True)
    files = json.loads(crit.stdout)["entries"]
    inet = [f["isk"] for f in files if f["type"] == "INETSK"]
    got = sorted((e["family"], e["type"], e["proto"], e["state"], e["src_addr"][0], e.get("backlog"),
                  e.get("v6only")) for e in inet)
    want = sorted([
        ("INET", "STREAM", "TCP", "LISTEN", "127.0.0.1", 5, None),
        ("INET6", "STREAM", "TCP", "LISTEN", "::", 7, False),
        ("INET", "STREAM", "TCP", "LISTEN", "127.0.0.1", 3, None),
        ("INET", "DGRAM", "UDP", "CLOSE", "127.0.0.1", 0, None),
        ("INET", "DGRAM", "UDP", "ESTABLISHED", "127.0.0.1", 0, None),
        ("INET6", "DGRAM", "UDP", "CLOSE", "::1", 0, True),
        ("INET6", "DGRAM", "UDP", "ESTABLISHED", "::1", 0, False),
        ("INET", "STREAM", "TCP", "CLOSE", "127.0.0.1", 0, None),
        ("INET6", "STREAM", "TCP", "CLOSE", "::", 0, False),
        ("INET", "DGRAM", "UDP", "CLOSE", "192.0.2.1", 0, None),
    ], key=str)
    assert sorted(got, key=str) == want, f"inet entries:\n{json.dumps(inet, indent=1)}"
    lst4 = next(e for e in inet if e["state"] == "LISTEN" and e["backlog"] == 5)
    assert lst4["opts"]["reuseaddr"] and lst4["opts"]["so_keepalive"]
    assert int(lst4["flags"], 0) & os.O_NONBLOCK
    assert [e.get("ip_opts") for e in inet if e["src_addr"][0] == "192.0.2.1"] == [{"freebind": True}]
    for pretty in ([], ["--pretty"]):
        theirs = subprocess.run(["/usr/bin/crit", "decode", "-i", h.images / "files.img", *pretty],
                                capture_output=True, env=crit_env(), check=True).stdout.decode()
        ours = h.cryo("decode", "-i", h.images / "files.img", *pretty).stdout
        assert strip_newer(json.loads(ours)) == json.loads(theirs)


def test_restore_refuses_tcp_connection_in_image(h):
    """An image with an established TCP socket (as CRIU --tcp-established writes, here made by
    editing the http.server's listener) is refused before anything is made, naming the socket;
    Cryo does not hand the process a bare socket in place of its connection."""
    p, port, contents = start_http_server(h)
    dump_tree(h, p.pid)
    files = h.images / "files.img"
    doc = json.loads(subprocess.run(["/usr/bin/crit", "decode", "-i", files], capture_output=True,
                                    env=crit_env(), check=True).stdout)
    listener = next(f["isk"] for f in doc["entries"] if f["type"] == "INETSK" and f["isk"]["state"] == 10)  # LISTEN
    listener["state"] = 1  # ESTABLISHED
    subprocess.run(["/usr/bin/crit", "encode", "-o", files], input=json.dumps(doc).encode(),
                   env=crit_env(), check=True)
    children = set(our_children())
    cp = h.restore(check=False)
    assert_clean_failure(cp, f"socket:[{listener['ino']}]", "ESTABLISHED", "--tcp-established")
    assert not pid_exists(p.pid) and set(our_children()) <= children, "the refused restore made a process"
