#!/usr/bin/python3
"""cowguard's side-by-side benchmark (issue #3).

For each app (gcheavy, django) and each configuration (stock, skip-teardown, app-freeze,
article-recipe, cowguard, cowguard-gc-off) it runs the same uWSGI command line, worker count and
wrk load, and measures throughput, latency, per-worker memory (smaps_rollup), minor faults per
request, the time and host-memory spike of stopping 8 workers, and memory growth under a
reference-cycle load. Writes bench/results/<YYYYmmdd-HHMMSS>/results.json, PNG plots and uWSGI
logs, and prints a markdown table.

  COWGUARD_PLUGIN=$PWD/build/cowguard_plugin.so /usr/bin/python3 bench/run.py --quick   (<= 2 min)
  COWGUARD_PLUGIN=$PWD/build/cowguard_plugin.so /usr/bin/python3 bench/run.py --full    (<= 10 min)

Without COWGUARD_PLUGIN (or if the file is missing) the cowguard configurations are reported as
skipped. Stdlib + matplotlib only. All load goes to 127.0.0.1, bounded in time; every uWSGI
started here runs in its own process group and is SIGKILLed on any exit.
"""
import argparse
import atexit
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")
UWSGI = shutil.which("uwsgi") or "/usr/bin/uwsgi"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

APPS = {
    "gcheavy": {
        "wsgi_file": BENCH / "apps" / "gcheavy.py",
        "description": "gcheavy: 300k-row heap of 900k tracked containers (~95 MB); each request builds 3000 dicts",
        "wrk_script": None,
        "path": "/",
    },
    "heapread": {
        "wsgi_file": BENCH / "apps" / "heapread.py",
        "description": "heapread: 300k-row heap (~100 MB); each request reads 1000 random rows (bench/immortal.py)",
        "wrk_script": None,
        "path": "/",
    },
    "django": {
        "wsgi_file": BENCH / "apps" / "djangoproj" / "wsgi.py",
        "description": "Django 3.2 shop (SQLite, ORM + template inheritance); wrk rotates over 100 read-only pages",
        "wrk_script": BENCH / "wrk" / "django_mix.lua",
        "path": "/",
    },
}

CONFIGS = [
    # name, COWGUARD_BENCH_RECIPE, extra uWSGI args, needs the cowguard plugin
    ("stock", "", [], False),
    ("skip-teardown", "", ["--skip-atexit-teardown"], False),
    ("app-freeze", "app-freeze", [], False),
    ("article-recipe", "article-recipe", [], False),
    ("cowguard", "", [], True),
    ("cowguard-gc-off", "", ["--cowguard-gc", "off"], True),
    # issue 15: the two worker policies side by side, whichever is the default
    ("cowguard-young", "", ["--cowguard-gc", "young"], True),
    ("cowguard-between", "", ["--cowguard-gc", "between"], True),
]

# seconds: main load, /cycles load, stop-phase warm-up; whether to run the (warm) stop phase and the
# cold stop phase (workers that served only COLD_REQUESTS_PER_WORKER requests each before the stop).
# Quick mode skips the django stop phase and both cold stops to stay within 2 minutes on 2 cores.
DURATIONS = {
    "quick": {"gcheavy": {"load_s": 4, "cycles_s": 1, "warm_s": 2, "stop": True, "cold_stop": False,
                          "rounds": 0, "round_s": 4},
              "django": {"load_s": 3, "cycles_s": 1, "warm_s": 2, "stop": False, "cold_stop": False,
                         "rounds": 0, "round_s": 4}},
    "full": {"gcheavy": {"load_s": 10, "cycles_s": 5, "warm_s": 5, "stop": True, "cold_stop": True,
                         "rounds": 5, "round_s": 4},
             "django": {"load_s": 10, "cycles_s": 5, "warm_s": 5, "stop": True, "cold_stop": True,
                        "rounds": 0, "round_s": 4}},
}
# "rounds": the interleaved throughput phase (throughput_rounds): every configuration started at
# once, `round_s` of load on each in turn, `rounds` times; its medians are the req/s the ratios use,
# since one load per configuration moves with whatever the host does at that moment.
COLD_REQUESTS_PER_WORKER = 2
BUDGET_S = {"quick": 105, "full": 500}  # retries of noisy loads only happen within these

WRK_THREADS = 2
WRK_CONNECTIONS = 8
STOP_TIMEOUT_S = 90
FOREIGN_CPU_WARN_PCT = 10.0
PSS_EVERY = 3  # during a stop, sum the group's PSS every 3rd 10 ms MemAvailable sample
READY_TIMEOUT_S = 60


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ---------------------------------------------------------------- process bookkeeping

