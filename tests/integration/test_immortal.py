"""Issue #14: cowguard-immortalize. On Python 3.12 and later the master makes its frozen heap
immortal after the freeze; the workers (asked themselves, tests/apps/immortal_heap.py) see the
immortal reference count, answer exactly as without it, keep the guard, run their atexit handlers,
and copy far less of a heap their requests read. On Python 3.11 `true` refuses to start and `auto`
says it is off.

The Python checked is the one these tests run under: the same system's /usr/bin/python3, whose
libpython the uWSGI python plugin links.
"""
import concurrent.futures
import json
import random
import re
import statistics
import sys
import time

import pytest

from conftest import APPS, free_port, private_kb, read_stats

HAS_IMMORTAL = sys.version_info >= (3, 12)
needs_immortal = pytest.mark.skipif(not HAS_IMMORTAL, reason="Python < 3.12 has no immortal objects")
without_immortal = pytest.mark.skipif(HAS_IMMORTAL, reason="this Python has immortal objects")

# What each Python's own headers make an immortal count read as through sys.getrefcount: 3.12/3.13
# write _Py_IMMORTAL_REFCNT (UINT_MAX), 3.14 _Py_IMMORTAL_INITIAL_REFCNT (3 << 30); both have the
# low 32 bits' sign bit set, which is what their Py_DECREF tests. A mortal count here is tiny.
IMMORTAL_MIN = 1 << 31
STARTUP = re.compile(r"\[cowguard\] master: froze (\d+) objects in [\d.]+ ms \([^)]*\), "
                     r"immortalized (\d+) objects in ([\d.]+) ms[;,]")


def start(uwsgi, tmp_path, rows, workers=2, extra=(), env=None):
    args = ["--workers", workers, "--module", "immortal_heap", "--env", f"HEAP_ROWS={rows}",
            "--env", f"ATEXIT_DIR={tmp_path}"] + list(extra)
    return uwsgi(args, env=env)


def startup_line(u, pattern=STARTUP, timeout=60):
    """The master's startup line (logged once the app is loaded, after the socket is bound)."""
    deadline = time.monotonic() + timeout
    while not (m := pattern.search(u.log())):
        assert time.monotonic() < deadline and u.proc.poll() is None, u.log()[-3000:]
        time.sleep(0.1)
    return m


def load(u, workers, per_worker, seeds):
    """Sends /read requests (seeds from `seeds`) until every one of `workers` pids answered at
    least `per_worker` of them; returns {pid: answers}."""
    counts = {}
    deadline = time.monotonic() + 120
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        while len(counts) < workers or min(counts.values()) < per_worker:
            assert time.monotonic() < deadline, (counts, u.log()[-3000:])
            for doc in ex.map(lambda s: u.get_json(f"/read?seed={s}"), [next(seeds) for _ in range(16)]):
                counts[doc["pid"]] = counts.get(doc["pid"], 0) + 1
    return counts


@needs_immortal
def test_workers_see_an_immortal_heap_and_the_figures(uwsgi, tmp_path):
    stats_port = free_port()
    u = start(uwsgi, tmp_path, 20000, extra=["--stats", f"127.0.0.1:{stats_port}"]).wait_ready()
    m = startup_line(u)
    frozen, immortal = int(m.group(1)), int(m.group(2))
    # Every row: a frozen list, plus its untracked str, float, tuple and the tuple's str.
    assert frozen > 20000 and immortal > frozen + 4 * 20000, (frozen, immortal)
    states = u.every_worker("/state", 2)
    for s in states.values():
        assert all(n >= IMMORTAL_MIN for n in s["refcounts"].values()), s["refcounts"]
        if sys.version_info >= (3, 14):
            assert all(s["is_immortal"].values()), s["is_immortal"]
        assert s["stats"]["immortal_objects"] == immortal, s["stats"]
        assert s["stats"]["gc"]["frozen"] == frozen, "the walk must leave every object in the permanent generation"
    top = read_stats(stats_port)["cowguard"]
    assert top["immortal_objects"] == immortal and top["immortalize_ms"] > 0, top
    assert top["options"]["cowguard-immortalize"] == "auto"
    # The guard is unchanged: gc.unfreeze() is blocked, the heap stays frozen. The count may grow:
    # on 3.12+ a collection moves the immortal objects it meets in a young generation to the
    # permanent one (gc.c update_refs), and cowguard-gc = between collects after requests (2
    # objects here on 3.13: immortalized untracked objects the requests' code tracked again).
    after = u.get_json("/unfreeze")
    assert after["frozen"] >= frozen, after
    u.wait_log("blocked gc.unfreeze() called from")


@needs_immortal
def test_answers_identical_and_atexit_handlers_run(uwsgi, tmp_path):
    runs = {}
    for value in ("false", "true"):
        d = tmp_path / value
        d.mkdir()
        runs[value] = start(uwsgi, d, 20000, extra=["--cowguard-immortalize", value])
    answers = {}
    for value, u in runs.items():
        u.wait_ready()
        answers[value] = [{k: v for k, v in u.get_json(f"/read?seed={s}").items() if k != "pid"} for s in range(40)]
    assert answers["false"] == answers["true"]
    startup_line(runs["true"])
    startup_line(runs["false"], re.compile(r"immortalize off[;,]"))
    immortal = runs["true"]
    states = immortal.every_worker("/state", 2)
    assert immortal.stop() == 0
    # Each worker's handler wrote its file at its exit (fast exit runs the atexit handlers).
    assert sorted(int(p.name) for p in (tmp_path / "true").iterdir()) == sorted(states), immortal.log()[-3000:]


@needs_immortal
def test_workers_reading_the_heap_stay_private_free(uwsgi, tmp_path):
    """Side by side, 300k rows, 2 workers each: with immortal objects a worker that reads the rows
    no longer copies their pages."""
    rng = random.Random(14)
    seeds = iter(lambda: rng.randrange(1 << 30), None)
    runs = {value: start(uwsgi, tmp_path, 300000, extra=["--cowguard-immortalize", value]) for value in ("false", "true")}
    private_mb = {}
    for value, u in runs.items():
        u.wait_ready(timeout=90)
        counts = load(u, 2, 300, seeds)
        private_mb[value] = statistics.mean(private_kb(pid) for pid in counts) / 1024
    # 300 requests of 1000 random rows touch nearly every page of the rows.
    assert private_mb["false"] > 20, private_mb
    assert private_mb["true"] < 0.2 * private_mb["false"], private_mb


@without_immortal
def test_true_refuses_on_a_python_without_immortal_objects(uwsgi, tmp_path):
    u = start(uwsgi, tmp_path, 100, extra=["--cowguard-immortalize", "true"])
    assert u.wait_exit() != 0
    lines = [line for line in u.log().splitlines() if line.startswith("[cowguard]")]
    version = "%d.%d.%d" % sys.version_info[:3]
    assert lines == [f"[cowguard] cowguard-immortalize: true needs a Python with immortal objects (3.12 or later, "
                     f"not free-threaded); this uWSGI runs Python {version}: use auto or false"], u.log()


@without_immortal
def test_auto_is_off_on_a_python_without_immortal_objects(uwsgi, tmp_path):
    u = start(uwsgi, tmp_path, 100).wait_ready()
    version = "%d.%d.%d" % sys.version_info[:3]
    startup_line(u, re.compile(re.escape(f"immortalize off (auto: Python {version} has no immortal objects)") + "[;,]"))
    s = u.get_json("/state")
    assert s["stats"]["immortal_objects"] == 0 and max(s["refcounts"].values()) < 1000, s
