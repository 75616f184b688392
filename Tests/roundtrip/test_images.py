"""The images Cryo writes are CRIU images: Debian's crit (CRIU 3.17's decoder) reads them, and
their key fields say what /proc said about the process at dump time."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import CRIT, ROUNDTRIP_SUBJECTS, read_maps, task_ids

# Files each subject keeps open (names relative to its work dir).
OPEN_FILES = {
    "counter": ["counter.log"],
    "files": ["ro.txt", "append.log", "rw.dat", "dup.dat", "high.dat"],
}
# Files each subject maps (the mapping alone keeps them).
MAPPED_FILES = {
    "memory": ["private.dat", "shared.dat"],
}


def crit_env():
    # /usr/bin/crit runs Debian's python3 with pycriu; keep pytest's interpreter settings out.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYENV"))}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def crit_decode(path: Path) -> dict:
    if not os.access(CRIT, os.X_OK):
        pytest.fail(f"{CRIT} is missing (apt-get install criu)")
    r = subprocess.run([CRIT, "decode", "-i", str(path)], capture_output=True, text=True,
                       env=crit_env(), timeout=120)
    assert r.returncode == 0, f"crit decode -i {path.name} failed:\n{r.stderr[-3000:]}"
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError as e:
        pytest.fail(f"crit decode -i {path.name} printed no JSON ({e}):\n{r.stdout[:2000]}")


def as_int(v):
    return int(v, 0) if isinstance(v, str) else int(v)


def decode_all(images: Path) -> dict[str, dict]:
    imgs = sorted(p for p in images.glob("*.img") if not p.name.startswith("pages-"))
    assert imgs, f"no images in {images}"
    return {p.name: crit_decode(p) for p in imgs}


def fd_numbers(pid):
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize("name", ROUNDTRIP_SUBJECTS)
def test_crit_reads_every_image(h, name):
    s = h.start_subject(name)
    tids = task_ids(s.pid)
    maps = read_maps(s.pid) if name != "mixed" else None  # mixed remaps as it runs
    fds = fd_numbers(s.pid)
    h.dump(s, "--leave-running")
    h.finish(s.pid)

    dec = decode_all(h.images)
    for must in ("inventory.img", "pstree.img", f"core-{s.pid}.img", f"mm-{s.pid}.img",
                 f"pagemap-{s.pid}.img", "files.img"):
        assert must in dec, f"{must} missing; images: {sorted(dec)}"
    assert dec["inventory.img"]["magic"] == "INVENTORY"

    # pstree: one process, our pid, our threads.
    pstree = dec["pstree.img"]["entries"]
    assert len(pstree) == 1, f"pstree has {len(pstree)} entries"
    assert pstree[0]["pid"] == s.pid
    assert sorted(pstree[0]["threads"]) == tids, (
        f"pstree threads {pstree[0]['threads']}, /proc said {tids}")

    # core: one per thread, x86_64 with registers.
    for tid in tids:
        core_name = f"core-{tid}.img"
        assert core_name in dec, f"{core_name} missing for thread {tid}"
        core = dec[core_name]["entries"][0]
        assert core["mtype"] == "X86_64", f"{core_name}: mtype {core.get('mtype')}"
        ti = core.get("thread_info", {})
        assert "gpregs" in ti, f"{core_name}: no thread_info.gpregs"
        assert as_int(ti["gpregs"]["ip"]) != 0, f"{core_name}: ip is 0"
    main_core = dec[f"core-{s.pid}.img"]["entries"][0]
    assert "tc" in main_core, "core of the leader has no task core (tc)"

    # mm: a vma for each mapping /proc listed.
    if maps is not None:
        mm = dec[f"mm-{s.pid}.img"]["entries"][0]
        vmas = {(as_int(v["start"]), as_int(v["end"])) for v in mm["vmas"]}
        missing = [f"{a:x}-{b:x} {p} {n}" for a, b, p, n in maps
                   if (a, b) not in vmas and n != "[vsyscall]"]
        assert not missing, "mm image lacks vmas for:\n" + "\n".join(missing)

    # files: every regular file the subject had open or mapped, and every fd number.
    entries = dec["files.img"]["entries"]
    reg_names = {e["reg"]["name"] for e in entries if e.get("type") == "REG" and "reg" in e}
    for fn in OPEN_FILES.get(name, []) + MAPPED_FILES.get(name, []):
        want = str(s.work / fn)
        assert want in reg_names or want.lstrip("/") in reg_names, (
            f"files.img has no REG entry for {want}; it has {sorted(reg_names)}")
    fdinfos = [k for k in dec if k.startswith("fdinfo-")]
    assert fdinfos, "no fdinfo-*.img"
    dumped_fds = sorted(e["fd"] for k in fdinfos for e in dec[k]["entries"])
    assert dumped_fds == fds, f"fdinfo images hold fds {dumped_fds}, /proc said {fds}"

    # pagemap: the pages it lists are exactly what pages-N.img holds.
    pm = dec[f"pagemap-{s.pid}.img"]["entries"]
    pages_id = pm[0]["pages_id"]
    pages_img = h.images / f"pages-{pages_id}.img"
    assert pages_img.exists(), f"pagemap names pages-{pages_id}.img, which does not exist"
    npages = sum(e["nr_pages"] for e in pm[1:] if not e.get("in_parent"))
    assert npages * 4096 == pages_img.stat().st_size, (
        f"pagemap lists {npages} pages, {pages_img.name} has {pages_img.stat().st_size} bytes")
