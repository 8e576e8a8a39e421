#!/usr/bin/env python3
"""Warmups on a Django project, side by side in one run (issue 18), 4 workers: stock uWSGI, the
app-level recipe (gc.collect(); gc.freeze() at the end of the app's import), cowguard without a
warmup, with `cowguard-warmup = cowguard:django_warmup`, with `cowguard-warmup-requests = URLS`
(graphite: one request of each kind the load sends; django: its 100 pages), with both, and (`--configs`) with both plus
`cowguard-warmup-worker-rounds = 1` (the same file replayed again in each worker after its fork).

--app picks the project (bench/apps/):
  graphite   graphite-web from Debian (third-party, as deployed: graphite.wsgi, no warm-up of its
             own); replayed bench/wrk/graphite_warmup.txt (one request of each kind the load sends),
             timed bench/wrk/graphite_urls.txt, load bench/wrk/graphite_mix.lua (the same 100 requests)
  django     the benchmark's own shop, cold (DJANGOPROJ_WARM=0: wsgi.py without its own warm-up,
             as most wsgi.py files are); replayed and timed bench/wrk/django_urls.txt (the 100 pages
             bench/wrk/django_mix.lua rotates over)

Every configuration is started at once; then, one configuration after the other:

  first requests   one request at a time (the URL list in order) until every worker has served
                   50: each request's time at the client (wall) and the CPU time the worker
                   spent on it (/proc/PID/schedstat: the worker whose CPU time grew), which
                   does not depend on what else the host runs
  load             wrk with bench/wrk/django_mix.lua for --load seconds
  memory           private (Private_Clean + Private_Dirty) per worker and total PSS (master +
                   workers) from /proc/PID/smaps_rollup
  steady state     50 more requests per worker, timed the same way

Repeated --rounds times (configurations rotated); the table gives medians, and the p99 of the
first 50 requests per worker of every configuration next to stock's steady-state p99.

Usage: COWGUARD_PLUGIN=build/cowguard_plugin.so /usr/bin/python3 bench/warmup_replay.py --app graphite [--rounds 3] [--load 10]
Writes bench/results/<date>[-<tag>]/warmup_replay-<app>.json and prints a markdown table
(bench/warmup_replay.py --table FILE prints it again from a results file).
"""
import argparse
import concurrent.futures
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import embedded_python, free_port, rollup_kb as kb, versions  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKERS = 4


class App:
    """urls: the replay file; timed: the requests timed one at a time (the load's own list)."""
    def __init__(self, name, wsgi, urls, timed, mix, env, prepare):
        self.name, self.wsgi, self.urls, self.timed, self.mix = name, wsgi, urls, timed, mix
        self.env, self.prepare = env, prepare


APPS = {
    "graphite": App("graphite", HERE / "apps" / "graphite" / "wsgi.py", HERE / "wrk" / "graphite_warmup.txt",
                    HERE / "wrk" / "graphite_urls.txt", HERE / "wrk" / "graphite_mix.lua", {}, HERE / "apps" / "graphite" / "make_data.py"),
    "django": App("django", HERE / "apps" / "djangoproj" / "wsgi.py", HERE / "wrk" / "django_urls.txt",
                  HERE / "wrk" / "django_urls.txt", HERE / "wrk" / "django_mix.lua", {"DJANGOPROJ_WARM": "0"}, HERE / "apps" / "djangoproj" / "make_db.py"),
}


def configs(urls):
    """name -> (cowguard flags, or None for no plugin; extra environment)"""
    u = str(urls)
    both = ["--cowguard-warmup", "cowguard:django_warmup", "--cowguard-warmup-requests", u]
    return {
        "stock": (None, {}),
        "app-freeze": (None, {"COWGUARD_BENCH_RECIPE": "app-freeze"}),
        "cowguard": ([], {}),
        "cowguard + django_warmup": (["--cowguard-warmup", "cowguard:django_warmup"], {}),
        "cowguard + replay": (["--cowguard-warmup-requests", u], {}),
        "cowguard + django_warmup + replay": (both, {}),
        "cowguard + both + worker replay": (both + ["--cowguard-warmup-worker-rounds", "1"], {}),
    }


DEFAULT_CONFIGS = ["stock", "app-freeze", "cowguard", "cowguard + django_warmup", "cowguard + replay",
                   "cowguard + django_warmup + replay"]


