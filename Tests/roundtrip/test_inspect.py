"""Cryo's inspection tools on real dumps: show/decode/encode against crit, x, inspect,
memparse, coredump with gdb, and corrupt images.

Self-contained: it compiles its own subject (Tests/roundtrip/conftest.py is not needed),
dumps it with the cryo binary from $CRYO (default <repo>/.build-inspect/debug/cryo, then
<repo>/.build/debug/cryo), and kills and reaps everything it started by pid. Needs root,
cc, /usr/bin/crit and /usr/bin/gdb.

    python3 -m pytest -q Tests/roundtrip/test_inspect.py
    python3 -m pytest -q -s -m bench Tests/roundtrip/test_inspect.py   # the 1 GiB memparse figure
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CRIT = "/usr/bin/crit"
GDB = "/usr/bin/gdb"

# Fields Cryo writes that crit 3.17 does not know (it drops them): they are the only
# difference allowed between `cryo decode` and `crit decode`.
NEWER_THAN_CRIT = {"no_new_privs", "cap_amb", "tcp_opts"}
# Every image kind a Cryo dump writes (besides the raw pages-*.img): the first subject's dump
# has the basic ones, the second's (pipes, sockets, a deleted file, a lock, shared memory) the rest.
KINDS = {"INVENTORY", "PSTREE", "CORE", "MM", "PAGEMAP", "IDS", "FS", "FILES", "FDINFO", "STATS",
         "PIPES_DATA", "SK_QUEUES", "GHOST_FILE", "REMAP_FPATH", "FILE_LOCKS"}

SUBJECT = r"""
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long global_counter = 4242;
const char *global_name = "cryo-inspect-subject";
volatile int stop_flag = 0;
volatile long spin_count = 0;
char *secret;
static const char *ready_path;
static const char *data_path;

static void *sleeper(void *arg) {
    volatile long sleeper_local = 777;
    while (!stop_flag) usleep(1000);
    return (void *)sleeper_local;
}

static void *spinner(void *arg) {
    volatile long spinner_local = 888;
    while (!stop_flag) spin_count++;
    return (void *)spinner_local;
}

__attribute__((noinline)) void c(int depth, long seed) {
    volatile long local = 1234567;
    volatile double ratio = 2.5;
    char text[32];
    strcpy(text, "in function c");
    int fd = open(data_path, O_RDWR | O_CREAT | O_APPEND, 0644);
    if (write(fd, "data\n", 5) != 5) return;
    FILE *f = fopen(ready_path, "w");
    fprintf(f, "%d\n", getpid());
    fclose(f);
    while (!stop_flag) usleep(1000);
    printf("%ld %f %s %d %ld %d\n", local, ratio, text, depth, seed, fd);
}

__attribute__((noinline)) void b(int depth) { volatile int b_local = 22; c(depth + 1, 99); (void)b_local; }
__attribute__((noinline)) void a(int depth) { volatile int a_local = 11; b(depth + 1); (void)a_local; }

int main(int argc, char **argv) {
    ready_path = argv[1];
    data_path = argv[2];
    secret = malloc(4 * 4096);
    memset(secret, 'x', 4 * 4096);
    strcpy(secret + 4000, "CRYO-SECRET-7f3a9c");   /* across a page boundary */
    pthread_t t1, t2;
    pthread_create(&t1, NULL, sleeper, NULL);
    pthread_create(&t2, NULL, spinner, NULL);
    a(1);
    return 0;
}
"""

KINDS_SUBJECT = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int p[2]; if (pipe(p) || write(p[1], "pipe-data", 9) != 9) return 1;
    int s[2]; if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) || write(s[0], "sock-data", 9) != 9) return 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/ghost", argv[2]);
    int g = open(path, O_RDWR | O_CREAT, 0600);
    if (write(g, "ghost-data", 10) != 10) return 1;
    unlink(path);
    snprintf(path, sizeof path, "%s/locked", argv[2]);
    int l = open(path, O_RDWR | O_CREAT, 0600);
    if (flock(l, LOCK_EX)) return 1;
    char *shared = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    strcpy(shared + 4096, "SHARED-ANON-SECRET");
    FILE *f = fopen(argv[1], "w"); fprintf(f, "%d\n", getpid()); fclose(f);
    for (;;) pause();
}
"""

