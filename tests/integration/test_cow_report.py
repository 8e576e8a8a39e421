"""Issue #8: the copy-on-write report (cowguard.cow_report(), cowguard-cow-report = DIR).

Apps: tests/apps/cow_mutate.py (120,000 frozen CowDistinctive instances that /mutate?n=N writes),
cow_idle.py (a 60,000-record read-only cache its requests never touch), cow_bigheap.py (about
1 GB of frozen one-item lists). Each asks the worker itself for its report through /report.
"""
import json
import os
import re
import shutil
import stat
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import APPS, private_kb, smaps_rollup

PAGE = 4096
KEYS = {"pid", "worker", "generated_at", "duration_ms", "mappings", "frozen"}
FROZEN_KEYS = {"objects", "bytes", "private_objects", "private_bytes", "shared_objects", "shared_bytes",
               "unknown_objects", "by_type", "by_module"}


def type_counts(report, name):
    """The by_type entry of `name`, or zeros when it is not in the list (the list holds the top 50
    types by private bytes: a type with nothing copied may be left out)."""
    for t in report["frozen"]["by_type"]:
        if t["type"] == name:
            return t
    return {"type": name, "objects": 0, "bytes": 0, "private_objects": 0, "private_bytes": 0}


def py_private(report):
    return report["mappings"]["python_objects"]["private"]


def check_shape(doc):
    assert KEYS <= set(doc), doc.keys()
    assert "error" not in doc, doc["error"]
    assert FROZEN_KEYS <= set(doc["frozen"]), doc["frozen"].keys()
    f = doc["frozen"]
    assert f["objects"] == f["private_objects"] + f["shared_objects"] + f["unknown_objects"]
    if f["unknown_objects"] == 0:  # unknown objects' bytes are in neither
        assert f["bytes"] == f["private_bytes"] + f["shared_bytes"]
    for kind, sp in doc["mappings"].items():
        assert set(sp) == {"shared", "private"}, (kind, sp)
    assert "python_objects" in doc["mappings"], doc["mappings"]
    assert all("type" in t for t in f["by_type"]) and all("module" in m for m in f["by_module"])
    # the code objects of the frozen functions: every app here has functions made at import
    c = doc["code"]
    assert FROZEN_KEYS - {"by_type", "by_module"} == set(c), c
    assert c["objects"] > 100 and c["objects"] == c["private_objects"] + c["shared_objects"] + c["unknown_objects"], c


# ---- what the report says ----------------------------------------------------------------------

def test_mutated_class_ranks_first_and_grows_with_the_mutation(uwsgi):
    u = uwsgi(["--workers", 1, "--module", "cow_mutate"]).wait_ready()
    r0 = u.get_json("/report")
    check_shape(r0)
    base = type_counts(r0, "CowDistinctive")
    assert base["private_objects"] < 1000, base  # nothing mutated yet

    u.get("/mutate?n=10000")
    r1 = u.get_json("/report")
    u.get("/mutate?n=60000")
    r2 = u.get_json("/report")
    p0, p1, p2 = (type_counts(r, "CowDistinctive")["private_objects"] for r in (r0, r1, r2))
    print(f"\nCowDistinctive private objects: {p0} -> {p1} (10k mutated) -> {p2} (60k mutated); "
          f"python_objects private {py_private(r0)} -> {py_private(r1)} -> {py_private(r2)} bytes; "
          f"top types after: {[t['type'] for t in r2['frozen']['by_type'][:3]]}")

    for r in (r1, r2):
        top = r["frozen"]["by_type"][0]
        assert top["type"] == "CowDistinctive", r["frozen"]["by_type"][:3]
        assert top["objects"] == 120_000
    # Objects share pages (48 bytes each: 85 on a 4 KB page), so the count is of objects on
    # copied pages: every mutated one, plus the neighbours on the last page it wrote.
    assert 10_000 <= p1 <= 10_000 + p0 + 2 * 85, p1
    assert 60_000 <= p2 <= 60_000 + p0 + 2 * 85, p2
    ratio = (p2 - p0) / (p1 - p0)
    assert 5.0 <= ratio <= 7.0, ratio  # 6x the objects mutated, 6x the objects copied
    assert type_counts(r2, "CowDistinctive")["private_bytes"] >= 60_000 * 48
    # The python_objects mappings' private bytes grow with it: 50,000 more objects of 48 bytes
    # copied between r1 and r2 is at least 2.4 MB more.
    assert py_private(r0) < py_private(r1) < py_private(r2)
    assert py_private(r1) - py_private(r0) >= 10_000 * 48 * 0.9
    assert py_private(r2) - py_private(r1) >= 50_000 * 48 * 0.9


