"""Issue #9: fault injection with real uWSGI and cowguard (tests/apps/fault_app.py).

Workers die in the middle of requests (SIGKILL, SIGSEGV sent from outside, a real segmentation
fault, harakiri), the master reloads gracefully 20 times in a row, workers are recycled after every
request under load, and wrk runs through 5 graceful reloads. Throughout, a thread reads the stats
socket (connect, read to EOF, as uwsgitop does) and checks every document (fault_client.py):
valid JSON, cowguard's top-level object, and every worker's figures whole and right when present
(gc frozen > 0, thresholds of `cowguard-gc = young`, uss <= rss). After the faults: the stats show
exactly the live workers, each with its figures (the shared-memory slots were reused correctly),
every worker answers with the GC policy applied, and the master's open descriptors and RSS are
what they were before.
"""
import os
import re
import signal
import sys
import threading
import time
import urllib.request

import pytest

from conftest import APPS, free_port

sys.path.insert(0, str(APPS))
from fault_client import (PEAK_BELOW_PRIVATE, SURPRISES, StatsPoller, Wrk, check_document,  # noqa: E402
                          children, fd_targets, policy_thresholds, reload_and_wait, rss_kb, stats, wait_settled)

WORKERS = 2
# Slack for the master's RSS after the faults. The master's own work between the two readings is
# the sampler and stats threads' allocations (a snapshot map, one JSON document per client, glibc
# per-thread arenas) and uWSGI's bookkeeping; none of it grows with the number of faults. 3 MB is
# under what a leaked document (~4 kB) per stats read or a leaked /proc buffer (16 kB) per respawn
# would add here (hundreds of documents, ~100 respawns), and above the few hundred kB the arenas
# wander by. Descriptors, which must not move at all, are the sharper check.
RSS_SLACK_KB = 3 * 1024


def start(uwsgi, *extra, workers=WORKERS, cowguard=True):
    sp = free_port()
    args = ["--workers", workers, "--module", "fault_app", "--add-header", "Connection: close",
            "--stats", f"127.0.0.1:{sp}"]
    if cowguard:
        args += ["--cowguard-stats-interval", "0.2"]
    u = uwsgi(args + [str(a) for a in extra], cowguard=cowguard).wait_ready()
    u.stats_port = sp
    u.thresholds = None  # stock: no policy to check
    if cowguard:
        u.wait_log("[cowguard] master: froze")
        u.thresholds = policy_thresholds(u.log())  # cowguard-gc = young, as this build defines it
    return u


def live_workers(u):
    return lambda: children(u.proc.pid)


def answer_all(u, n=WORKERS, timeout=20):
    """Every worker answers /gc, with cowguard's GC policy applied after its fork; returns {pid: doc}."""
    seen = u.every_worker("/gc", n, timeout=timeout)
    for pid, doc in seen.items():
        if u.thresholds is not None:
            gc = doc["gc"]
            assert gc["enabled"] and gc["threshold"][:len(u.thresholds)] == u.thresholds and gc["frozen"] > 0, doc
    return seen


def master_figures(u, timeout=10):
    """(descriptors, RSS kB, descriptor targets) of the master, read while its sampler has no
    /proc/PID file open: the sampler opens one for a moment per process and round (seen: 26 -> 27
    descriptors, the extra one /proc/<worker>/smaps_rollup, on a busy machine). A leaked descriptor
    stays; the sampler's goes within its read."""
    deadline = time.monotonic() + timeout
    while True:
        targets = fd_targets(u.proc.pid)
        if not any(t.startswith("/proc/") for t in targets) or time.monotonic() > deadline:
            return len(targets), rss_kb(u.proc.pid), targets
        time.sleep(0.01)


def assert_master_flat(u, before, what):
    fds0, rss0, targets0 = before
    fds1, rss1, targets1 = master_figures(u)
    assert fds1 == fds0, f"master descriptors after {what}: {fds0} -> {fds1}\n{targets0}\n{targets1}"
    assert rss1 - rss0 <= RSS_SLACK_KB, f"master RSS after {what}: {rss0} kB -> {rss1} kB"


def settle(u, n=WORKERS):
    """Live workers all answer and the stats show exactly them, each with figures."""
    answer_all(u, n)
    return wait_settled(u.stats_port, live_workers(u), u.thresholds)