BIG_SUBJECT = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
unsigned char *volatile keep;   /* the buffer escapes, so its stores are not optimized away */
int main(int argc, char **argv) {
    size_t size = (size_t)atol(argv[2]) << 20;
    unsigned char *p = malloc(size);
    keep = p;
    unsigned long x = 88172645463325252UL;
    for (size_t i = 0; i < size; i += 8) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; memcpy(p + i, &x, 8); }
    memcpy(p + size - 4096 - 7, "NEEDLE-IN-A-GIGABYTE", 20);
    FILE *f = fopen(argv[1], "w"); fprintf(f, "%d\n", getpid()); fclose(f);
    for (;;) pause();
}
"""


def cryo_path() -> Path:
    if os.environ.get("CRYO"):
        return Path(os.environ["CRYO"])
    for candidate in (REPO / ".build-inspect" / "debug" / "cryo", REPO / ".build" / "debug" / "cryo"):
        if candidate.is_file():
            return candidate
    return REPO / ".build-inspect" / "debug" / "cryo"


CRYO = cryo_path()


def run(*args, check=True, timeout=120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {r.returncode}:\n{r.stderr.decode(errors='replace')}")
    return r


def cryo(*args, **kw) -> subprocess.CompletedProcess:
    return run(CRYO, *args, **kw)


def wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


class Started:
    """Processes this module started, killed and reaped by pid at the end."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.pids: list[int] = []   # grandchildren (reaped here if we are their subreaper)

    def start(self, argv, out: Path) -> subprocess.Popen:
        with open(out, "w") as f:
            p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
        self.procs.append(p)
        return p

    def reap(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                return  # not our child: its parent or init reaps it
            time.sleep(0.01)

    def cleanup(self):
        for pid in self.pids:
            self.reap(pid)
        for p in self.procs:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="module")
def env():
    if os.geteuid() != 0:
        pytest.skip("needs root (ptrace of the subject)")
    if not (CRYO.is_file() and os.access(CRYO, os.X_OK)):
        pytest.fail(f"cryo binary {CRYO} not found: build it (swift build --scratch-path .build-inspect) or set CRYO")
    for tool in (CRIT, GDB):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} is not installed")
    started = Started()
    yield started
    started.cleanup()


@pytest.fixture(scope="module")
def dumped(env, tmp_path_factory):
    """The subject, dumped (and killed) once: (images dir, pid, binary, work dir)."""
    work = tmp_path_factory.mktemp("inspect")
    src = work / "subject.c"
    src.write_text(SUBJECT)
    binary = work / "subject"
    run("cc", "-g", "-O0", "-pthread", "-o", binary, src)
    ready, data = work / "ready", work / "data.txt"
    p = env.start([binary, ready, data], work / "subject.out")
    wait_for(ready)
    time.sleep(0.05)  # let the threads reach their loops
    images = work / "images"
    images.mkdir()
    cryo("dump", "-t", p.pid, "-D", images, "-o", "dump.log", "-v4")
    p.wait(timeout=10)
    return images, p.pid, binary, work


@pytest.fixture(scope="module")
def kinds_dumped(env, tmp_path_factory):
    """A subject with a pipe and a socket holding data, a deleted file, a lock and shared memory."""
    work = tmp_path_factory.mktemp("kinds")
    src = work / "kinds.c"
    src.write_text(KINDS_SUBJECT)
    binary = work / "kinds"
    run("cc", "-O0", "-o", binary, src)
    ready = work / "ready"
    p = env.start([binary, ready, work], work / "kinds.out")
    wait_for(ready)
    images = work / "images"
    images.mkdir()
    cryo("dump", "-t", p.pid, "-D", images, "-o", "dump.log", "--file-locks")
    p.wait(timeout=10)
    return images, p.pid, binary, work