_LIVE = {}  # pid -> Popen of every uWSGI master started here (each leads its own process group)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    _LIVE.pop(proc.pid, None)


def kill_all():
    for proc in list(_LIVE.values()):
        _kill_group(proc)


def _on_signal(signum, _frame):
    kill_all()
    raise SystemExit(128 + signum)


atexit.register(kill_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def wait_group_gone(pgid, timeout=10.0):
    """Wait until no process of group pgid is left (workers die after the master on SIGKILL)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- /proc readers

def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return sorted(int(x) for x in f.read().split())
    except OSError:
        pass
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if stat_fields(int(d))[1] == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return sorted(out)


def stat_fields(pid):
    """Fields of /proc/PID/stat after the comm: [state, ppid, ...]; index i is field i+3."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    rest = data[data.rindex(")") + 2:].split()
    return [rest[0]] + [int(x) for x in rest[1:]]


def minflt(pid):
    return stat_fields(pid)[7]  # field 10 (minflt)


def smaps(pid):
    """Rss, Pss, shared and private (clean + dirty) of a process, in MB."""
    vals = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                vals[parts[0][:-1]] = int(parts[1])
    mb = 1024.0
    return {
        "rss": vals.get("Rss", 0) / mb,
        "pss": vals.get("Pss", 0) / mb,
        "shared": (vals.get("Shared_Clean", 0) + vals.get("Shared_Dirty", 0)) / mb,
        "private": (vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)) / mb,
    }


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def cpu_jiffies(pid):
    f = stat_fields(pid)
    return f[11] + f[12]  # utime + stime (fields 14, 15)


def host_busy_jiffies():
    """(process time, interrupt time) of the whole host from /proc/stat's cpu line."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    # user nice system idle iowait irq softirq steal. irq/softirq (mostly loopback TCP for the load
    # itself) is not in any process's utime/stime, so it is kept apart rather than called foreign;
    # steal (the hypervisor running something else) is capacity lost, so it counts as foreign.
    return v[0] + v[1] + v[2] + v[7], v[5] + v[6]


class CpuAccount:
    """How much CPU went to something other than this benchmark (uWSGI group, wrk, this runner)
    while a load ran: other engineers' builds and tests on the same 2 cores skew req/s."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.t0 = time.monotonic()
        self.host0, self.irq0 = host_busy_jiffies()
        self.ours0 = self._ours()
        self.self0 = self._self()

    def _ours(self):
        total = 0
        for p in self.pids:
            try:
                total += cpu_jiffies(p)
            except (OSError, IndexError):
                pass
        return total

    @staticmethod
    def _self():
        import resource

        a = resource.getrusage(resource.RUSAGE_SELF)
        b = resource.getrusage(resource.RUSAGE_CHILDREN)  # includes wrk once reaped
        return (a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime) * CLK_TCK

    def finish(self):
        wall = time.monotonic() - self.t0
        host, irq = host_busy_jiffies()
        host -= self.host0
        irq -= self.irq0
        group = self._ours() - self.ours0
        ours = group + (self._self() - self.self0)
        cap = wall * CLK_TCK * (os.cpu_count() or 1)
        return {
            "host_busy_pct": round(100.0 * (host + irq) / cap, 1) if cap else None,
            "irq_pct": round(100.0 * irq / cap, 1) if cap else None,
            "foreign_cpu_pct": round(max(0.0, 100.0 * (host - ours) / cap), 1) if cap else None,
            "group_cpu_s": group / CLK_TCK,
        }


def cpu_ms_per_request(account, wrk):
    """uWSGI's CPU (a CpuAccount.finish() result) per request wrk got answered, in ms."""
    return 1000.0 * account["group_cpu_s"] / wrk["requests"] if wrk["requests"] else None


def group_pss_mb(pids):
    """Summed PSS of the processes still alive among pids (zombies and gone ones count 0)."""
    total = 0.0
    for p in pids:
        try:
            total += smaps(p)["pss"]
        except OSError:
            pass
    return total


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# ---------------------------------------------------------------- uWSGI

