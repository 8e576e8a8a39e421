#!/usr/bin/python3
"""cowguard's side-by-side benchmark (issues #3, #16), on the Python of this system.

For each app (gcheavy, heapread, heapcache, graphite; django on request) and each configuration
(stock, skip-teardown, app-freeze, article-recipe, cowguard; on Python >= 3.12 also
cowguard-immortalize-false) it runs the same uWSGI command line, worker count and wrk load, and
measures throughput (interleaved rounds where the mode has them), latency, per-worker memory
(smaps_rollup: private, shared, MB copied during the load), minor faults per request, cowguard's
copy-on-write report, the time and host-memory spike of stopping 8 workers, and memory growth
under a reference-cycle load. Writes results.json, one private-memory PNG per app and uWSGI logs
into bench/results/<YYYYmmdd-HHMMSS>/ (or --out), and prints markdown tables.

  COWGUARD_PLUGIN=$PWD/build/cowguard_plugin.so /usr/bin/python3 bench/run.py --quick
  COWGUARD_PLUGIN=$PWD/build/cowguard_plugin.so /usr/bin/python3 bench/run.py --full

bench/all.py runs this on the machine and in each Debian chroot and merges the results (make bench).
Without COWGUARD_PLUGIN (or if the file is missing) the cowguard configurations are reported as
skipped. Stdlib + matplotlib only. All load goes to 127.0.0.1, bounded in time; every uWSGI
started here runs in its own process group and is SIGKILLed on any exit.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import report  # noqa: E402
from report import COLD_STOP, WARM_STOP  # noqa: E402
from common import (BENCH, REPO, UWSGI, WRK, WRK_CONNECTIONS, WRK_THREADS, CpuAccount,  # noqa: E402,F401
                    cpu_ms_per_request, free_port, group_pss_mb, kill_all, log, machine_info, mean,
                    mem_available_kb, minflt, plugin_status, run_wrk, sample_workers, smaps,
                    snapshot_plugin, stat_fields, versions, wait_group_gone)

common.install_cleanup()


# ---------------------------------------------------------------- apps

def ensure_django_db():
    return _prepare("djangoproj/make_db.py")


def ensure_graphite_data():
    return _prepare("graphite/make_data.py")


def _prepare(script):
    """Run an app's data script (idempotent: it rebuilds only when its sources changed) with the
    Python uWSGI embeds; returns what it printed (the data's path)."""
    r = subprocess.run([common.embedded_python(), str(BENCH / "apps" / script)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (script, (r.stderr or r.stdout)[-1000:]))
    return r.stdout.strip()


@dataclass(frozen=True)
class App:
    name: str
    wsgi_file: Path
    description: str
    path: str = "/"             # what wrk loads (unless wrk_script rotates over pages)
    wrk_script: Path = None
    prepare: object = None      # callable building the app's data before its first instance


APPS = {a.name: a for a in [
    App("gcheavy", BENCH / "apps" / "gcheavy.py",
        "GC-heavy app: 300k-row heap of 900k tracked containers (~95 MB) that requests never read; "
        "each request builds 3000 dicts"),
    App("heapread", BENCH / "apps" / "heapread.py",
        "heap-reading app: 100k rows (half dicts with lists, half untracked tuples), an index dict and a "
        "30k-entry cache (~0.8 M objects, ~55 MB); each request looks up 500 random rows and builds a result dict per row"),
    App("heapcache", BENCH / "apps" / "heapread.py",
        "heapread whose requests also replace 100 random entries of a 30k-entry module-level cache",
        path="/rw"),
    App("graphite", BENCH / "apps" / "graphite" / "wsgi.py",
        "graphite-web from Debian (third-party Django project): 1760 whisper metrics, SQLite; wrk rotates "
        "over 100 requests (render JSON and PNG, metric find, dashboards, events, pages)",
        wrk_script=BENCH / "wrk" / "graphite_mix.lua", prepare=ensure_graphite_data),
    App("django", BENCH / "apps" / "djangoproj" / "wsgi.py",
        "the bench's own small Django shop (SQLite, ORM + template inheritance); wrk rotates over 100 pages",
        wrk_script=BENCH / "wrk" / "django_mix.lua", prepare=ensure_django_db),
]}
DEFAULT_APPS = ["gcheavy", "heapread", "heapcache", "graphite"]


# ---------------------------------------------------------------- configurations

@dataclass(frozen=True)
class Config:
    name: str
    recipe: str = ""                 # COWGUARD_BENCH_RECIPE: what the app does at the end of import
    uwsgi_args: tuple = ()
    cowguard: bool = False           # loads the plugin
    min_python: tuple = None         # only on this Python or newer
    default: bool = True             # in the default set

    def skip_reason(self, python, plugin_why):
        if self.cowguard and plugin_why:
            return plugin_why
        if self.min_python and python < self.min_python:
            return "needs Python >= %s" % ".".join(map(str, self.min_python))
        return None


CONFIGS = [
    Config("stock"),
    Config("skip-teardown", uwsgi_args=("--skip-atexit-teardown",)),
    Config("app-freeze", recipe="app-freeze"),
    Config("article-recipe", recipe="article-recipe"),
    Config("cowguard", cowguard=True),
    Config("cowguard-immortalize-false", uwsgi_args=("--cowguard-immortalize", "false"), cowguard=True,
           min_python=(3, 12)),
    Config("cowguard-gc-off", uwsgi_args=("--cowguard-gc", "off"), cowguard=True, default=False),
    # issue 15: the two worker policies side by side, whichever is the default
    Config("cowguard-young", uwsgi_args=("--cowguard-gc", "young"), cowguard=True, default=False),
    Config("cowguard-between", uwsgi_args=("--cowguard-gc", "between"), cowguard=True, default=False),
]
CONFIG_BY_NAME = {c.name: c for c in CONFIGS}


# ---------------------------------------------------------------- durations

@dataclass
class Durations:
    load_s: int          # main phase: wrk on the app (measured)
    cycles_s: int        # then wrk on /cycles
    prewarm_s: int = 0   # main phase: wrk on the app before the measured load; memory counts it, req/s not
    warm_s: int = 3      # stop phase: load before SIGTERM
    stop: bool = False   # run the (warm) stop phase
    cold_stop: bool = False  # and the cold one (workers served COLD_REQUESTS_PER_WORKER requests each)
    rounds: int = 0      # interleaved throughput: rounds of round_s per configuration (0: none)
    round_s: int = 3


def durations(mode, app):
    """What each app gets per mode. Full mode fits three systems in about 30 minutes on 2 cores: the
    stop phases run on gcheavy only (their story, Py_Finalize writing to a shared heap, is the same
    on every heap), the interleaved rounds on graphite only (heapread's gaps are far beyond noise)."""
    # a cold Django project's workers spend their first seconds (more on a busy host) importing views,
    # graphite's functions and its pyparsing grammar: req/s is measured after that, memory from the start
    prewarm = 4 if app in ("graphite", "django") else 0
    if mode == "quick":
        return Durations(load_s=3, cycles_s=1, prewarm_s=prewarm, warm_s=2, stop=(app == "gcheavy"))
    return Durations(load_s=8, cycles_s=2, prewarm_s=prewarm, warm_s=3, stop=(app == "gcheavy"),
                     cold_stop=(app == "gcheavy"), rounds=3 if app == "graphite" else 0)


COLD_REQUESTS_PER_WORKER = 2
BUDGET_S = {"quick": 270, "full": 540}  # retries of noisy loads only happen within these
STOP_TIMEOUT_S = 90
FOREIGN_CPU_WARN_PCT = 10.0
PSS_EVERY = 3  # during a stop, sum the group's PSS every 3rd 10 ms MemAvailable sample
COW_REPORT_TIMEOUT_S = 30


# ---------------------------------------------------------------- uWSGI instances

def uwsgi_command(app, config, workers, plugin, port, cow_dir=None):
    cmd = [UWSGI, "--master", "--workers", str(workers), "--plugin", "python3"]
    if config.cowguard:
        cmd += ["--plugin", plugin]
    cmd += ["--http-socket", "127.0.0.1:%d" % port, "--wsgi-file", str(APPS[app].wsgi_file),
            "--die-on-term", "--disable-logging",
            # uWSGI's http-socket closes the connection after each response; saying so lets wrk
            # reconnect instead of counting every response as a read error
            "--add-header", "Connection: close"]
    cmd += list(config.uwsgi_args)
    if cow_dir:
        cmd += ["--cowguard-cow-report", str(cow_dir)]
    return cmd


def Uwsgi(app, config, workers, plugin, logpath, cow_dir=None):
    """An instance (common.Uwsgi, not started) of `app` in `config`."""
    port = free_port()
    return common.Uwsgi(uwsgi_command(app, config, workers, plugin, port, cow_dir), port, workers, logpath,
                        env={"COWGUARD_BENCH_RECIPE": config.recipe or None}, name=config.name)


# ---------------------------------------------------------------- copy-on-write report

def cow_report(u, cow_dir, pids):
    """Asks every worker for its copy-on-write report (touch DIR/trigger) and sums them: per kind
    of mapping the MB shared and private per worker, and the frozen objects (by type, by module)
    on pages the workers copied."""
    (cow_dir / "trigger").touch()
    deadline = time.monotonic() + COW_REPORT_TIMEOUT_S
    docs = {}
    while time.monotonic() < deadline and len(docs) < len(pids):
        for p in pids:
            for f in cow_dir.glob("cow-*-%d.json" % p):
                try:
                    docs[p] = json.loads(f.read_text())
                except (OSError, ValueError):
                    pass  # being written
        time.sleep(0.2)
    if not docs:
        return {"error": "no worker wrote a report within %ss" % COW_REPORT_TIMEOUT_S}
    n = len(docs)
    mb = 1024.0 * 1024.0
    kinds = {}
    for d in docs.values():
        for kind, sp in d.get("mappings", {}).items():
            k = kinds.setdefault(kind, {"shared_mb": 0.0, "private_mb": 0.0})
            k["shared_mb"] += sp["shared"] / mb / n
            k["private_mb"] += sp["private"] / mb / n

    def ranked(key, label):
        acc = {}
        for d in docs.values():
            for e in d.get("frozen", {}).get(key, []):
                a = acc.setdefault(e[label], {"objects": 0, "private_objects": 0, "private_mb": 0.0})
                a["objects"] += e["objects"] / n
                a["private_objects"] += e["private_objects"] / n
                a["private_mb"] += e["private_bytes"] / mb / n
        top = sorted(acc.items(), key=lambda kv: -kv[1]["private_mb"])[:8]
        return [dict(v, **{label: name}) for name, v in top]

    frozen = [d.get("frozen", {}) for d in docs.values()]
    return {
        "workers": n,
        "mappings_mb_per_worker": {k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in kinds.items()},
        "frozen_objects": round(mean(f.get("objects") for f in frozen) or 0),
        "frozen_mb": mean(f.get("bytes", 0) / mb for f in frozen),
        "frozen_objects_on_copied_pages": round(mean(f.get("private_objects") for f in frozen) or 0),
        "frozen_mb_on_copied_pages": mean(f.get("private_bytes", 0) / mb for f in frozen),
        "top_types": ranked("by_type", "type"),
        "top_modules": ranked("by_module", "module"),
        "errors": [d["error"] for d in docs.values() if d.get("error")],
    }


# ---------------------------------------------------------------- phases

def main_phase(app, config, args, d, plugin, logdir):
    """args.workers workers: d.prewarm_s then d.load_s (measured) of load on the app, memory sampled
    every second from the start, the copy-on-write report (cowguard), then d.cycles_s of /cycles."""
    cow_dir = None
    if config.cowguard:
        cow_dir = logdir / ("cow-%s-%s-%d" % (app, config.name, time.monotonic_ns()))
        cow_dir.mkdir(parents=True)
    u = Uwsgi(app, config, args.workers, plugin, logdir / ("%s-%s-main.log" % (app, config.name)), cow_dir)
    a = APPS[app]
    res = {}
    try:
        gc_body = u.start()
        try:
            res["gc_state_first_worker"] = json.loads(gc_body)
        except ValueError:
            res["gc_state_first_worker"] = gc_body.decode(errors="replace")[:200]
        pids = u.worker_pids()
        time.sleep(0.2)
        before = sample_workers(pids)
        series = [{"t": 0.0, "workers": before}]

        def tick(t):
            series.append({"t": round(t, 2), "workers": sample_workers(pids)})

        if d.prewarm_s:
            run_wrk(u.url(a.path), d.prewarm_s, a.wrk_script, on_tick=tick)
        t_load = d.prewarm_s
        flt0 = {p: minflt(p) for p in pids}
        acct = CpuAccount([u.pid] + pids)
        # the last tick would land on the end-of-load sample taken below
        w = run_wrk(u.url(a.path), d.load_s, a.wrk_script,
                    on_tick=lambda t: tick(t_load + t) if t < d.load_s - 0.5 else None)
        res.update(acct.finish())
        # uWSGI's own CPU per request: unlike req/s, barely moved by other processes on the host
        res["cpu_ms_per_request"] = cpu_ms_per_request(res, w)
        if res["foreign_cpu_pct"] is not None and res["foreign_cpu_pct"] > FOREIGN_CPU_WARN_PCT:
            res.setdefault("notes", []).append(
                "%.0f%% of the host's CPU went to other processes during the load: req/s is unreliable"
                % res["foreign_cpu_pct"])
        end = sample_workers(pids)
        flt1 = {p: minflt(p) for p in pids if p in end}
        series.append({"t": float(d.prewarm_s + d.load_s), "workers": end})
        master = smaps(u.pid)
        now_pids = u.worker_pids()
        if sorted(now_pids) != sorted(pids):
            res.setdefault("notes", []).append("worker pids changed during the load (respawn?): %s -> %s"
                                               % (pids, now_pids))
        both = [p for p in before if p in end]
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
            "shared_mb_per_worker_before_load": mean(v["shared"] for v in before.values()),
            # pages shared with the master when the load began that this worker copied during it
            "copied_mb_per_worker": mean(before[p]["shared"] - end[p]["shared"] for p in both),
            "minflt_per_request": (sum(flt1[p] - flt0[p] for p in flt1) / w["requests"]) if w["requests"] else None,
            "private_mb_series": [(s["t"], mean(v["private"] for v in s["workers"].values())) for s in series],
        })
        if w["non_2xx"] or w["socket_errors"]:
            res.setdefault("notes", []).append("wrk saw %d non-2xx responses and %d socket errors during the load"
                                               % (w["non_2xx"], w["socket_errors"]))
        if cow_dir:
            res["cow_report"] = cow_report(u, cow_dir, pids)
        # /cycles: private memory per worker before and after N seconds of reference-cycle load
        cyc_before = sample_workers(pids)
        wc = run_wrk(u.url("/cycles"), d.cycles_s)
        time.sleep(0.1)
        cyc_after = sample_workers(pids)
        common_pids = [p for p in cyc_before if p in cyc_after]
        res["cycle_growth_mb"] = mean(cyc_after[p]["private"] - cyc_before[p]["private"] for p in common_pids)
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
    per configuration, the order rotated every round. Returns {name: figures}. One load per
    configuration, minutes apart, moves with whatever the host does at that moment; rotating short
    loads spreads that over every configuration."""
    a = APPS[app]
    instances = {}
    out = {}
    try:
        for config in configs:
            u = Uwsgi(app, config, workers, plugin, logdir / ("%s-%s-throughput.log" % (app, config.name)))
            u.start()
            instances[config.name] = u
        for u in instances.values():
            run_wrk(u.url(a.path), warm_s, a.wrk_script)
        samples = {name: [] for name in instances}
        names = list(instances)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                u = instances[name]
                acct = CpuAccount([u.pid] + u.worker_pids())
                w = run_wrk(u.url(a.path), seconds, a.wrk_script)
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


def stop_phase(app, config, args, d, plugin, logdir, keys):
    """args.stop_workers workers, warmed with d.warm_s of load (or, for COLD_STOP,
    COLD_REQUESTS_PER_WORKER requests per worker); time from SIGTERM (--die-on-term) to the master's
    exit, and the extra host memory used meanwhile (MemAvailable baseline minus its minimum, sampled
    every 10 ms). Figures under `keys` (report.WARM_STOP or report.COLD_STOP)."""
    cold = keys is COLD_STOP
    a = APPS[app]
    u = Uwsgi(app, config, args.stop_workers, plugin,
              logdir / ("%s-%s-%s.log" % (app, config.name, keys.name.replace(" ", "-"))))
    res = {}
    try:
        u.start()
        pids = u.worker_pids()
        if cold:
            for _ in range(COLD_REQUESTS_PER_WORKER * args.stop_workers):
                u.get(a.path, timeout=10)
        else:
            run_wrk(u.url(a.path), d.warm_s, a.wrk_script, connections=2 * args.stop_workers)
        time.sleep(0.3)
        warm = sample_workers(pids)
        res[keys.private_mb_per_worker_before] = mean(v["private"] for v in warm.values())
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
            res[keys.seconds] = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            res[keys.seconds] = None
            res[keys.error] = "master still alive %ss after SIGTERM" % STOP_TIMEOUT_S
        done.set()
        th.join(timeout=2)
        # the exited workers' CPU reaches us through the master's and then our RUSAGE_CHILDREN
        res[keys.foreign_cpu_pct] = acct.finish()["foreign_cpu_pct"]
        # uWSGI's master reaps dead workers on a ~1 s tick, so the master's exit time is coarse;
        # the moment the last worker became a zombie is when the teardown work was really done
        res[keys.workers_exited_s] = workers_gone_at[0] - t0 if workers_gone_at else None
        res[keys.exit_status] = u.proc.returncode
        res[keys.peak_extra_mb] = max(0.0, (baseline - min(samples)) / 1024.0) if samples else None
        # the same spike counted on this uWSGI's own processes only (peak of their summed PSS minus
        # its value before the stop): immune to other processes allocating or freeing meanwhile
        res[keys.peak_extra_pss_mb] = max(0.0, max(pss_samples) - pss_base) if pss_samples else None
        res[keys.pss_before_mb] = pss_base
        u.forget()
        if not wait_group_gone(u.pid, timeout=5):
            res[keys.error] = "workers still alive after the master exited"
    finally:
        u.kill()
    return res


# ---------------------------------------------------------------- plots

def plots(results, outdir):
    """One PNG per app: mean private MB per worker over the load, one line per configuration."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        log("matplotlib unavailable, no plots: %s" % e)
        return []
    files = []
    v = results["versions"]
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
        ax.set_title("%s, Python %s (%s): private memory per worker under load, %d workers"
                     % (app, v.get("python"), v.get("debian") or "?", results["workers"]), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        f = outdir / ("%s-private-memory.png" % app)
        fig.savefig(f, dpi=100)
        plt.close(fig)
        files.append(f)
    return files


# ---------------------------------------------------------------- main and its phases

class Budget:
    """Re-runs of noisy main phases happen only while the projected run time stays within budget_s."""

    def __init__(self, budget_s, units_total):
        self.t0 = time.monotonic()
        self.budget_s = budget_s
        self.units_total = units_total
        self.units_done = 0
        self.noticed = False

    def allows_retry(self, t_unit, phase_s):
        before = t_unit - self.t0  # seconds spent on the configurations already done
        avg = before / self.units_done if self.units_done else phase_s * 1.6
        this_rest = max(0.0, avg - phase_s)  # this configuration's stop phases, estimated
        projected = (time.monotonic() - self.t0) + phase_s + this_rest + avg * (self.units_total - self.units_done - 1)
        if projected <= self.budget_s:
            return True
        if not self.noticed:
            log("noisy loads are not re-run: a retry would not fit the %.0f s budget (projected %.0f s)"
                % (self.budget_s, projected))
            self.noticed = True
        return False


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short run, a few minutes (default)")
    mode.add_argument("--full", action="store_true", help="longer run, about 9 minutes on 2 busy cores")
    ap.add_argument("--apps", default=",".join(DEFAULT_APPS), help="comma-separated, of: %s" % ",".join(APPS))
    ap.add_argument("--configs", default=",".join(c.name for c in CONFIGS if c.default),
                    help="comma-separated, of: %s" % ",".join(CONFIG_BY_NAME))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--stop-workers", type=int, default=8)
    ap.add_argument("--load-s", type=int, help="override the main load duration (seconds)")
    ap.add_argument("--cycles-s", type=int, help="override the /cycles load duration (seconds)")
    ap.add_argument("--warm-s", type=int, help="override the stop-phase warm-up (seconds)")
    ap.add_argument("--no-stop", action="store_true", help="skip the stop phases")
    ap.add_argument("--rounds", type=int, help="override the interleaved throughput rounds (0: none)")
    ap.add_argument("--out", help="results directory (default bench/results/<timestamp>)")
    ap.add_argument("--retries", type=int, default=1,
                    help="re-run a main phase up to this many times when other processes took more than "
                         "%d percent of the CPU during its load, while the run stays within its time budget "
                         "(default 1)" % FOREIGN_CPU_WARN_PCT)
    ap.add_argument("--budget-s", type=float, help="time budget for retries in seconds (default: %(quick)s quick, %(full)s full)"
                    % BUDGET_S)
    args = ap.parse_args(argv)
    args.mode = "full" if args.full else "quick"
    args.app_names = [a.strip() for a in args.apps.split(",") if a.strip()]
    for a in args.app_names:
        if a not in APPS:
            ap.error("unknown app %r" % a)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    for n in names:
        if n not in CONFIG_BY_NAME:
            ap.error("unknown configuration %r" % n)
    args.config_list = [CONFIG_BY_NAME[n] for n in names]
    return args


def app_durations(args, app):
    d = durations(args.mode, app)
    for key in ("load_s", "cycles_s", "warm_s"):
        if getattr(args, key):
            setattr(d, key, getattr(args, key))
    if args.rounds is not None:
        d.rounds = args.rounds
    if args.no_stop:
        d.stop = d.cold_stop = False
    return d


def start_results(args, plugin_info, outdir):
    v = versions()
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": args.mode,
        "machine": machine_info(),
        "versions": v,
        "workers": args.workers,
        "stop_workers": args.stop_workers,
        "wrk": {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS,
                "note": "wrk runs on the same %s cores as uWSGI: req/s compares configurations, it is "
                        "not the machine's capacity" % os.cpu_count()},
        "cowguard_plugin": plugin_info,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "budget_s": args.budget_s or BUDGET_S[args.mode],
        "configuration_descriptions": {c.name: report.CONFIG_DESCRIPTIONS.get(c.name, "") for c in args.config_list},
        "outdir": str(outdir),
        "apps": {},
    }