def image_files(images: Path) -> list[Path]:
    return sorted(f for f in images.glob("*.img") if not f.name.startswith("pages-"))


def strip_newer(value):
    if isinstance(value, dict):
        return {k: strip_newer(v) for k, v in value.items() if k not in NEWER_THAN_CRIT}
    if isinstance(value, list):
        return [strip_newer(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# show / decode / encode


@pytest.mark.parametrize("pretty", [False, True])
def test_decode_agrees_with_crit_on_every_kind(dumped, kinds_dumped, pretty):
    flag = ["--pretty"] if pretty else []
    seen = set()
    for f in image_files(dumped[0]) + image_files(kinds_dumped[0]):
        ours = cryo("decode", "-i", f, *flag).stdout.decode()
        theirs = run(CRIT, "decode", "-i", f, *flag).stdout.decode()
        mine, crits = json.loads(ours), json.loads(theirs)
        seen.add(mine["magic"])
        assert strip_newer(mine) == crits, f.name
        if strip_newer(mine) == mine:
            assert ours == theirs, f"{f.name}: same JSON, different text"
        nopl = cryo("show", "--nopl", f).stdout.decode()
        assert strip_newer(json.loads(nopl)) == json.loads(run(CRIT, "show", "--nopl", f).stdout), f.name
    assert KINDS <= seen, f"image kinds not covered: {KINDS - seen}"


def test_show_is_crit_show(dumped):
    images, pid, _, _ = dumped
    for f in image_files(images):
        mine = json.loads(cryo("show", f).stdout)
        assert strip_newer(mine) == json.loads(run(CRIT, "show", f).stdout), f.name
    mm = json.loads(cryo("show", images / f"mm-{pid}.img", "--nopl").stdout)
    assert mm["entries"][0]["vmas"][0]["start"].startswith("0x")
    assert "PROT_READ" in mm["entries"][0]["vmas"][0]["prot"]


def test_encode_gives_back_the_same_bytes(dumped, kinds_dumped, tmp_path):
    for f in image_files(dumped[0]) + image_files(kinds_dumped[0]):
        original = f.read_bytes()
        for flag in ([], ["--pretty"]):
            js = tmp_path / "x.json"
            cryo("decode", "-i", f, "-o", js, *flag)
            out = tmp_path / "x.img"
            cryo("encode", "-i", js, "-o", out)
            assert out.read_bytes() == original, f"{f.name} {flag}"
            # From stdin to stdout too.
            piped = run(CRYO, "encode", input=js.read_bytes()).stdout
            assert piped == original
        # crit's own JSON (which lacks the fields crit does not know) encodes as crit does.
        crit_json = tmp_path / "crit.json"
        run(CRIT, "decode", "--pretty", "-i", f, "-o", crit_json)
        ours, theirs = tmp_path / "ours.img", tmp_path / "theirs.img"
        cryo("encode", "-i", crit_json, "-o", ours)
        run(CRIT, "encode", "-i", crit_json, "-o", theirs)
        assert ours.read_bytes() == theirs.read_bytes(), f.name


def test_raw_pages_are_refused_clearly(dumped):
    images, _, _, _ = dumped
    pages = next(images.glob("pages-*.img"))
    r = cryo("show", pages, check=False)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.startswith(f"Error: {pages}: at offset 0"), err
    assert "pages-*.img has no magic" in err


# ---------------------------------------------------------------------------------------------
# x, inspect, memparse


@pytest.mark.parametrize("topic", ["ps", "fds", "mems", "rss"])
def test_explore_matches_crit_x(dumped, kinds_dumped, topic):
    for images in (dumped[0], kinds_dumped[0]):
        ours = cryo("x", images, topic).stdout.decode()
        assert ours == run(CRIT, "x", images, topic).stdout.decode()


def test_inspect_and_memparse_other_kinds(kinds_dumped, tmp_path):
    images, pid, _, work = kinds_dumped
    text = cryo("inspect", images).stdout.decode()
    assert re.search(r"PIPE\s+pipe\[\d+\], 9 bytes queued", text), text
    assert re.search(r"UNIXSK\s+unix\[\d+ \(\d+\)\], 9 bytes queued", text), text
    assert f"{work / 'ghost'} (deleted; contents in the images)" in text
    summary = json.loads(cryo("inspect", images, "--json").stdout)
    assert [(l["kind"], l["type"]) for l in summary["locks"]] == [("flock", "write")]
    assert len(summary["sockets"]) == 2
    out = cryo("memparse", images, "--search", "SHARED-ANON-SECRET").stdout.decode()
    assert "1 match of" in out and "[shared-anon" in out and "rw-s" in out, out
    cores = tmp_path / "cores"
    cryo("coredump", "-D", images, "-o", cores)
    assert b"SHARED-ANON-SECRET" in (cores / f"core.{pid}").read_bytes()


def test_inspect_summary(dumped):
    images, pid, binary, work = dumped
    text = cryo("inspect", images).stdout.decode()
    assert f"{binary} {work / 'ready'} {work / 'data.txt'}" in text
    assert str(work / "data.txt") in text
    assert "dump.log" in text and "pages scanned" in text
    summary = json.loads(cryo("inspect", images, "--json").stdout)
    assert summary["format"] == "cryo-inspect/1"
    (p,) = summary["processes"]
    assert p["pid"] == pid and p["state"] == "alive"
    assert p["cmdline"] == [str(binary), str(work / "ready"), str(work / "data.txt")]
    assert len(p["threads"]) == 3
    assert p["memory"]["dumped_bytes"] > 0 and p["memory"]["mapped_bytes"] >= p["memory"]["dumped_bytes"]
    targets = {fd["fd"]: fd["target"] for fd in p["fds"]}
    assert str(work / "data.txt") in targets.values()
    data_fd = next(fd for fd in p["fds"] if fd["target"] == str(work / "data.txt"))
    assert "O_APPEND" in data_fd["mode"] and data_fd["pos"] == 5
    assert summary["stats"]["dump"]["pages_written"] > 0
    assert summary["inventory"]["img_version"] == 2


def test_memparse_sizes_search_and_dump(dumped, tmp_path):
    images, pid, _, _ = dumped
    table = cryo("memparse", images).stdout.decode()
    assert re.search(rf"^\s*{pid}\s+subject\s", table, re.M), table
    per_map = cryo("memparse", images, "--pid", pid).stdout.decode()
    assert "[heap]" in per_map and "[stack]" in per_map
    r = cryo("memparse", images, "--pid", pid, "--search", "CRYO-SECRET-7f3a9c", "--context", "8")
    out = r.stdout.decode()
    assert "1 match of" in out, out
    address = int(re.search(r"^\s+0x([0-9a-f]+)\s+\[heap\] rw-p", out, re.M).group(1), 16)
    assert "CRYO-SEC" in out  # the excerpt
    found = json.loads(cryo("memparse", images, "--search-regex", "CRYO-SECRET-[0-9a-f]+", "--json").stdout)
    assert [m["address"] for m in found[0]["matches"]] == [hex(address)]
    assert found[0]["matches"][0]["match"] == "CRYO-SECRET-7f3a9c"
    raw = tmp_path / "raw.bin"
    cryo("memparse", images, "--pid", pid, "--dump", hex(address), "18", "-o", raw)
    assert raw.read_bytes() == b"CRYO-SECRET-7f3a9c"
    none = cryo("memparse", images, "--search", "no such text anywhere", check=False)
    assert none.returncode == 1 and "0 matches" in none.stdout.decode()


# ---------------------------------------------------------------------------------------------
# coredump


def test_coredump_for_gdb(dumped, tmp_path):
    images, pid, binary, _ = dumped
    cores = tmp_path / "cores"
    cryo("coredump", "-D", images, "-o", cores)
    core = cores / f"core.{pid}"
    assert core.is_file()
    r = run(GDB, "-batch", "-nx",
            "-ex", "info threads",
            "-ex", "thread apply all bt",
            "-ex", "frame function c",
            "-ex", "print local", "-ex", "print ratio", "-ex", "print text", "-ex", "print depth", "-ex", "print seed",
            "-ex", "print global_counter", "-ex", "print global_name", "-ex", "print secret + 4000",
            "-ex", "frame function b", "-ex", "print b_local",
            binary, core)
    out = r.stdout.decode()
    assert f"Core was generated by `{binary}" in out, out
    lwps = re.findall(r"\(LWP (\d+)\)", out.split("Thread 3")[0])
    assert len(set(lwps)) == 3 and str(pid) in lwps, out
    main_bt = out.split(f"(LWP {pid})):")[-1]
    frames = re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\w+) \(", main_bt, re.M)
    assert frames[frames.index("c"):frames.index("c") + 4] == ["c", "b", "a", "main"], main_bt
    assert re.search(r"in sleeper \(", out) and re.search(r"in spinner \(", out), out
    values = dict(re.findall(r"^\$(\d+) = (.*)$", out, re.M))
    assert values["1"] == "1234567"
    assert values["2"] == "2.5"
    assert values["3"].startswith('"in function c"')
    assert values["4"] == "3" and values["5"] == "99"
    assert values["6"] == "4242"
    assert values["7"].endswith('"cryo-inspect-subject"')
    assert values["8"].endswith('"CRYO-SECRET-7f3a9c', ) or '"CRYO-SECRET-7f3a9c' in values["8"]
    assert values["9"] == "22"
    assert "warning: Unexpected size of section" not in r.stderr.decode()


TREE_SUBJECT = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    pid_t sleeper = fork();
    if (sleeper == 0) { for (;;) pause(); }
    pid_t quitter = fork();
    if (quitter == 0) _exit(7);            /* stays a zombie: nobody reaps it */
    usleep(100000);
    FILE *f = fopen(argv[1], "w"); fprintf(f, "%d %d %d\n", getpid(), sleeper, quitter); fclose(f);
    for (;;) pause();
}
"""


def test_process_tree(env, tmp_path):
    src = tmp_path / "tree.c"
    src.write_text(TREE_SUBJECT)
    binary = tmp_path / "tree"
    run("cc", "-O0", "-o", binary, src)
    ready = tmp_path / "ready"
    p = env.start([binary, ready], tmp_path / "tree.out")
    wait_for(ready)
    parent, sleeper, quitter = map(int, ready.read_text().split())
    env.pids += [sleeper, quitter]
    images = tmp_path / "images"
    images.mkdir()
    r = cryo("dump", "-t", parent, "-D", images, "-o", "dump.log", check=False)
    if r.returncode != 0:
        pytest.skip("this cryo cannot dump the tree: " + r.stderr.decode().strip())
    p.wait(timeout=10)
    for pid in (sleeper, quitter):
        env.reap(pid)
    assert cryo("x", images, "ps").stdout == run(CRIT, "x", images, "ps").stdout
    summary = json.loads(cryo("inspect", images, "--json").stdout)
    states = {q["pid"]: (q["state"], q["depth"]) for q in summary["processes"]}
    assert states == {parent: ("alive", 0), sleeper: ("alive", 1), quitter: ("zombie", 1)}
    out = cryo("coredump", "-D", images, "-o", tmp_path / "cores").stdout.decode()
    assert f"{quitter}: zombie, no core" in out
    assert (tmp_path / "cores" / f"core.{parent}").is_file() and (tmp_path / "cores" / f"core.{sleeper}").is_file()
    text = cryo("x", images, "mems").stdout.decode()
    assert f"{quitter}\n\t(zombie)" in text


# ---------------------------------------------------------------------------------------------
# corrupt, truncated and foreign images


def mutations(data: bytes, rng: random.Random):
    yield b""
    yield data[: len(data) // 2]
    yield data[:-1]
    yield b"\x7fELF" + data[4:]
    for _ in range(4):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] = rng.choice([0, 0xFF, 0x80, b[i] ^ (1 << rng.randrange(8))])
        yield bytes(b)


def test_corrupt_images_give_clear_errors(dumped, tmp_path):
    images, pid, _, _ = dumped
    rng = random.Random(1234)
    copy = tmp_path / "images"
    shutil.copytree(images, copy)
    failures = 0
    for f in image_files(images) + [next(images.glob("pages-*.img"))]:
        target = copy / f.name
        original = f.read_bytes()
        for data in mutations(original, rng):
            target.write_bytes(data)
            commands = [["x", copy, "ps"], ["x", copy, "mems"], ["inspect", copy, "--json"],
                        ["memparse", copy, "--search", "CRYO-SECRET"], ["coredump", "-D", copy, "-o", tmp_path / "cores"]]
            if not f.name.startswith("pages-"):
                commands += [["show", target], ["decode", "-i", target, "--pretty"]]
            for command in commands:
                r = cryo(*command, check=False, timeout=60)
                err = r.stderr.decode(errors="replace")
                assert r.returncode in (0, 1), f"{command} on mutated {f.name}: exit {r.returncode}\n{err}"
                if r.returncode == 1 and err:
                    failures += 1
                    assert err.startswith("Error: "), err
                    assert err.count("\n") == 1, err
                    if command[0] in ("show", "decode"):
                        assert str(target) in err and "offset" in err, err
        target.write_bytes(original)
    assert failures > 0


# ---------------------------------------------------------------------------------------------
# The figure: memparse --search over a 1 GiB image (a benchmark, not a test: `-m bench` runs
# it; Scripts/test deselects it)


@pytest.mark.bench
def test_bench_memparse_search_1gib(env, tmp_path):
    size_mib = int(os.environ.get("CRYO_INSPECT_BENCH_MIB", "1024"))
    src = tmp_path / "big.c"
    src.write_text(BIG_SUBJECT)
    binary = tmp_path / "big"
    run("cc", "-O2", "-o", binary, src)
    ready = tmp_path / "ready"
    p = env.start([binary, ready, size_mib], tmp_path / "big.out")
    wait_for(ready, timeout=120)
    images = tmp_path / "images"
    images.mkdir()
    cryo("dump", "-t", p.pid, "-D", images, timeout=600)
    p.wait(timeout=30)
    pages = sum(f.stat().st_size for f in images.glob("pages-*.img"))
    try:
        measure_search(images, pages, tmp_path)
    finally:
        shutil.rmtree(images)  # do not leave a gigabyte behind in pytest's temporary directories


def measure_search(images: Path, pages: int, tmp_path: Path) -> None:
    for label, drop in (("cold cache", True), ("warm cache", False)):
        if drop:
            subprocess.run(["sync"])
            Path("/proc/sys/vm/drop_caches").write_text("1\n")
        out = tmp_path / "search.out"
        start = time.monotonic()
        with open(out, "wb") as f:
            proc = subprocess.Popen([str(CRYO), "memparse", str(images), "--search", "NEEDLE-IN-A-GIGABYTE"],
                                    stdout=f, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0 and b"1 match of" in out.read_bytes(), out.read_text()
        print(f"\nmemparse --search over {pages / 2**30:.2f} GiB of pages ({label}): "
              f"{elapsed:.2f} s, peak RSS {usage.ru_maxrss / 1024:.1f} MiB")
