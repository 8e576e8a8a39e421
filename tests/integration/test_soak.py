"""Issue #9: a soak. 200,000 requests through 4 workers recycled every 1000 requests (about 200
respawns), with the stats socket read every quarter second throughout.

wrk (2 threads, 8 connections) runs until the stats' total requests (the sum of the workers'
"requests", which uWSGI keeps per worker id across respawns) pass 200,000; the load has a hard
deadline so a machine too slow for the soak fails with its measured rate rather than hanging CI.
"""
import re
import sys
import time

from conftest import APPS, free_port

sys.path.insert(0, str(APPS))
from fault_client import (SURPRISES, StatsPoller, Wrk, children, fd_count, fd_targets,  # noqa: E402
                          policy_thresholds, rss_kb, wait_settled)

TARGET = 200_000
MAX_REQUESTS = 1000
WORKERS = 4
LOAD_DEADLINE_S = 200
# The master forks ~200 workers and serves ~800 stats documents over the soak; the 4 MB allow for
# glibc's arenas of the sampler and stats threads and uWSGI's own bookkeeping settling after the
# first reading, and are far below what a leak per respawn or per document would add (a leaked
# document is ~5 kB: x800 = 4 MB; a leaked /proc read buffer is 16 kB: x200 = 3 MB would pass, so
# descriptors, which must not move at all, are the sharper check for leaks per respawn).
RSS_SLACK_KB = 4 * 1024


def test_soak_200k_requests_with_recycled_workers(uwsgi):
    sp = free_port()
    # --forkbomb-delay 0: uWSGI otherwise sleeps 2 s when more than `workers` respawns happen within a
    # second, which this rate of recycling reaches now and then.
    u = uwsgi(["--workers", WORKERS, "--module", "fault_app", "--add-header", "Connection: close",
               "--stats", f"127.0.0.1:{sp}", "--cowguard-stats-interval", "0.5",
               "--max-requests", MAX_REQUESTS, "--min-worker-lifetime", 0, "--forkbomb-delay", 0,
               "--disable-logging"]).wait_ready()
    u.wait_log("[cowguard] master: froze")
    thresholds = policy_thresholds(u.log())
    u.every_worker("/", WORKERS)
    wait_settled(sp, lambda: children(u.proc.pid), thresholds)
    master = u.proc.pid
    fds0, rss0, targets0 = fd_count(master), rss_kb(master), fd_targets(master)

    over_limit = []  # (worker id, delta_requests) above max-requests, from any document
    started = time.monotonic()
    with StatsPoller(sp, thresholds, interval=0.25) as poller:
        wrk = Wrk(f"http://127.0.0.1:{u.port}/", threads=2, connections=8, duration=f"{LOAD_DEADLINE_S + 60}s")
        total = 0
        while time.monotonic() - started < LOAD_DEADLINE_S:
            time.sleep(0.25)
            doc = poller.last
            if doc:
                total = sum(w["requests"] for w in doc["workers"])
                over_limit += [(w["id"], w["delta_requests"]) for w in doc["workers"]
                               if w["delta_requests"] > MAX_REQUESTS]
                if total >= TARGET + 100:
                    break
        result = wrk.stop()
        elapsed = time.monotonic() - started
        settled = wait_settled(sp, lambda: children(u.proc.pid), thresholds)
    rate = result["requests"] / elapsed
    print(f"soak: {result['requests']} requests in {elapsed:.1f} s ({rate:.0f}/s), stats total {total}, "
          f"{poller.documents} stats documents, errors {result['errors']}, non-2xx {result['non2xx']}")
    assert total >= TARGET, (f"only {total} requests in {LOAD_DEADLINE_S} s ({rate:.0f}/s): this machine is too "
                             f"slow or too busy for the soak\n{result['text']}")
    assert result["requests"] >= TARGET, result["text"]
    assert result["socket_errors"] == 0 and result["non2xx"] == 0, result["text"]

    # every stats document read during the soak was whole and right
    assert poller.documents >= elapsed * 2 and not poller.problems, poller.problems[:5]
    assert poller.unreachable == 0, poller.unreachable
    assert not over_limit, over_limit[:10]

    # the recycling happened, every worker's exit was an ordinary one
    log = u.log()
    surprises = [line for line in log.splitlines() if any(s in line for s in SURPRISES)]
    assert not surprises, "\n".join(surprises[:10])
    assert "Traceback" not in log
    recycled = log.count("The work of process")
    assert recycled >= TARGET // MAX_REQUESTS - WORKERS, recycled
    exits = [int(n) for n in re.findall(r"\[cowguard\] worker \d+ \(pid \d+\) exiting: (\d+) requests", log)]
    # (a worker may be between its "Seeya" line and its exit line as the log is read)
    assert recycled - WORKERS <= len(exits) <= recycled and max(exits) <= MAX_REQUESTS, (len(exits), recycled)
    # each recycled worker served exactly max-requests requests (cowguard's slot counter agrees with uWSGI)
    assert exits.count(MAX_REQUESTS) == len(exits), sorted(set(exits))
    assert len(poller.pids_seen) >= recycled, (len(poller.pids_seen), recycled)

    # the settled document: the live workers, each with its own figures
    assert sorted(w["pid"] for w in settled["workers"]) == children(master)
    for w in settled["workers"]:
        cg = w["cowguard"]
        assert w["uss"] <= w["rss"] and cg["gc"]["frozen"] > 0 and cg["recycles"] == 0, w
        assert w["delta_requests"] <= MAX_REQUESTS, w

    # the master: same descriptors, flat memory
    fds1, rss1, targets1 = fd_count(master), rss_kb(master), fd_targets(master)
    assert fds1 == fds0, f"master descriptors: {fds0} -> {fds1}\n{targets0}\n{targets1}"
    assert rss1 - rss0 <= RSS_SLACK_KB, f"master RSS: {rss0} kB -> {rss1} kB"
    print(f"soak: {recycled} recycles, master fds {fds0} -> {fds1}, master RSS {rss0} -> {rss1} kB")
    assert u.stop() == 0