def measure_main(app, config, args, d, plugin, logdir, budget):
    """The main phase, re-run (args.retries times at most, within the budget) while other processes
    took more than FOREIGN_CPU_WARN_PCT of the CPU; keeps the attempt with the least foreign CPU."""
    t_unit = time.monotonic()
    attempts = []
    while True:
        log("%s / %s: main phase (%d workers, %ss load, %ss /cycles)%s"
            % (app, config.name, args.workers, d.load_s, d.cycles_s,
               " retry %d: the last load shared the CPU with other processes" % len(attempts) if attempts else ""))
        t_phase = time.monotonic()
        try:
            attempt = main_phase(app, config, args, d, plugin, logdir)
        except Exception as e:  # noqa: BLE001 - reported, the other configurations still run
            log("%s / %s: main phase failed: %s" % (app, config.name, e))
            attempt = {"error": "main phase: %s" % e}
        attempts.append(attempt)
        foreign = attempt.get("foreign_cpu_pct")
        if "error" in attempt or foreign is None or foreign <= FOREIGN_CPU_WARN_PCT:
            break
        if len(attempts) > args.retries or not budget.allows_retry(t_unit, time.monotonic() - t_phase):
            break
    ok = [x for x in attempts if "error" not in x]
    entry = dict(min(ok, key=lambda x: x.get("foreign_cpu_pct") or 0) if ok else attempts[-1])
    if len(attempts) > 1:
        entry["main_attempts_foreign_cpu_pct"] = [x.get("foreign_cpu_pct") for x in attempts]
    return entry