def test_idle_app_keeps_frozen_objects_shared(uwsgi):
    """Requests that mutate nothing. The frozen objects on copied pages are a fixed set, the same
    after 1 request or 400 (about 4,000 objects, 0.4 MB, measured: the interpreter's own objects
    that the worker's start and its request path write - types, builtins, module dicts - and the
    neighbours of new allocations in part-used pymalloc pools), not a share of the app's heap: on
    this app's ~128,000 frozen objects that is about 3.3%. The bound, 5%, leaves half again as
    much room; the app's own records must stay shared but for the edge pages of their run."""
    u = uwsgi(["--workers", 1, "--module", "cow_idle"]).wait_ready()
    first = u.get_json("/report")
    for _ in range(200):
        u.get("/")
    mid = u.get_json("/report")
    for _ in range(200):
        u.get("/")
    last = u.get_json("/report")
    check_shape(last)
    f = last["frozen"]
    frac = f["private_objects"] / f["objects"]
    frac_bytes = f["private_bytes"] / f["bytes"]
    rec = type_counts(last, "CowIdleRecord")
    print(f"\nidle app after 400 requests: {f['private_objects']} of {f['objects']} frozen objects on copied "
          f"pages ({frac:.2%}; {f['private_bytes']} of {f['bytes']} bytes, {frac_bytes:.2%}); after 1 request "
          f"{first['frozen']['private_objects']}, after 200 {mid['frozen']['private_objects']}; "
          f"CowIdleRecord {rec['private_objects']} of 60000; top {[(t['type'], t['private_objects']) for t in f['by_type'][:5]]}")
    assert f["objects"] > 120_000
    assert frac < 0.05, frac
    assert f["private_bytes"] < 1024 * 1024
    # The records (56 bytes: 64-byte blocks, 64 to a page) stay shared but for at most the first
    # and last page of their run, which other allocations share.
    assert rec["private_objects"] <= 2 * 64, rec
    # Serving more requests copies (almost) nothing more.
    assert last["frozen"]["private_objects"] - mid["frozen"]["private_objects"] < 0.005 * f["objects"]


# ---- what the report costs ---------------------------------------------------------------------

def test_report_memory_cost_is_small(uwsgi):
    u = uwsgi(["--workers", 1, "--module", "cow_mutate"]).wait_ready()
    pid = u.get_json("/")["pid"]
    deltas = []
    for _ in range(7):  # the first report included: it is the one that allocates the most
        before = private_kb(pid)
        doc = u.get_json("/report")
        after = private_kb(pid)
        assert doc["pid"] == pid
        deltas.append(after - before)
    med = statistics.median(deltas)
    print(f"\nworker uss change across one /report (kB): {deltas}, median {med}")
    assert abs(med) < 1024, deltas
    assert max(deltas) < 1024, deltas


