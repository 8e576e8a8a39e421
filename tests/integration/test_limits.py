"""Issue #6 (first part): memory limits on private memory. The master's sampler reads every
worker's smaps_rollup each cowguard-stats-interval; over cowguard-reload-on-uss/-pss a worker is
recycled after its next request (gracefully), over cowguard-evil-reload-on-uss/-pss the master
kills it at once. Unlike uWSGI's reload-on-rss, memory a worker shares with the master (the
preloaded, frozen app) does not count against the uss limit.

Real uWSGI masters (conftest.py) running tests/apps/limits_*.py.
"""
import re
import threading
import time
import urllib.error

import pytest

from conftest import APPS, free_port, private_kb, read_stats, smaps_rollup, wait_for

MB = 1024 * 1024
INTERVAL = "0.2"
# What the master says when a worker's exit surprised it.
BAD_EXIT = ["DAMN", "MISTERIOUSLY", "inconsistent state", "NO MERCY"]



def start(uwsgi, app, extra=(), workers=1, cowguard=True):
    stats = free_port()
    args = ["--workers", workers, "--wsgi-file", APPS / app, "--stats", f"127.0.0.1:{stats}",
            # uWSGI sleeps 2 s ("respawning too fast") when workers respawn faster than one per
            # worker and second; these tests respawn on purpose.
            "--forkbomb-delay", "0"]
    if cowguard:
        args += ["--cowguard-stats-interval", INTERVAL]
    u = uwsgi(args + list(extra), cowguard=cowguard).wait_ready()
    u.stats = stats
    return u


def worker1(u):
    return next(w for w in read_stats(u.stats)["workers"] if w["id"] == 1)


def own_mb(pid, kind):
    """The worker's figure a cowguard-reload-on-<kind> limit compares, in MB, from its smaps_rollup;
    None once the worker is gone (recycled right after the answer just read)."""
    try:
        r = smaps_rollup(pid)
    except OSError:
        return None
    kb = r["Pss"] if kind == "pss" else r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
    return kb * 1024 / MB


# ---- graceful: recycled after the next request ---------------------------------------------------

@pytest.mark.parametrize("kind,stats", [("uss", "true"), ("pss", "true"), ("uss", "false")])
def test_leaking_worker_is_recycled(uwsgi, kind, stats):
    # cowguard-stats = false: the master still samples the workers for the limits; the stats
    # document is then uWSGI's own, without cowguard's figures.
    u = start(uwsgi, "limits_leak.py", ["--cowguard-reload-on-" + kind, "60", "--cowguard-stats", stats])
    first = u.get_json("/")["pid"]
    t0 = time.monotonic()
    answers = []
    over_at = None  # leaked_mb of the answer after which /proc put the worker over the limit
    for _ in range(40):
        r = u.get_json("/leak")
        answers.append(r)
        if r["pid"] != first:
            break
        if (own_mb(first, kind) or 0) > 60:
            over_at = over_at or r["leaked_mb"]
            # Over the limit by /proc: the next request is the one the worker is recycled after,
            # once the sampler has seen it (every 0.2 s, later on a busy machine): wait for that.
            wait_for(lambda: f"worker 1 (pid {first}) will be recycled" in u.log(), 30, "the limit noticed", u.log)
    took = time.monotonic() - t0
    pids = [a["pid"] for a in answers]
    assert pids[-1] != first, f"never recycled:\n{u.log()}"
    leaked_at_recycle = max(a["leaked_mb"] for a in answers if a["pid"] == first)
    log = u.log()
    m = re.search(rf"\[cowguard\] worker 1 \(pid {first}\) will be recycled after its current request: "
                  rf"{kind} ([\d.]+) MB > cowguard-reload-on-{kind} 60 MB", log)
    assert m, log
    assert float(m.group(1)) > 60
    assert f"[cowguard] recycling worker 1 (pid {first}) after its request: over its memory limit" in log
    assert log.index(m.group(0)) < log.index(f"recycling worker 1 (pid {first})")
    # Exactly once: the flag is logged when set, not every round.
    assert log.count(f"worker 1 (pid {first}) will be recycled") == 1
    # Recycled after the request that took it over 60 MB (by /proc), or after the next one: never
    # before. Where it crosses depends on the worker's own size (its pss is larger on 3.14: it
    # crossed at 45 MB leaked there, at 50-55 on 3.11).
    if over_at is not None:
        assert over_at <= leaked_at_recycle <= over_at + 5, (over_at, answers)
    assert 40 <= leaked_at_recycle <= 90, answers
    # The new worker starts small, and the recycles counter survives the respawn.
    if stats == "true":
        w = wait_for(lambda: (w := worker1(u))["pid"] == pids[-1] and "uss" in w and w, 10, "new worker sampled",
                     u.log)
        assert w["uss"] < 40 * MB
        assert w["cowguard"]["recycles"] >= 1
    else:
        assert "cowguard" not in read_stats(u.stats)
        assert private_kb(pids[-1]) * 1024 < 40 * MB
    m_exit = re.search(rf"\[cowguard\] worker 1 \(pid {first}\) exiting: \d+ requests, peak private ([\d.]+) MB", log)
    assert m_exit and float(m_exit.group(1)) > 60, log
    for text in BAD_EXIT:
        assert text not in log, log
    print(f"\n[limits] reload-on-{kind} 60 (cowguard-stats {stats}): recycled at {leaked_at_recycle} MB leaked "
          f"({kind} {m.group(1)} MB when flagged), {len(answers)} requests, {took:.1f} s")