def measure_stops(app, config, args, d, plugin, logdir, entry):
    for keys in [k for k, wanted in ((WARM_STOP, d.stop), (COLD_STOP, d.cold_stop)) if wanted]:
        log("%s / %s: %s phase (%d workers, %s)" % (
            app, config.name, keys.name, args.stop_workers,
            "%d requests per worker" % COLD_REQUESTS_PER_WORKER if keys is COLD_STOP else "%ss warm-up" % d.warm_s))
        try:
            entry.update(stop_phase(app, config, args, d, plugin, logdir, keys))
        except Exception as e:  # noqa: BLE001
            log("%s / %s: %s phase failed: %s" % (app, config.name, keys.name.replace(" ", "_"), e))
            entry[keys.error] = str(e)


def measure_throughput(app, a, configs, args, d, plugin, logdir):
    log("%s: interleaved throughput, %d rounds of %ss per configuration" % (app, d.rounds, d.round_s))
    try:
        figures = throughput_rounds(app, configs, args.workers, plugin, logdir, d.rounds, d.round_s,
                                    warm_s=max(2, d.prewarm_s))
    except Exception as e:  # noqa: BLE001 - reported, the other figures stand
        log("%s: interleaved throughput failed: %s" % (app, e))
        a["notes"].append("interleaved throughput failed: %s" % e)
        figures = {}
    a["throughput"] = {"rounds": d.rounds, "round_s": d.round_s, "configurations": figures}
    for name, f in figures.items():
        entry = a["configurations"].get(name)
        if isinstance(entry, dict) and "rps" in entry:
            entry["rps_interleaved"] = f["rps_median"]
            entry["cpu_ms_per_request_interleaved"] = f["cpu_ms_per_request_median"]


