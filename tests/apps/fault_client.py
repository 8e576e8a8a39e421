"""Client-side helpers shared by the reliability tests (tests/integration/test_faults.py,
test_soak.py, tests/sanitize/): not a WSGI app. Reads uWSGI's stats socket the way uwsgitop does,
polls it in the background checking every document, drives wrk, and measures the master.
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

# The keys cowguard adds to the stats document (include/cowguard/stats_doc.h).
TOP_KEYS = {"version", "options", "frozen_objects", "freeze_ms", "warmup_ms", "totals"}
WORKER_KEYS = {"peak_private", "recycles"}  # always there; the sampled ones only once sampled
SAMPLED_KEYS = {"shared", "private", "swap", "minflt", "majflt", "minflt_per_request"}
GC_KEYS = {"enabled", "thresholds", "frozen", "collections", "collected", "uncollectable", "time_ms",
           "blocked_calls", "restored", "in_request", "after_request"}
# What the master logs when a worker's end surprised it (a kill we did on purpose says DAMN too).
SURPRISES = ["DAMN", "MISTERIOUSLY", "inconsistent state", "NO MERCY"]
# A new worker's sampled memory once showed before its slot was published, with peak_private 0
# (test_faults.py::test_new_worker_peak_private_never_below_private looks for this message).
PEAK_BELOW_PRIVATE = "peak_private below private"


def read_stats(port, timeout=5):
    """The raw bytes of one stats document: connect, read to EOF."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def stats(port, timeout=5):
    return json.loads(read_stats(port, timeout))


def policy_thresholds(log):
    """The workers' GC thresholds the master announced: "[cowguard] master: froze ... workers: gc
    between (thresholds 10000,20,100 in requests, ...)" (or "gc young (thresholds 10000,20,100)",
    "gc thresholds 700,10,10"; None for "gc off")."""
    m = re.search(r"workers: gc (?:(?:young|between) \(thresholds ([\d,]+)[ )]|thresholds ([\d,]+)|off)", log)
    assert m, f"no policy line in the log:\n{log[-3000:]}"
    text = m.group(1) or m.group(2)
    if text is None:
        return None
    return [int(v) for v in text.split(",")]


def check_document(doc, thresholds):
    """Problems with one merged stats document (empty list: none); `thresholds` as
    policy_thresholds() gives them (None: gc off, the GC must be disabled). A worker's figures may be
    absent while it is being respawned (not sampled yet, slot not published); when present they
    must be whole and right."""
    problems = []
    top = doc.get("cowguard")
    if not isinstance(top, dict) or not TOP_KEYS <= set(top):
        return [f"top-level cowguard object missing or incomplete: {top!r:.200}"]
    if not isinstance(doc.get("workers"), list):
        return ["no workers array"]
    for w in doc["workers"]:
        cg = w.get("cowguard")
        if cg is None:
            continue
        if not WORKER_KEYS <= set(cg):
            problems.append(f"worker {w.get('id')} pid {w.get('pid')}: cowguard keys {sorted(cg)}")
        if "shared" in cg and not SAMPLED_KEYS <= set(cg):
            problems.append(f"worker {w.get('id')}: partial sampled keys {sorted(cg)}")
        if "uss" in w and "rss" in w and w["uss"] > w["rss"]:
            problems.append(f"worker {w.get('id')} pid {w.get('pid')}: uss {w['uss']} > rss {w['rss']}")
        if "private" in cg and cg["peak_private"] < cg["private"]:
            problems.append(f"{PEAK_BELOW_PRIVATE}: worker {w.get('id')} pid {w.get('pid')}: peak_private "
                            f"{cg['peak_private']} < private {cg['private']}")
        if cg.get("recycles", 0) != 0:
            problems.append(f"worker {w.get('id')}: recycles {cg['recycles']} without a memory limit")
        gc = cg.get("gc")
        if gc is not None:
            if set(gc) != GC_KEYS:
                problems.append(f"worker {w.get('id')}: gc keys {sorted(gc)}")
            elif gc["frozen"] <= 0 or (gc["enabled"] if thresholds is None else
                                       (gc["thresholds"][:len(thresholds)] != thresholds or not gc["enabled"])):
                problems.append(f"worker {w.get('id')} pid {w.get('pid')}: gc {gc}")
    return problems


class StatsPoller:
    """Reads the stats socket every `interval` seconds in a thread, checking every document.
    Connection failures (the socket is re-bound during a graceful reload) are counted apart."""

    def __init__(self, port, thresholds, interval=0.1):
        self.port, self.interval, self.thresholds = port, interval, thresholds
        self.documents = 0
        self.unreachable = 0
        self.problems = []
        self.last = None
        self.pids_seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.is_set():
            try:
                raw = read_stats(self.port)
            except OSError:
                self.unreachable += 1
                self._stop.wait(self.interval)
                continue
            try:
                doc = json.loads(raw)
            except ValueError as e:
                self.problems.append(f"not JSON ({e}): {raw[:200]!r}")
            else:
                self.documents += 1
                self.last = doc
                self.pids_seen.update(w["pid"] for w in doc.get("workers", []) if w.get("pid"))
                self.problems += check_document(doc, self.thresholds)
            self._stop.wait(self.interval)


def wait_settled(port, live_pids, thresholds, timeout=20):
    """Waits until the stats show exactly `live_pids()` as the workers, each with its sampled
    figures and gc object; returns that document."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            doc = stats(port)
        except OSError:
            time.sleep(0.1)
            continue
        last = doc
        pids = sorted(w["pid"] for w in doc["workers"])
        ok = pids == sorted(live_pids()) and all(
            "cowguard" in w and "gc" in w["cowguard"] and "shared" in w["cowguard"] for w in doc["workers"])
        if ok and not check_document(doc, thresholds):
            return doc
        time.sleep(0.1)
    raise AssertionError(f"stats never settled on the live workers {sorted(live_pids())}: "
                         f"{json.dumps(last)[:3000] if last else None}")


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return sorted(int(p) for p in out.stdout.split())


def reload_and_wait(u, workers, timeout=60):
    """SIGHUP to the master (a graceful reload); returns once the master said it respawned and at
    least `workers` of its children are new, none of the old ones left."""
    old = set(children(u.proc.pid))
    spawned = u.log().count("gracefully (RE)spawned uWSGI master process")
    u.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = set(children(u.proc.pid))
        if (u.log().count("gracefully (RE)spawned uWSGI master process") > spawned and len(now) >= workers
                and not now & old):
            return
        time.sleep(0.05)
    raise AssertionError(f"no new workers after SIGHUP:\n{u.log()[-4000:]}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return sorted(out)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(m?s|m)\b")


def parse_wrk(text):
    m = WRK_TOTAL.search(text)
    assert m, f"no request count in wrk's output:\n{text}"
    errors = dict(zip(["connect", "read", "write", "timeout"], map(int, WRK_ERRORS.search(text).groups()))) \
        if WRK_ERRORS.search(text) else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    non2xx = int(WRK_NON2XX.search(text).group(1)) if WRK_NON2XX.search(text) else 0
    return {"requests": int(m.group(1)), "errors": errors, "socket_errors": sum(errors.values()),
            "non2xx": non2xx, "text": text}


class Wrk:
    """wrk in the background; stop() sends SIGINT (wrk then prints its summary) and parses it."""

    def __init__(self, url, threads=2, connections=8, duration="10s", timeout="10s"):
        self.proc = subprocess.Popen(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}",
                                      "--timeout", timeout, url],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self, timeout=120):
        out, _ = self.proc.communicate(timeout=timeout)
        return parse_wrk(out)