def test_respawned_worker_starts_a_new_peak(uwsgi):
    u = start(uwsgi, "limits_leak.py", ["--cowguard-reload-on-uss", "60"])
    first = u.get_json("/")["pid"]
    for _ in range(40):
        pid = u.get_json("/leak")["pid"]
        if pid != first:
            break
        time.sleep(0.1)
    assert pid != first, u.log()
    # The new worker sampled (later than 0.6 s on a busy machine: the fixed sleep gave no "uss" once).
    w = wait_for(lambda: (w := worker1(u))["pid"] == pid and "uss" in w and w, 30, "new worker sampled", u.log)
    assert w["uss"] < 40 * MB
    u.stop_idle()
    m = re.search(rf"\[cowguard\] worker 1 \(pid {pid}\) exiting: 1 requests, peak private ([\d.]+) MB", u.log())
    assert m, u.log()
    # The new process leaked 5 MB once: its own peak is about its uss, nowhere near 60 MB.
    assert w["cowguard"]["peak_private"] < 40 * MB, (w["cowguard"]["peak_private"] / MB, w["uss"] / MB)
    assert float(m.group(1)) < 40, m.group(0)


def test_shared_heap_is_not_counted_by_uss_but_is_by_rss(uwsgi):
    # 1.5M bytes objects built in the master: ~220 MB of rss in each worker, nearly all shared.
    limit = 150
    common = ["--min-worker-lifetime", "0"]  # uWSGI's reload-on-rss waits 10 s by default
    cg = start(uwsgi, "limits_shared.py", common + ["--cowguard-reload-on-uss", limit])
    stock = start(uwsgi, "limits_shared.py", common + ["--reload-on-rss", limit])  # cowguard loaded too

    first = cg.get_json("/")["pid"]
    w = wait_for(lambda: (w := worker1(cg))["pid"] == first and "uss" in w and w, 10, "worker sampled", cg.log)
    print(f"\n[limits] shared heap worker: rss {w['rss'] / MB:.0f} MB, uss {w['uss'] / MB:.1f} MB, "
          f"shared {w['cowguard']['shared'] / MB:.0f} MB; limit {limit} MB")
    assert w["rss"] > limit * MB > w["uss"], w  # the premise: rss over the limit, uss far under it
    assert smaps_rollup(first)["Rss"] * 1024 > limit * MB

    # uWSGI's master notices an exited worker within its 1 s loop, so each stock recycle costs
    # up to a second: the stock instance gets 10 requests, in a thread, while cowguard's gets 30.
    stock_pids = []
    stock_thread = threading.Thread(target=lambda: stock_pids.extend(stock.get_json("/")["pid"] for _ in range(10)))
    stock_thread.start()
    cg_pids = set()
    for _ in range(30):
        cg_pids.add(cg.get_json("/")["pid"])
        time.sleep(0.05)
    time.sleep(0.5)  # a few sampling rounds after the last request
    cg_pids.add(cg.get_json("/")["pid"])
    stock_thread.join(60)
    print(f"[limits] cowguard-reload-on-uss {limit}: 30 requests, {len(cg_pids)} worker pid(s); "
          f"reload-on-rss {limit}: 10 requests, {len(set(stock_pids))} worker pids")
    assert cg_pids == {first}, cg.log()
    assert "will be recycled" not in cg.log()
    assert worker1(cg)["cowguard"]["recycles"] == 0
    # uWSGI's reload-on-rss recycles the worker after every request (each new worker's rss is
    # over the limit from its first request on).
    assert len(stock_pids) == 10 and len(set(stock_pids)) >= 9, (stock_pids, stock.log())
    assert "will be recycled" not in stock.log()
    assert private_kb(first) * 1024 < limit * MB


# ---- evil: killed by the master ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["uss", "pss"])
def test_evil_limit_kills_a_worker_stuck_in_its_request(uwsgi, kind):
    u = start(uwsgi, "limits_evil.py", ["--cowguard-evil-reload-on-" + kind, "100"])
    first = u.get_json("/")["pid"]
    result = {}

    def stuck_request():
        try:
            u.get("/grab?mb=150", timeout=40)  # allocates 150 MB, then sleeps 30 s
            result["outcome"] = "answered"
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            result["outcome"] = repr(e)
        result["at"] = time.monotonic()

    t0 = time.monotonic()
    t = threading.Thread(target=stuck_request, daemon=True)
    t.start()
    # A new worker answers: poll the app (each poll waits for a worker to be free).
    # Within the request's 30 s sleep (an answer would mean the kill came too late), however busy
    # the machine: on a fresh trixie at load 19 the kill and respawn took more than 5 s.
    new = wait_for(lambda: (p := u.get_json("/", timeout=10)["pid"]) != first and p, 28, "new worker", u.log)
    respawned = time.monotonic() - t0
    t.join(30)
    assert not t.is_alive()
    assert result["outcome"] != "answered", "the request must fail: its worker was killed"
    log = u.log()
    m = re.search(rf"\[cowguard\] killing worker 1 \(pid {first}\) now: {kind} ([\d.]+) MB > "
                  rf"cowguard-evil-reload-on-{kind} 100 MB", log)
    assert m, log
    assert float(m.group(1)) > 100
    assert log.count(f"killing worker 1 (pid {first})") == 1
    assert re.search(rf"worker 1 \(pid: {first}\) died, killed by signal 9", log), log
    assert new != first
    assert worker1(u)["cowguard"]["recycles"] >= 1
    print(f"\n[limits] evil-reload-on-{kind} 100: request failed after {result['at'] - t0:.2f} s "
          f"({result['outcome']}); new worker answered {respawned:.2f} s after the request started")
    assert respawned < 28, respawned