class Uwsgi:
    """One uWSGI instance in its own process group. `override_cmd`/`port` replace the generated command line
    (bench/demo.py runs configs/demo.ini that way)."""

    def __init__(self, app, config, workers, plugin, logpath, override_cmd=None, port=None):
        self.app = app
        self.name, recipe, extra, needs_plugin = config
        self.port = port or free_port()
        self.logpath = logpath
        cmd = [UWSGI, "--master", "--workers", str(workers), "--plugin", "python3"]
        if needs_plugin:
            cmd += ["--plugin", plugin]
        cmd += ["--http-socket", "127.0.0.1:%d" % self.port, "--wsgi-file", str(APPS[app]["wsgi_file"]),
                "--die-on-term", "--disable-logging",
                # uWSGI's http-socket closes the connection after each response; saying so lets wrk
                # reconnect instead of counting every response as a read error
                "--add-header", "Connection: close"]
        cmd += extra
        self.cmd = cmd
        if override_cmd is not None:
            self.cmd = list(override_cmd)
        env = dict(os.environ)
        env.pop("COWGUARD_BENCH_RECIPE", None)
        if recipe:
            env["COWGUARD_BENCH_RECIPE"] = recipe
        self.env = env
        self.workers = workers
        self.proc = None
        self.logf = None

    def start(self):
        self.logf = open(self.logpath, "ab")
        self.logf.write(("$ %s%s\n" % ("COWGUARD_BENCH_RECIPE=%s " % self.env["COWGUARD_BENCH_RECIPE"]
                                       if "COWGUARD_BENCH_RECIPE" in self.env else "",
                                       " ".join(self.cmd))).encode())
        self.logf.flush()
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO))
        _LIVE[self.proc.pid] = self.proc
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("uWSGI exited with status %s during startup (see %s)"
                                   % (self.proc.returncode, self.logpath))
            try:
                body = self.get("/gc", timeout=2)
                if len(self.worker_pids()) >= self.workers:
                    return body
            except OSError as e:
                last_err = e
            time.sleep(0.1)
        raise RuntimeError("uWSGI not ready after %ss (%s; see %s)" % (READY_TIMEOUT_S, last_err, self.logpath))

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def get(self, path, timeout=5):
        with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
            if r.status != 200:
                raise OSError("HTTP %s" % r.status)
            return r.read()

    def worker_pids(self):
        return children(self.pid)

    def kill(self):
        if self.proc is not None:
            _kill_group(self.proc)
            wait_group_gone(self.proc.pid)
        if self.logf:
            self.logf.close()
            self.logf = None