def measure_app(app, args, plugin, plugin_why, python, logdir, budget):
    d = app_durations(args, app)
    a = {"app": app, "wsgi_file": str(APPS[app].wsgi_file.relative_to(REPO)), "path": APPS[app].path,
         "description": APPS[app].description, "workers": args.workers, "stop_workers": args.stop_workers,
         "durations": vars(d), "configurations": {}, "notes": []}
    if APPS[app].wrk_script:
        a["wrk_script"] = str(APPS[app].wrk_script.relative_to(REPO))
    if APPS[app].prepare:
        try:
            a["data"] = APPS[app].prepare()
        except Exception as e:  # noqa: BLE001 - reported, the other apps still run
            for c in args.config_list:
                a["configurations"][c.name] = {"error": "data: %s" % e}
            return a
    measured = []
    for config in args.config_list:
        why = config.skip_reason(python, plugin_why)
        if why:
            a["configurations"][config.name] = {"skipped": why}
            continue
        t0 = time.monotonic()
        entry = measure_main(app, config, args, d, plugin, logdir, budget)
        if "error" not in entry:
            measure_stops(app, config, args, d, plugin, logdir, entry)
            measured.append(config)
        entry["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        entry["elapsed_s"] = round(time.monotonic() - t0, 1)
        budget.units_done += 1
        a["configurations"][config.name] = entry
        if "rps" in entry:
            log("%s / %s: %.0f req/s, private %.1f MB/worker (copied %.1f), PSS %.0f MB, load avg %.1f"
                % (app, config.name, entry["rps"], entry["private_mb_per_worker"],
                   entry["copied_mb_per_worker"] or 0, entry["pss_total_mb"], entry["loadavg_after"][0]))
    if d.rounds and len(measured) > 1:
        measure_throughput(app, a, measured, args, d, plugin, logdir)
    a["ratios"] = report.compute_ratios(a["configurations"])
    return a


def main(argv=None):
    args = parse_args(argv)
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
    outdir = Path(args.out) if args.out else BENCH / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = outdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    results = start_results(args, plugin_info, outdir)
    python = tuple(int(x) for x in (results["versions"]["python"] or "0.0").split(".")[:2])
    if plugin_why:
        log("cowguard configurations skipped: %s" % plugin_why)
    log("%s run on Python %s: apps %s, configurations %s, %d workers; results in %s"
        % (args.mode, results["versions"]["python"], ",".join(args.app_names),
           ",".join(c.name for c in args.config_list), args.workers, outdir))
    runnable = [c for c in args.config_list if not c.skip_reason(python, plugin_why)]
    budget = Budget(args.budget_s or BUDGET_S[args.mode], len(args.app_names) * len(runnable))
    try:
        for app in args.app_names:
            results["apps"][app] = measure_app(app, args, plugin, plugin_why, python, logdir, budget)
            results["elapsed_s"] = round(time.monotonic() - budget.t0, 1)
            report.write_json(outdir / "results.json", results)
    finally:
        kill_all()
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.monotonic() - budget.t0, 1)
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