def request_in_thread(u, path, timeout=30):
    out = {}

    def run():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{u.port}{path}", timeout=timeout) as r:
                out["status"] = r.status
                out["body"] = r.read()
        except Exception as e:  # the worker died under it: connection reset / empty reply
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def sleeping_worker(u, pidfile, timeout=10):
    """(id, pid) of the worker that wrote `pidfile` at the start of its /sleep request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pidfile.exists():
            pid = int(pidfile.read_text())
            for w in stats(u.stats_port)["workers"]:
                if w["pid"] == pid:
                    assert w["status"] == "busy", w
                    return w["id"], pid
        time.sleep(0.05)
    raise AssertionError("no worker started the request")


def wait_respawned(u, wid, old_pid, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for w in stats(u.stats_port)["workers"]:
                if w["id"] == wid and w["pid"] not in (0, old_pid) and w["pid"] in children(u.proc.pid):
                    return w["pid"]
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"worker {wid} (pid {old_pid}) not respawned:\n{u.log()}")


def check_log(u):
    """The log of a run where no worker should die: no surprised master, no traceback."""
    log = u.log()
    surprises = [line for line in log.splitlines() if any(s in line for s in SURPRISES)]
    assert not surprises, "\n".join(surprises)
    assert "Traceback" not in log, log
    return log


# ---- workers killed in the middle of requests ---------------------------------------------------

@pytest.mark.parametrize("how", ["SIGKILL", "SIGSEGV", "segfault"])
def test_worker_dies_mid_request(uwsgi, tmp_path, how):
    """A worker killed while it serves a request (SIGKILL or SIGSEGV from outside, or a real
    segmentation fault in the app) is respawned by the master with cowguard's GC policy and a
    fresh slot; the other requests are served; nothing leaks in the master. Three times each."""
    u = start(uwsgi)
    settle(u)
    before = master_figures(u)
    with StatsPoller(u.stats_port, u.thresholds) as poller:
        for i in range(3):
            if how == "segfault":
                t, out = request_in_thread(u, "/segv")
                wid = None
            else:
                pidfile = tmp_path / f"sleeping-{i}"
                t, out = request_in_thread(u, f"/sleep?s=20&pidfile={pidfile}")
                wid, pid = sleeping_worker(u, pidfile)
                os.kill(pid, signal.SIGKILL if how == "SIGKILL" else signal.SIGSEGV)
            t.join(30)
            assert not t.is_alive()
            assert "error" in out, f"the request outlived its worker: {out}"
            if wid is not None:
                wait_respawned(u, wid, pid)
            # the other worker(s) and the respawned one serve
            answer_all(u)
        settled = settle(u)
    assert poller.documents > 10 and not poller.problems, poller.problems[:5]
    log = u.log()
    if how == "SIGKILL":
        assert log.count("died, killed by signal 9 :( trying respawn") == 3, log
    else:
        # uWSGI's SIGSEGV handler logs a backtrace and exits: the master sees an exit, not a signal
        assert log.count("got Segmentation Fault !!!") == 3, log
        assert len(re.findall(r"DAMN ! worker \d+ \(pid: \d+\) died :\( trying respawn", log)) == 3, log
    assert "MISTERIOUSLY" not in log and "inconsistent state" not in log, log
    # pids in the stats are the live workers, each with a fresh slot
    assert sorted(w["pid"] for w in settled["workers"]) == children(u.proc.pid)
    for w in settled["workers"]:
        assert w["cowguard"]["gc"]["frozen"] > 0 and w["cowguard"]["gc"]["thresholds"] == u.thresholds, w
    assert_master_flat(u, before, f"3 workers killed by {how}")
    assert u.stop() == 0


def test_crashed_worker_runs_no_python_at_exit(uwsgi, tmp_path):
    """A worker that crashes in C code with the GIL held (as a buggy extension does) runs no more
    Python on its way out: no copy-on-write report from the SIGSEGV handler."""
    reports = tmp_path / "cow"
    reports.mkdir()
    u = start(uwsgi, "--cowguard-cow-report", reports)
    settle(u)
    t, out = request_in_thread(u, "/segv?gil=1")
    t.join(30)
    assert "error" in out, out
    u.wait_log("Respawned uWSGI worker")
    crashed = int(re.search(r"uWSGI process (\d+) got Segmentation Fault", u.log()).group(1))
    settle(u)
    written = sorted(p.name for p in reports.glob(f"cow-*-{crashed}.json"))
    assert not written, f"the crashed worker {crashed} wrote {written} from uWSGI's SIGSEGV handler"


def test_new_worker_peak_private_never_below_private(uwsgi):
    """While a new worker runs a slow post-fork hook (2 s), every stats document still has
    peak_private >= private for it."""
    sp = free_port()
    u = uwsgi(["--workers", 1, "--module", "fault_slow_postfork", "--stats", f"127.0.0.1:{sp}",
               "--cowguard-stats-interval", "0.1"], env={"FAULT_POSTFORK_SLEEP": "2"}).wait_ready()
    u.wait_log("[cowguard] master: froze")
    thresholds = policy_thresholds(u.log())
    u.get("/")  # the first worker is set up
    pid = children(u.proc.pid)[0]
    os.kill(pid, signal.SIGKILL)
    bad, docs = [], 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            doc = stats(sp)
        except OSError:
            continue
        docs += 1
        bad += [p for p in check_document(doc, thresholds) if p.startswith(PEAK_BELOW_PRIVATE)]
        time.sleep(0.05)
    assert docs > 10
    assert not bad, bad[:3]


def test_harakiri(uwsgi):
    """--harakiri 2: the master kills every worker stuck in a 20 s request after 2 s (both at once,
    twice); each is respawned with the policy and a fresh slot; stats count the harakiris."""
    u = start(uwsgi, "--harakiri", 2)
    settle(u)
    before = master_figures(u)
    with StatsPoller(u.stats_port, u.thresholds) as poller:
        for _ in range(2):
            pids = children(u.proc.pid)
            threads = [request_in_thread(u, "/sleep?s=20") for _ in range(WORKERS)]
            for t, out in threads:
                t.join(30)
                assert not t.is_alive() and "error" in out, out
            deadline = time.monotonic() + 20
            while set(children(u.proc.pid)) & set(pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not set(children(u.proc.pid)) & set(pids), "harakiri'd workers still there"
            settled = settle(u)
    assert poller.documents > 10 and not poller.problems, poller.problems[:5]
    log = u.log()
    assert log.count("HARAKIRI ON WORKER") == 2 * WORKERS, log
    assert sum(w["harakiri_count"] for w in settled["workers"]) == 2 * WORKERS, settled["workers"]
    assert_master_flat(u, before, f"{2 * WORKERS} harakiris")
    assert u.stop() == 0


# ---- graceful reloads -----------------------------------------------------------------------------

def reload_and_answer(u):
    """A graceful reload; returns once every worker is new and answers (with cowguard's policy)."""
    reload_and_wait(u, WORKERS)
    answer_all(u)


def test_twenty_graceful_reloads(uwsgi):
    """20 graceful reloads in a row (SIGHUP, new workers each time): the master keeps its pid, its
    descriptors and its memory; every new generation has the policy, a fresh slot and its figures
    in the stats; no worker's end surprises the master."""
    u = start(uwsgi)
    settle(u)
    before = master_figures(u)
    with StatsPoller(u.stats_port, u.thresholds) as poller:
        for _ in range(20):
            reload_and_answer(u)
        settled = settle(u)
    assert poller.documents > 20 and not poller.problems, poller.problems[:5]
    log = check_log(u)
    assert log.count("gracefully (RE)spawned uWSGI master process") == 20
    assert log.count("[cowguard] master: froze") == 21
    assert sorted(w["pid"] for w in settled["workers"]) == children(u.proc.pid)
    assert_master_flat(u, before, "20 graceful reloads")
    assert u.stop() == 0


# ---- max-requests = 1 under load ----------------------------------------------------------------

def test_max_requests_one_under_load(uwsgi):
    """--max-requests 1: every request recycles its worker, under 10 s of wrk (8 connections, 8
    workers). No request fails, every exit is an ordinary one, the master forks a worker per request
    without a descriptor or memory leak, and the slots stay right: the settled stats show the live
    workers, each with frozen objects, the policy's thresholds and at most one request.

    uWSGI's master reaps and respawns a recycled worker in its next cycle (about once a second per
    worker, stock uWSGI alike), so the load is about `workers` requests a second."""
    workers = 8
    # --forkbomb-delay 0: uWSGI otherwise sleeps 2 s whenever more than `workers` respawns happen
    # within a second.
    u = start(uwsgi, "--max-requests", 1, "--min-worker-lifetime", 0, "--forkbomb-delay", 0, "--disable-logging",
              workers=workers)
    answer_all(u, workers)
    wait_settled(u.stats_port, live_workers(u), u.thresholds)
    before = master_figures(u)
    with StatsPoller(u.stats_port, u.thresholds) as poller:
        wrk = Wrk(f"http://127.0.0.1:{u.port}/", threads=2, connections=8, duration="10s").wait()
        settled = wait_settled(u.stats_port, live_workers(u), u.thresholds)
    log = check_log(u)
    recycled = log.count("The work of process")
    print(f"max-requests 1: {wrk['requests']} requests, {recycled} recycles, {poller.documents} stats documents")
    assert wrk["requests"] >= 20, wrk["text"]
    assert wrk["socket_errors"] == 0 and wrk["non2xx"] == 0, wrk["text"]
    assert poller.documents > 20 and not poller.problems, poller.problems[:5]
    assert recycled >= wrk["requests"], (recycled, wrk["requests"])
    exits = [int(n) for n in re.findall(r"\[cowguard\] worker \d+ \(pid \d+\) exiting: (\d+) requests", log)]
    assert len(exits) >= recycled and max(exits) <= 1, exits[:20]
    assert len(settled["workers"]) == workers
    for w in settled["workers"]:
        assert w["delta_requests"] <= 1 and w["cowguard"]["gc"]["frozen"] > 0, w
    assert_master_flat(u, before, f"{recycled} recycles")
    assert u.stop() == 0


# ---- no request lost across graceful reloads ------------------------------------------------------

def wrk_through_reloads(uwsgi, cowguard):
    """wrk for 10 s while the master reloads 5 times; (wrk's figures, stats poller or None)."""
    u = start(uwsgi, "--disable-logging", cowguard=cowguard)
    answer_all(u)
    poller = StatsPoller(u.stats_port, u.thresholds) if cowguard else None
    if poller:
        poller.__enter__()
    wrk = Wrk(f"http://127.0.0.1:{u.port}/", threads=2, connections=8, duration="10s")
    time.sleep(1)
    for _ in range(5):
        reload_and_answer(u)
        time.sleep(0.3)
    result = wrk.wait()
    if poller:
        poller.__exit__(None, None, None)
    log = u.log()
    assert log.count("gracefully (RE)spawned uWSGI master process") == 5, log[-3000:]
    assert u.stop() == 0
    return result, poller


def test_no_request_lost_across_graceful_reloads(uwsgi):
    """wrk (2 threads, 8 connections, 10 s) while the master reloads gracefully 5 times: uWSGI keeps
    the listening socket across the re-exec, so no connection is refused and no request answered
    with an error. Stock uWSGI is measured the same way in this test: cowguard may not lose more
    connections than it."""
    stock, _ = wrk_through_reloads(uwsgi, cowguard=False)
    ours, poller = wrk_through_reloads(uwsgi, cowguard=True)
    summary = (f"stock: {stock['requests']} requests, socket errors {stock['errors']}, non-2xx {stock['non2xx']}; "
               f"cowguard: {ours['requests']} requests, socket errors {ours['errors']}, non-2xx {ours['non2xx']}")
    print(summary)
    assert ours["requests"] > 500 and stock["requests"] > 500, summary
    # The listening socket is kept across the re-exec: no connection is refused or left waiting.
    for r in (stock, ours):
        assert r["errors"]["connect"] == 0 and r["errors"]["timeout"] == 0 and r["non2xx"] == 0, summary
    # A read error (a connection closed without an answer) happens now and then with stock uWSGI too:
    # uWSGI's gracefully_kill() exits at once when the worker's core is not in_request, which a
    # worker that has just accepted a connection is not yet. Measured over 7 runs of this test:
    # stock 1 run with 1 read error, cowguard 2 runs with 1. At most one such connection per worker
    # and reload; cowguard may not lose more than stock does beyond that one-per-worker noise.
    assert ours["socket_errors"] <= stock["socket_errors"] + WORKERS, summary
    assert ours["socket_errors"] <= 5 * WORKERS, summary
    assert poller.documents > 20 and not poller.problems, poller.problems[:5]