# ---------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(out):
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s(?:\.0+)?%%\s+(\S+)" % pct, out, re.M)
        res["p%s_ms" % pct] = _ms(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    return res


def wrk_cmd(url, seconds, script=None, connections=WRK_CONNECTIONS):
    cmd = [WRK, "-t%d" % WRK_THREADS, "-c%d" % connections, "-d%ds" % seconds, "--latency"]
    if script:
        cmd += ["-s", str(script)]
    return cmd + [url]


def run_wrk(url, seconds, script=None, connections=WRK_CONNECTIONS, on_tick=None):
    """Run wrk for `seconds`; call on_tick(t) about every second meanwhile. Returns parsed output."""
    proc = subprocess.Popen(wrk_cmd(url, seconds, script, connections), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    t0 = time.monotonic()
    next_tick = t0 + 1.0
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now - t0 > seconds + 20:
                raise RuntimeError("wrk did not finish within %ss" % (seconds + 20))
            if on_tick and now >= next_tick:
                on_tick(now - t0)
                next_tick += 1.0
            time.sleep(min(0.05, max(0.0, next_tick - time.monotonic())))
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res = parse_wrk(out)
    if res["rps"] is None:
        raise RuntimeError("could not parse wrk output: %r" % out[-500:])
    return res


# ---------------------------------------------------------------- phases

def sample_workers(pids):
    out = {}
    for p in pids:
        try:
            out[p] = smaps(p)
        except OSError:
            pass
    return out


def main_phase(app, config, args, durations, plugin, logdir):
    """4 workers: load on the app's page, memory sampled every second, then /cycles load."""
    u = Uwsgi(app, config, args.workers, plugin, logdir / ("%s-%s-main.log" % (app, config[0])))
    res = {}
    try:
        gc_body = u.start()
        try:
            res["gc_state_first_worker"] = json.loads(gc_body)
        except ValueError:
            res["gc_state_first_worker"] = gc_body.decode(errors="replace")[:200]
        pids = u.worker_pids()
        time.sleep(0.2)
        flt0 = {p: minflt(p) for p in pids}
        before = sample_workers(pids)
        series = [{"t": 0.0, "workers": before}]

        def tick(t):
            series.append({"t": round(t, 2), "workers": sample_workers(pids)})

        acct = CpuAccount([u.pid] + pids)
        w = run_wrk(u.url(APPS[app]["path"]), durations["load_s"], APPS[app]["wrk_script"], on_tick=tick)
        res.update(acct.finish())
        # uWSGI's own CPU per request: unlike req/s, barely moved by other processes on the host
        res["cpu_ms_per_request"] = cpu_ms_per_request(res, w)
        if res["foreign_cpu_pct"] is not None and res["foreign_cpu_pct"] > FOREIGN_CPU_WARN_PCT:
            res.setdefault("notes", []).append(
                "%.0f%% of the host's CPU went to other processes during the load: req/s is unreliable"
                % res["foreign_cpu_pct"])
        end = sample_workers(pids)
        flt1 = {p: minflt(p) for p in pids if p in end}
        series.append({"t": float(durations["load_s"]), "workers": end})
        master = smaps(u.pid)
        now_pids = u.worker_pids()
        if sorted(now_pids) != sorted(pids):
            res.setdefault("notes", []).append("worker pids changed during the load (respawn?): %s -> %s"
                                               % (pids, now_pids))
        res.update({
            "rps": w["rps"], "p50_ms": w["p50_ms"], "p99_ms": w["p99_ms"], "requests": w["requests"],
            "socket_errors": w["socket_errors"], "non_2xx": w["non_2xx"],
            "private_mb_per_worker": mean(v["private"] for v in end.values()),
            "shared_mb_per_worker": mean(v["shared"] for v in end.values()),
            "rss_mb_per_worker": mean(v["rss"] for v in end.values()),
            "pss_mb_per_worker": mean(v["pss"] for v in end.values()),
            "pss_total_mb": master["pss"] + sum(v["pss"] for v in end.values()),
            "master_rss_mb": master["rss"],
            "private_mb_per_worker_before_load": mean(v["private"] for v in before.values()),
            "minflt_per_request": (sum(flt1[p] - flt0[p] for p in flt1) / w["requests"]) if w["requests"] else None,
            "private_mb_series": [(s["t"], mean(v["private"] for v in s["workers"].values())) for s in series],
        })
        if w["non_2xx"] or w["socket_errors"]:
            res.setdefault("notes", []).append("wrk saw %d non-2xx responses and %d socket errors during the load"
                                               % (w["non_2xx"], w["socket_errors"]))
        # /cycles: private memory per worker before and after N seconds of reference-cycle load
        cyc_before = sample_workers(pids)
        wc = run_wrk(u.url("/cycles"), durations["cycles_s"])
        time.sleep(0.1)
        cyc_after = sample_workers(pids)
        common = [p for p in cyc_before if p in cyc_after]
        res["cycle_growth_mb"] = mean(cyc_after[p]["private"] - cyc_before[p]["private"] for p in common)
        res["cycles_rps"] = wc["rps"]
        res["cycles_requests"] = wc["requests"]
        try:
            res["gc_state_after"] = json.loads(u.get("/gc"))
        except (OSError, ValueError):
            pass
    finally:
        u.kill()
    return res


def throughput_rounds(app, configs, workers, plugin, logdir, rounds, seconds, warm_s=2):
    """Starts one instance per configuration, warms each, then `rounds` rounds of `seconds` of wrk
    per configuration, the order rotated every round. Returns {name: figures}."""
    instances = {}
    out = {}
    try:
        for config in configs:
            if config[3] and not plugin:
                continue
            u = Uwsgi(app, config, workers, plugin, logdir / ("%s-%s-throughput.log" % (app, config[0])))
            u.start()
            instances[config[0]] = u
        for u in instances.values():
            run_wrk(u.url(APPS[app]["path"]), warm_s, APPS[app]["wrk_script"])
        samples = {name: [] for name in instances}
        names = list(instances)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                u = instances[name]
                pids = [u.pid] + u.worker_pids()
                acct = CpuAccount(pids)
                w = run_wrk(u.url(APPS[app]["path"]), seconds, APPS[app]["wrk_script"])
                cpu = acct.finish()
                samples[name].append({
                    "rps": w["rps"], "p99_ms": w["p99_ms"], "requests": w["requests"],
                    "errors": w["socket_errors"] + w["non_2xx"],
                    "cpu_ms_per_request": cpu_ms_per_request(cpu, w),
                    "foreign_cpu_pct": cpu["foreign_cpu_pct"],
                })
            log("throughput round %d/%d: %s" % (r + 1, rounds, ", ".join(
                "%s %.0f" % (n, samples[n][-1]["rps"]) for n in names)))
        for name, s in samples.items():
            rps = [x["rps"] for x in s]
            cpu = [x["cpu_ms_per_request"] for x in s if x["cpu_ms_per_request"] is not None]
            out[name] = {
                "rps_median": statistics.median(rps),
                "rps_min": min(rps), "rps_max": max(rps),
                "cpu_ms_per_request_median": statistics.median(cpu) if cpu else None,
                "p99_ms_median": statistics.median(x["p99_ms"] for x in s),
                "errors": sum(x["errors"] for x in s),
                "foreign_cpu_pct_max": max((x["foreign_cpu_pct"] or 0.0) for x in s),
                "rounds": s,
            }
    finally:
        for u in instances.values():
            u.kill()
    return out


def stop_phase(app, config, args, durations, plugin, logdir, cold=False):
    """8 workers, warmed with `warm_s` of load (or, cold, COLD_REQUESTS_PER_WORKER requests per worker);
    time from SIGTERM (--die-on-term) to the master's exit, and the extra host memory used meanwhile
    (MemAvailable baseline minus its minimum, sampled every 10 ms). Keys: stop_* or cold_stop_*."""
    prefix = "cold_stop" if cold else "stop"
    u = Uwsgi(app, config, args.stop_workers, plugin,
              logdir / ("%s-%s-%s.log" % (app, config[0], prefix.replace("_", "-"))))
    res = {}
    try:
        u.start()
        pids = u.worker_pids()
        if cold:
            for _ in range(COLD_REQUESTS_PER_WORKER * args.stop_workers):
                u.get(APPS[app]["path"], timeout=10)
        else:
            run_wrk(u.url(APPS[app]["path"]), durations["warm_s"], APPS[app]["wrk_script"],
                    connections=2 * args.stop_workers)
        time.sleep(0.3)
        warm = sample_workers(pids)
        res[prefix + "_private_mb_per_worker_before"] = mean(v["private"] for v in warm.values())
        base = []
        for _ in range(10):
            base.append(mem_available_kb())
            time.sleep(0.01)
        baseline = sum(base) / len(base)
        group = [u.pid] + pids
        pss_base = group_pss_mb(group)
        samples = []
        pss_samples = []
        done = threading.Event()

        alive = set(pids)
        workers_gone_at = []

        def sampler():
            n = 0
            while not done.is_set():
                samples.append(mem_available_kb())
                if n % PSS_EVERY == 0:
                    pss_samples.append(group_pss_mb(group))
                n += 1
                for p in list(alive):
                    try:
                        if stat_fields(p)[0] in ("Z", "X"):
                            alive.discard(p)
                    except (OSError, IndexError):
                        alive.discard(p)
                if not alive and not workers_gone_at:
                    workers_gone_at.append(time.monotonic())
                time.sleep(0.01)

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        acct = CpuAccount(group)
        t0 = time.monotonic()
        os.kill(u.pid, signal.SIGTERM)
        try:
            u.proc.wait(timeout=STOP_TIMEOUT_S)
            res[prefix + "_s"] = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            res[prefix + "_s"] = None
            res[prefix + "_error"] = "master still alive %ss after SIGTERM" % STOP_TIMEOUT_S
        done.set()
        th.join(timeout=2)
        # the exited workers' CPU reaches us through the master's and then our RUSAGE_CHILDREN
        res[prefix + "_foreign_cpu_pct"] = acct.finish()["foreign_cpu_pct"]
        # uWSGI's master reaps dead workers on a ~1 s tick, so the master's exit time is coarse;
        # the moment the last worker became a zombie is when the teardown work was really done
        res[prefix + "_workers_exited_s"] = workers_gone_at[0] - t0 if workers_gone_at else None
        res[prefix + "_exit_status"] = u.proc.returncode
        res[prefix + "_peak_extra_mb"] = max(0.0, (baseline - min(samples)) / 1024.0) if samples else None
        # the same spike counted on this uWSGI's own processes only (peak of their summed PSS minus
        # its value before the stop): immune to other processes allocating or freeing meanwhile
        res[prefix + "_peak_extra_pss_mb"] = max(0.0, max(pss_samples) - pss_base) if pss_samples else None
        res[prefix + "_pss_before_mb"] = pss_base
        _LIVE.pop(u.pid, None)
        if not wait_group_gone(u.pid, timeout=5):
            res[prefix + "_error"] = "workers still alive after the master exited"
    finally:
        u.kill()
    return res


# ---------------------------------------------------------------- environment

def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"cpu_model": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "hostname": platform.node()}


def versions():
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None

    # The Python uWSGI's python3 plugin embeds, found the way the build finds it.
    py_bin = run([str(REPO / "tools" / "uwsgi-python-config"), "--python"]) or "/usr/bin/python3"
    py = run([py_bin, "-c", "import sys; print(sys.version.split()[0])"])
    dj = run([py_bin, "-c", "import django; print(django.get_version())"])
    wrk_v = run([WRK, "-v"]) or ""
    return {
        "uwsgi": run([UWSGI, "--version"]),
        "python": py,
        "python_note": f"the python3 plugin embeds the libpython of {py_bin}",
        "django": dj,
        "kernel": platform.release(),
        "wrk": wrk_v.splitlines()[0] if wrk_v else None,
        "repo_commit": run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }


def plugin_status():
    p = os.environ.get("COWGUARD_PLUGIN", "").strip()
    if not p:
        hint = REPO / "build" / "cowguard_plugin.so"
        return None, ("COWGUARD_PLUGIN is not set (run `make bench-quick` / `make bench`, or set "
                      "COWGUARD_PLUGIN=%s%s)" % (hint, "" if hint.exists() else " after `make build`"))
    if not os.path.isabs(p):
        p = os.path.abspath(p)
    if not os.path.isfile(p):
        return None, "COWGUARD_PLUGIN=%s does not exist" % p
    return p, None


def snapshot_plugin(path):
    """Copy the plugin to a private temp dir and return (copy, info): other builds may rewrite
    build/cowguard_plugin.so while the benchmark runs, and every configuration must load the same
    binary. Waits (up to 60 s) for a complete ELF file whose size and mtime are stable for 1 s."""
    import hashlib
    import tempfile

    deadline = time.monotonic() + 60
    while True:
        try:
            st1 = os.stat(path)
            with open(path, "rb") as f:
                magic = f.read(4)
            time.sleep(1.0)
            st2 = os.stat(path)
            if magic == b"\x7fELF" and (st1.st_size, st1.st_mtime_ns) == (st2.st_size, st2.st_mtime_ns) \
                    and st1.st_size > 0:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("%s is not a complete, stable ELF file" % path)
    tmpdir = tempfile.mkdtemp(prefix="cowguard-bench-plugin-")
    atexit.register(shutil.rmtree, tmpdir, True)
    copy = os.path.join(tmpdir, "cowguard_plugin.so")
    shutil.copy2(path, copy)
    with open(copy, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return copy, {"path": path, "sha256": digest, "size": st2.st_size,
                  "mtime": datetime.fromtimestamp(st2.st_mtime).astimezone().isoformat(timespec="seconds")}


def ensure_django_db():
    r = subprocess.run(["/usr/bin/python3", str(BENCH / "apps" / "djangoproj" / "make_db.py")],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("make_db.py failed: %s" % (r.stderr or r.stdout)[-1000:])
    return r.stdout.strip()


# ---------------------------------------------------------------- plots

def plots(results, outdir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        log("matplotlib unavailable, no plots: %s" % e)
        return []
    files = []
    for app, a in results["apps"].items():
        configs = a["configurations"]
        names = [n for n in report.ordered_configs(configs) if "rps" in (configs[n] or {})]
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for n in names:
            pts = configs[n].get("private_mb_series") or []
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=n)
        ax.set_xlabel("seconds of load")
        ax.set_ylabel("private MB per worker (mean)")
        ax.set_title("%s: private memory per worker under load (%d workers)" % (app, results["workers"]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        f = outdir / ("%s-private-memory.png" % app)
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)

        fig, ax = plt.subplots(figsize=(8, 4.5))
        vals = [configs[n]["rps"] for n in names]
        bars = ax.bar(names, vals, color=["#1f77b4" if not n.startswith("cowguard") else "#d62728" for n in names])
        noisy = False
        for b, v, n in zip(bars, vals, names):
            ax.annotate("%.0f" % v, (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
            if (configs[n].get("foreign_cpu_pct") or 0) > FOREIGN_CPU_WARN_PCT:
                b.set_hatch("//")
                noisy = True
        if noisy:
            ax.text(0.99, 0.98, "hatched: >%d%% of the CPU went to other processes" % FOREIGN_CPU_WARN_PCT,
                    transform=ax.transAxes, ha="right", va="top", fontsize=7)
        ax.set_ylabel("requests/s (wrk shares the cores)")
        ax.set_title("%s: throughput" % app)
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
        fig.tight_layout()
        f = outdir / ("%s-throughput.png" % app)
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    return files


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short run, <= 2 minutes (default)")
    mode.add_argument("--full", action="store_true", help="longer run, <= 10 minutes")
    ap.add_argument("--apps", default="gcheavy,django", help="comma-separated: gcheavy,django")
    ap.add_argument("--configs", default=",".join(c[0] for c in CONFIGS), help="comma-separated configurations")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--stop-workers", type=int, default=8)
    ap.add_argument("--load-s", type=int, help="override the main load duration (seconds)")
    ap.add_argument("--cycles-s", type=int, help="override the /cycles load duration (seconds)")
    ap.add_argument("--warm-s", type=int, help="override the stop-phase warm-up (seconds)")
    ap.add_argument("--no-stop", action="store_true", help="skip the stop phases")
    ap.add_argument("--rounds", type=int, help="override the interleaved throughput rounds (0: none)")
    ap.add_argument("--out", help="results directory (default bench/results/<timestamp>)")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-run a main phase up to this many times when other processes took more than "
                         "%d%% of the CPU during its load, while the run stays within its time budget "
                         "(default 2)" % FOREIGN_CPU_WARN_PCT)
    ap.add_argument("--budget-s", type=float, help="time budget for retries (default: 105 quick, 500 full)")
    args = ap.parse_args(argv)
    mode_name = "full" if args.full else "quick"

    t_start = time.monotonic()
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    for a in apps:
        if a not in APPS:
            ap.error("unknown app %r" % a)
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
    configs = [c for c in CONFIGS if c[0] in wanted]
    if len(configs) != len(wanted):
        ap.error("unknown configuration in %r" % args.configs)
    for tool in (UWSGI, WRK):
        if not os.path.exists(tool):
            sys.exit("bench: %s not found" % tool)

    plugin, plugin_why = plugin_status()
    plugin_info = None
    if plugin:
        try:
            plugin, plugin_info = snapshot_plugin(plugin)
        except (RuntimeError, OSError) as e:
            plugin, plugin_why = None, "cannot use COWGUARD_PLUGIN: %s" % e
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = Path(args.out) if args.out else BENCH / "results" / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    logdir = outdir / "logs"
    logdir.mkdir(exist_ok=True)

    results = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": mode_name,
        "machine": machine_info(),
        "versions": versions(),
        "workers": args.workers,
        "stop_workers": args.stop_workers,
        "wrk": {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS,
                "note": "wrk runs on the same %s cores as uWSGI: req/s compares configurations, it is "
                        "not the machine's capacity" % os.cpu_count()},
        "cowguard_plugin": plugin_info,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "budget_s": args.budget_s or BUDGET_S[mode_name],
        "configuration_descriptions": {c[0]: report.CONFIG_DESCRIPTIONS.get(c[0], "") for c in configs},
        "apps": {},
    }
    if plugin_why:
        log("cowguard configurations skipped: %s" % plugin_why)
    log("%s run: apps %s, configurations %s, %d workers; results in %s"
        % (mode_name, ",".join(apps), ",".join(c[0] for c in configs), args.workers, outdir))

    budget_s = args.budget_s or BUDGET_S[mode_name]
    units_total = len(apps) * len([c for c in configs if plugin or not c[3]])
    units_done = 0
    retry_notice = []
    try:
        for app in apps:
            d = dict(DURATIONS[mode_name][app])
            for key, val in (("load_s", args.load_s), ("cycles_s", args.cycles_s), ("warm_s", args.warm_s)):
                if val:
                    d[key] = val
            if args.rounds is not None:
                d["rounds"] = args.rounds
            results.setdefault("durations", {})[app] = d
            a = {"app": app, "wsgi_file": str(APPS[app]["wsgi_file"].relative_to(REPO)),
                 "description": APPS[app]["description"], "workers": args.workers,
                 "stop_workers": args.stop_workers, "durations": d, "configurations": {}, "notes": []}
            if APPS[app]["wrk_script"]:
                a["wrk_script"] = str(APPS[app]["wrk_script"].relative_to(REPO))
            results["apps"][app] = a
            if app == "django":
                try:
                    a["database"] = ensure_django_db()
                except Exception as e:  # noqa: BLE001 - reported, the other app still runs
                    for c in configs:
                        a["configurations"][c[0]] = {"error": "database: %s" % e}
                    continue
            for c in configs:
                name = c[0]
                if c[3] and not plugin:
                    a["configurations"][name] = {"skipped": plugin_why}
                    continue
                t_conf = time.monotonic()
                entry = {}
                attempts = []
                while True:
                    log("%s / %s: main phase (%d workers, %ss load, %ss /cycles)%s"
                        % (app, name, args.workers, d["load_s"], d["cycles_s"],
                           " retry %d: the last load shared the CPU with other processes" % len(attempts)
                           if attempts else ""))
                    t_phase = time.monotonic()
                    try:
                        attempt = main_phase(app, c, args, d, plugin, logdir)
                    except Exception as e:  # noqa: BLE001
                        log("%s / %s: main phase failed: %s" % (app, name, e))
                        attempt = {"error": "main phase: %s" % e}
                    attempts.append(attempt)
                    phase_s = time.monotonic() - t_phase
                    foreign = attempt.get("foreign_cpu_pct")
                    if "error" in attempt or foreign is None or foreign <= FOREIGN_CPU_WARN_PCT:
                        break
                    if len(attempts) > args.retries:
                        break
                    # retry only if the whole run still fits its time budget afterwards
                    before = t_conf - t_start  # seconds spent on the configurations already done
                    avg = before / units_done if units_done else phase_s * 1.6
                    this_rest = max(0.0, avg - phase_s)  # this configuration's stop phases, estimated
                    projected = (time.monotonic() - t_start) + phase_s + this_rest + \
                        avg * (units_total - units_done - 1)
                    if projected > budget_s:
                        if not retry_notice:
                            log("noisy loads are not re-run: a retry would not fit the %.0f s budget "
                                "(projected %.0f s)" % (budget_s, projected))
                            retry_notice.append(1)
                        break
                ok = [x for x in attempts if "error" not in x]
                entry.update(min(ok, key=lambda x: x.get("foreign_cpu_pct") or 0) if ok else attempts[-1])
                if len(attempts) > 1:
                    entry["main_attempts_foreign_cpu_pct"] = [x.get("foreign_cpu_pct") for x in attempts]
                phases = []
                if "error" not in entry and not args.no_stop:
                    if d["stop"]:
                        phases.append(False)
                    if d["cold_stop"]:
                        phases.append(True)
                for cold in phases:
                    prefix = "cold_stop" if cold else "stop"
                    log("%s / %s: %s phase (%d workers, %s)" % (
                        app, name, prefix.replace("_", " "), args.stop_workers,
                        "%d requests per worker" % COLD_REQUESTS_PER_WORKER if cold else "%ss warm-up" % d["warm_s"]))
                    try:
                        entry.update(stop_phase(app, c, args, d, plugin, logdir, cold=cold))
                    except Exception as e:  # noqa: BLE001
                        log("%s / %s: %s phase failed: %s" % (app, name, prefix, e))
                        entry[prefix + "_error"] = str(e)
                for prefix in ("stop", "cold_stop"):
                    entry.setdefault(prefix + "_s", None)
                    entry.setdefault(prefix + "_peak_extra_mb", None)
                entry["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
                entry["elapsed_s"] = round(time.monotonic() - t_conf, 1)
                units_done += 1
                a["configurations"][name] = entry
                if "rps" in entry:
                    log("%s / %s: %.0f req/s, p99 %.1f ms, private %.1f MB/worker, PSS %.0f MB, stop %s s"
                        % (app, name, entry["rps"], entry["p99_ms"] or -1, entry["private_mb_per_worker"],
                           entry["pss_total_mb"], "%.2f" % entry["stop_s"] if entry.get("stop_s") else "n/a"))
            if d.get("rounds"):
                log("%s: interleaved throughput, %d rounds of %ss per configuration" % (app, d["rounds"], d["round_s"]))
                try:
                    figures = throughput_rounds(app, configs, args.workers, plugin, logdir, d["rounds"], d["round_s"])
                except Exception as e:  # noqa: BLE001 - reported, the other figures stand
                    log("%s: interleaved throughput failed: %s" % (app, e))
                    a["notes"].append("interleaved throughput failed: %s" % e)
                    figures = {}
                a["throughput"] = {"rounds": d["rounds"], "round_s": d["round_s"], "configurations": figures}
                for name, f in figures.items():
                    entry = a["configurations"].get(name)
                    if isinstance(entry, dict) and "rps" in entry:
                        entry["rps_interleaved"] = f["rps_median"]
                        entry["cpu_ms_per_request_interleaved"] = f["cpu_ms_per_request_median"]
            a["ratios"] = report.compute_ratios(a["configurations"])
            results["elapsed_s"] = round(time.monotonic() - t_start, 1)
            report.write_json(outdir / "results.json", results)
    finally:
        kill_all()

    results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    results["plots"] = [str(p.relative_to(outdir)) for p in plots(results, outdir)]
    report.write_json(outdir / "results.json", results)
    print(report.markdown(results))
    print()
    print("Results: %s (%.0f s; wrk shares the %d cores with uWSGI)"
          % (outdir / "results.json", results["elapsed_s"], os.cpu_count()))
    failed = [(app, n) for app, a in results["apps"].items() for n, c in a["configurations"].items()
              if c and "error" in c]
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        kill_all()
        sys.exit(130)