def pages(urls):
    return [line.strip() for line in urls.read_text().splitlines() if line.strip() and not line.startswith("#")]


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


class Instance:
    def __init__(self, app, name, plugin, logdir):
        self.name, self.port, self.app = name, free_port(), app
        self.worker_replay = "--cowguard-warmup-worker-rounds" in (configs(app.urls)[name][0] or [])
        self.log = logdir / (app.name + "-" + re.sub(r"\W+", "-", name) + ".log")
        extra, extra_env = configs(app.urls)[name]
        cmd = ["uwsgi", "--master", "--workers", str(WORKERS), "--plugin", "python3",
               "--http-socket", f"127.0.0.1:{self.port}", "--chdir", str(app.wsgi.parent), "--wsgi-file", str(app.wsgi),
               "--die-on-term", "--disable-logging", "--add-header", "Connection: close"]
        if extra is not None:
            cmd += ["--plugin", plugin] + extra
        env = dict(os.environ, **app.env, **extra_env)
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self):
        """Until every worker is spawned: the socket is bound before the app loads (and the
        warmup runs), so a connection alone says nothing."""
        deadline = time.monotonic() + 300
        while not self.ready(self.log.read_text(errors="replace")):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: uWSGI did not start, see {self.log}")
            time.sleep(0.2)

    def ready(self, log):
        if f"spawned uWSGI worker {WORKERS} " not in log:
            return False
        # With cowguard-warmup-worker-rounds a worker accepts once its replay is done.
        return not self.worker_replay or len(worker_replay_ms(log)) >= WORKERS

    def workers(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.logf.close()


def wrk(port, seconds, mix):
    out = subprocess.run(["wrk", "-t", "2", "-c", "8", "-d", f"{seconds}s", "-s", str(mix),
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    return int(m.group(1)) if m else None


def cpu_ns(pid):
    """Time the process has run on a CPU (ns; /proc/PID/schedstat), whatever else the host runs."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def timed_requests(inst, workers, urls, per_worker, limit):
    """Requests one at a time (the URL list in order, over and over) until every worker has served
    `per_worker` of them, or `limit` in all. Each request is charged to the worker whose CPU time
    grew most meanwhile: {pid: [(wall_ms, cpu_ms), ...]} in order."""
    served = {w: [] for w in workers}
    i = 0
    while i < limit and min(len(v) for v in served.values()) < per_worker:
        before = {w: cpu_ns(w) for w in workers}
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{inst.port}{urls[i % len(urls)]}", timeout=60) as r:
            r.read()
            assert r.status == 200, r.status
        wall = (time.perf_counter() - t0) * 1000
        grew = {w: cpu_ns(w) - before[w] for w in workers}
        w = max(grew, key=grew.get)
        served[w].append((wall, grew[w] / 1e6))
        i += 1
    return served


def measure(inst, load_s, urls):
    workers = inst.workers()
    idle_private = [kb(w, "Private_Clean", "Private_Dirty") / 1024 for w in workers]
    first = timed_requests(inst, workers, urls, 50, 600)
    first_50 = [x for v in first.values() for x in v[:50]]
    served = wrk(inst.port, load_s, inst.app.mix)
    private = [kb(w, "Private_Clean", "Private_Dirty") / 1024 for w in workers]
    pss = (kb(inst.proc.pid, "Pss") + sum(kb(w, "Pss") for w in workers)) / 1024
    steady = [x for v in timed_requests(inst, workers, urls, 50, 600).values() for x in v]
    return {
        "private_mb_per_worker": statistics.mean(private),
        "private_mb_per_worker_before_first": statistics.mean(idle_private),
        "total_pss_mb": pss,
        "master_rss_mb": kb(inst.proc.pid, "Rss") / 1024,
        "first_per_worker": sorted(len(v) for v in first.values()),
        "first_cpu_ms_per_worker": [[round(c, 1) for _, c in v[:50]] for v in first.values()],
        "first_request_cpu_ms": statistics.mean(v[0][1] for v in first.values() if v),
        "first_p99_cpu_ms": p99([c for _, c in first_50]),
        "first_p99_wall_ms": p99([w for w, _ in first_50]),
        "steady_p99_cpu_ms": p99([c for _, c in steady]),
        "steady_p99_wall_ms": p99([w for w, _ in steady]),
        "steady_median_cpu_ms": statistics.median(c for _, c in steady),
        "wrk_requests": served,
        "loadavg_1min": os.getloadavg()[0],
        **({"worker_replay_ms": statistics.median(worker_replay_ms(inst.log.read_text(errors="replace")))}
           if inst.worker_replay else {}),
    }


def worker_replay_ms(log):
    """The "done in" figures of the workers' replays (cowguard-warmup-worker-rounds), in log order."""
    return [float(m) for m in re.findall(r"warmup replay: done in worker \d+ in ([\d.]+) ms", log)]


def warmup_lines(log):
    text = log.read_text(errors="replace")
    return [line for line in text.splitlines() if "warmup" in line and line.startswith("[cowguard]")]


def print_table(res):
    med, app = res["configurations"], res["app"]
    stock = med["stock"]
    print(f"\n| {app}, {res['workers']} workers, Python {res['versions'].get('python')} (median of {res['rounds']}) "
          f"| private MB/worker after load | vs stock | total PSS MB | vs stock | first request, CPU ms "
          f"| first 50/worker p99 CPU ms | vs stock steady p99 ({stock['steady_p99_cpu_ms']:.1f} ms) "
          f"| steady p99 CPU ms | private MB/worker before the first request | worker's replay, ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    def opt(r, key, fmt):
        return format(r[key], fmt) if key in r else "-"

    for n, r in med.items():
        print(f"| {n} | {r['private_mb_per_worker']:.1f} | {r['private_mb_per_worker'] / stock['private_mb_per_worker']:.2f}x "
              f"| {r['total_pss_mb']:.1f} | {r['total_pss_mb'] / stock['total_pss_mb']:.2f}x "
              f"| {r['first_request_cpu_ms']:.1f} | {r['first_p99_cpu_ms']:.1f} "
              f"| {r['first_p99_cpu_ms'] / stock['steady_p99_cpu_ms']:.2f}x | {r['steady_p99_cpu_ms']:.1f} "
              f"| {opt(r, 'private_mb_per_worker_before_first', '.1f')} | {opt(r, 'worker_replay_ms', '.0f')} |")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--app", choices=sorted(APPS), default="graphite")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load", type=int, default=10, help="seconds of wrk load per configuration and round")
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                    help="comma-separated, of: " + ", ".join(configs("URLS")))
    ap.add_argument("--tag", default="", help="appended to the results directory's name")
    ap.add_argument("--table", metavar="JSON", help="print the table of a results file and exit")
    a = ap.parse_args()
    if a.table:
        print_table(json.loads(Path(a.table).read_text()))
        return
    app = APPS[a.app]
    names = [n.strip() for n in a.configs.split(",")]
    unknown = [n for n in names if n not in configs(app.urls)]
    if unknown or "stock" not in names:
        ap.error(f"--configs: unknown {unknown}" if unknown else "--configs must include stock")
    plugin = os.environ.get("COWGUARD_PLUGIN", str(HERE.parent / "build" / "cowguard_plugin.so"))
    subprocess.run([embedded_python(), str(app.prepare)], check=True, capture_output=True, timeout=900)
    out = HERE / "results" / (datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{a.tag}" if a.tag else ""))
    logdir = out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    urls = pages(app.timed)
    samples = {n: [] for n in names}
    notes = {}
    for rnd in range(a.rounds):
        insts = {n: Instance(app, n, plugin, logdir) for n in names}
        try:
            for inst in insts.values():
                inst.wait_ready()
            time.sleep(2)  # every worker past its start
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for n in order:
                samples[n].append(measure(insts[n], a.load, urls))
                print(f"round {rnd + 1} {n}: {json.dumps(samples[n][-1])}", flush=True)
            for n, inst in insts.items():
                notes[n] = warmup_lines(inst.log)
        finally:
            for inst in insts.values():
                inst.stop()
    med = {n: {k: round(statistics.median(s[k] for s in v), 2) for k in v[0] if not isinstance(v[0][k], list)}
           for n, v in samples.items()}
    res = {"date": datetime.now().isoformat(timespec="seconds"), "app": app.name, "workers": WORKERS,
           "rounds": a.rounds, "load_s": a.load, "urls": str(app.urls.relative_to(HERE.parent)), "timed": str(app.timed.relative_to(HERE.parent)),
           "versions": versions(), "configurations": med, "samples": samples, "cowguard_warmup_log": notes}
    path = out / f"warmup_replay-{app.name}.json"
    path.write_text(json.dumps(res, indent=1))
    print_table(res)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