def cpu_ms(pid):
    """CPU time (user + system) the process has used, in ms, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def test_report_duration_on_a_1gb_heap(uwsgi):
    """About 1 GB of frozen objects: 8,000,000 one-item lists (~128 bytes of heap each, counting
    their item arrays and ints; building them and the master's collection take ~3 s here). The
    cost is scaled to exactly 1 GiB of the worker's anonymous memory (smaps_rollup's Anonymous:
    the heap, ~0.9 GiB), and taken as the CPU time the worker spent on the fastest of 5 reports:
    the report's own cost. Its wall time also counts what other processes take from it on the
    2-core machine (the fastest of 5 was 1.5-3.6 s on a machine at load 10, 3 of its 5 helpers
    busy). The walk must also write none of the objects: the worker's private memory barely moves."""
    u = uwsgi(["--workers", 1, "--module", "cow_bigheap"], env={"COW_HEAP_OBJECTS": "8000000"}).wait_ready(60)
    # The master builds, collects, freezes (and on 3.12+ immortalizes) 8 M objects before the
    # worker answers: a minute and more on a busy 2-core machine (30 s was not enough in trixie).
    pid = u.get_json("/", timeout=180)["pid"]
    anon_kb = smaps_rollup(pid)["Anonymous"]
    durations, cpu, uss = [], [], [private_kb(pid)]
    for _ in range(5):
        cpu0 = cpu_ms(pid)
        doc = u.get_json("/report", timeout=60)
        cpu.append(cpu_ms(pid) - cpu0)
        durations.append(doc["duration_ms"])
        uss.append(private_kb(pid))
    gib = anon_kb / (1024 * 1024)
    per_gib = min(cpu) / gib
    print(f"\n1 GB heap: {doc['frozen']['objects']} frozen objects, worker anonymous {anon_kb / 1024:.0f} MB; "
          f"report CPU {[round(c) for c in cpu]} ms, wall {[round(d) for d in durations]} ms: "
          f"fastest {per_gib:.0f} CPU ms per GiB, fastest wall {min(durations) / gib:.0f} ms per GiB; "
          f"worker uss {uss} kB; frozen private objects {doc['frozen']['private_objects']}")
    assert doc["frozen"]["objects"] >= 8_000_000
    assert anon_kb > 800 * 1024, anon_kb
    # Not free: the report did walk the heap.
    assert min(cpu) > 0, (cpu, durations)
    # Measured fastest-of-5 CPU per GiB: 177 ms on 3.11; 797 to 1006 on 3.13 and 908 to 1228 on
    # 3.14, the same walk and pagemap reads (why 3.13+ costs 4.5-6x more is open: README, "Debian
    # releases and Pythons"). The bound is 5x what each measured at its fastest, not a target.
    assert per_gib < (1000 if sys.version_info < (3, 12) else 2000), (cpu, durations, anon_kb)
    # Had the walk written to each object (a reference count), every page of the heap would be
    # copied: ~900 MB. Allow the report's own allocations.
    assert uss[-1] - uss[0] < 2048, uss
    assert doc["frozen"]["private_objects"] < 0.001 * doc["frozen"]["objects"]


def test_walk_writes_no_frozen_object(uwsgi):
    """Measured through the report itself: once the first reports have loaded what they need,
    each further report leaves the python_objects mappings' private bytes within a page or two of
    the one before, and copies none of the 120,000 CowDistinctive instances it walks over (their
    private count moves only when a request's allocation copied a page)."""
    u = uwsgi(["--workers", 1, "--module", "cow_mutate"]).wait_ready()
    for _ in range(3):
        u.get("/report")
    reports = [u.get_json("/report") for _ in range(9)]
    growth = [py_private(b) - py_private(a) for a, b in zip(reports, reports[1:])]
    cow = [type_counts(r, "CowDistinctive")["private_objects"] for r in reports]
    total = [r["frozen"]["private_objects"] for r in reports]
    print(f"\npython_objects private growth per report (bytes): {growth}; CowDistinctive private {cow}; "
          f"frozen private objects {total}")
    # The request's own allocations (json.loads of the report, its response) land in part-used
    # pools now and then: a page, sometimes a few; on average at most two.
    assert sum(growth) <= 2 * PAGE * len(growth), growth
    assert statistics.median(growth) <= PAGE, growth
    # Frozen objects newly on copied pages: only those on the pages the requests' own allocations
    # copied (a 4 KB page holds up to ~75 small objects; the report is bigger since it has its
    # code section), never the walked ones. A CowDistinctive instance can share a pool page with a
    # hole that a request allocates into (forky CI: 72 -> 73 while 5 pages were copied), so its
    # count may move only with the copied pages; had the walk written the 120,000 instances, it
    # would jump by thousands after the first report.
    pages_copied = sum(growth) // PAGE
    # (One page of slack: the net growth can hide a copied page when an arena of the requests'
    # own objects is released in the same step.)
    assert cow[-1] - cow[0] <= 75 * (1 + pages_copied), (cow, growth)
    assert total[-1] - total[0] < 100 * (1 + pages_copied), (total, growth)


# ---- the files ---------------------------------------------------------------------------------

def report_files(d):
    return sorted(p.name for p in d.iterdir() if re.fullmatch(r"cow-\d+-\d+\.json", p.name))


def wait_files(d, n, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = report_files(d)
        if len(names) >= n:
            return names
        time.sleep(0.1)
    raise AssertionError(f"{n} report files expected in {d}, found {report_files(d)}")


def load_report(path):
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode), path
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    doc = json.loads(path.read_text())
    check_shape(doc)
    return doc


def test_report_file_at_exit(uwsgi, tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    u = uwsgi(["--workers", 1, "--module", "cow_mutate", "--cowguard-cow-report", d]).wait_ready()
    pid = u.get_json("/")["pid"]
    u.get("/mutate?n=5000")
    assert report_files(d) == []
    # A worker still finishing its request when the stop arrives writes nothing, like the python
    # plugin's atexit: let it go back to accept first.
    time.sleep(0.3)
    assert u.stop() == 0
    path = d / f"cow-1-{pid}.json"
    assert path.exists(), (report_files(d), u.log())
    doc = load_report(path)
    assert doc["pid"] == pid and doc["worker"] == 1
    assert abs(doc["generated_at"] - time.time()) < 120
    assert doc["frozen"]["by_type"][0]["type"] == "CowDistinctive"
    m = re.search(rf"\[cowguard\] worker 1 \(pid {pid}\) copy-on-write report at exit: frozen objects on copied "
                  rf"pages: (\d+) .* -> (\S+)\n", u.log())
    assert m, u.log()
    assert int(m.group(1)) == doc["frozen"]["private_objects"]
    assert os.path.samefile(m.group(2), path)


def test_trigger_makes_every_worker_write_now(uwsgi, tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    u = uwsgi(["--workers", 2, "--module", "cow_idle", "--cowguard-cow-report", d]).wait_ready()
    u.wait_log("copy-on-write reports: each worker writes")
    pids = u.worker_pids()
    assert len(pids) == 2
    assert (d / "trigger").exists(), "the master creates the trigger file"
    os.utime(d / "trigger")
    names = wait_files(d, 2)
    assert u.proc.poll() is None, "still running"
    seen = {}
    for name in names:
        wid, pid = map(int, re.fullmatch(r"cow-(\d+)-(\d+)\.json", name).groups())
        doc = load_report(d / name)
        assert doc["pid"] == pid and doc["worker"] == wid
        seen[wid] = pid
    assert sorted(seen) == [1, 2] and sorted(seen.values()) == pids, (seen, pids)
    for wid, pid in seen.items():
        u.wait_log(f"[cowguard] worker {wid} (pid {pid}) copy-on-write report on signal: frozen objects on copied pages:")


def test_symlink_at_the_report_path_is_not_followed(uwsgi, tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("untouched\n")
    u = uwsgi(["--workers", 1, "--module", "cow_idle", "--cowguard-cow-report", d]).wait_ready()
    pid = u.get_json("/")["pid"]
    path = d / f"cow-1-{pid}.json"
    # The would-be path to an existing file, and its temporary sibling to a file not there yet.
    path.symlink_to(victim)
    (d / f"cow-1-{pid}.json.tmp").symlink_to(outside / "created")
    os.utime(d / "trigger")
    u.wait_log(f"worker 1 (pid {pid})")
    assert u.stop() == 0
    log = u.log()
    assert victim.read_text() == "untouched\n", "the report went through the symlink"
    assert not (outside / "created").exists(), "the report went through the symlink"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    # Instead the report either replaced the link with a file of its own, or refused and said so.
    print(f"\nplanted symlink at the report path: now {'still a symlink' if path.is_symlink() else 'a regular file'}")
    if path.is_symlink():
        assert f"cannot write the copy-on-write report into {d}" in log, log
    else:
        assert load_report(path)["pid"] == pid


@pytest.mark.parametrize("what", ["file", "missing", "symlink"])
def test_report_dir_must_be_a_directory(uwsgi, tmp_path, what):
    target = tmp_path / "not-a-dir"
    if what == "file":
        target.write_text("x")
    elif what == "symlink":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
    u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py", "--cowguard-cow-report", target])
    rc = u.wait_exit(30)
    log = u.log()
    assert rc != 0, log
    lines = [l for l in log.splitlines() if "cowguard-cow-report" in l]
    assert lines == [f"[cowguard] cowguard-cow-report: '{target}' is not a directory (a symlink is refused too); "
                     f"create it first"], log
    assert "spawned uWSGI worker" not in log
    assert "WSGI app 0" not in log  # refused before the app loads


@pytest.mark.parametrize("case", ["root-only", "unreachable"])
def test_report_dir_checked_after_the_privilege_drop(uwsgi, tmp_path, case):
    """uWSGI runs as root here and drops to nobody (--uid): a directory nobody cannot write to, or
    cannot even reach, is refused before the app loads, rather than failing in every worker at exit."""
    # pytest's tmp_path sits under a 0700 directory: "unreachable" uses it as is.
    base = Path(tempfile.mkdtemp(prefix="cg-uid-", dir="/tmp")) if case == "root-only" else tmp_path
    try:
        os.chmod(base, 0o755)
        d = base / "root-only"
        d.mkdir(mode=0o700)
        u = uwsgi(["--uid", "nobody", "--gid", "nogroup", "--workers", 1, "--wsgi-file", APPS / "gcstate.py",
                   "--cowguard-cow-report", d])
        rc = u.wait_exit(30)
        log = u.log()
    finally:
        if case == "root-only":
            shutil.rmtree(base)
    assert rc != 0, log
    why = "is not writable by this process (uid 65534)" if case == "root-only" else \
        "cannot be reached by this process (uid 65534): Permission denied"
    lines = [l for l in log.splitlines() if "cowguard-cow-report" in l]
    assert len(lines) == 1 and lines[0].startswith(f"[cowguard] cowguard-cow-report: '{d}' {why}"), log
    assert "WSGI app 0" not in log


# The report is set up in the master in every mode: with lazy-apps (apps load in the workers)
# and with cowguard-freeze = false too.
MODES = [pytest.param(["--lazy-apps"], id="lazy-apps"), pytest.param(["--cowguard-freeze", "false"], id="no-freeze")]


@pytest.mark.parametrize("mode", MODES)
def test_report_dir_is_checked_in_every_mode(uwsgi, tmp_path, mode):
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py", "--cowguard-cow-report", target] + mode)
    try:
        rc = u.wait_exit(5)
    except AssertionError:
        rc = None  # still running: it accepted a file as the report directory
    assert rc is not None and rc != 0, u.log()
    assert "[cowguard] cowguard-cow-report: '%s' is not a directory" % target in u.log()


@pytest.mark.parametrize("mode", MODES)
def test_trigger_works_in_every_mode(uwsgi, tmp_path, mode):
    d = tmp_path / "reports"
    d.mkdir()
    u = uwsgi(["--workers", 2, "--module", "cow_idle", "--cowguard-cow-report", d] + mode).wait_ready()
    u.every_worker("/", 2)
    (d / "trigger").touch()
    os.utime(d / "trigger")
    wait_files(d, 2, timeout=5)
