#!/usr/bin/env python3
"""The Django warmup and cowguard-trim on the Django project, in one run: private memory per
worker after the first 100 requests, for a cold project (wsgi.py without its own warm-up,
DJANGOPROJ_WARM=0) under cowguard with and without `cowguard-warmup = cowguard:django_warmup`
and with and without `cowguard-trim`; stock uWSGI as the reference. Each configuration runs
`--rounds` times, interleaved; the table gives medians.

Usage: COWGUARD_PLUGIN=build/cowguard_plugin.so /usr/bin/python3 bench/warmup_trim.py [--rounds 3]
Writes bench/results/<date>/warmup_trim.json and prints a markdown table.
"""
import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import default_plugin, free_port, kill_group, rollup_kb as kb, spawn  # noqa: E402

HERE = Path(__file__).resolve().parent
PROJ = HERE / "apps" / "djangoproj"
WORKERS = 4
DJANGO_WARMUP = ["--cowguard-warmup", "cowguard:django_warmup"]
TRIM = ["--cowguard-trim", "true"]
# name -> cowguard's options (None: stock uWSGI, without the plugin)
CONFIGS = {
    "stock": None,
    "cowguard": [],
    "cowguard + django_warmup": DJANGO_WARMUP,
    "cowguard + trim": TRIM,
    "cowguard + django_warmup + trim": DJANGO_WARMUP + TRIM,
}


def paths():
    out = []
    for i in range(100):
        k = i % 10
        if k == 0:
            out.append("/")
        elif k <= 2:
            out.append(f"/products/?page={(i * 7) % 80 + 1}")
        elif k <= 4:
            out.append(f"/category/cat-{(i * 5) % 24:02d}/")
        else:
            out.append(f"/product/{(i * 389) % 4000 + 1}/")
    return out


def run(plugin, extra):
    port = free_port()
    cmd = ["uwsgi", "--master", "--workers", str(WORKERS), "--plugin", "python3", "--http-socket", f"127.0.0.1:{port}",
           "--chdir", str(PROJ), "--wsgi-file", str(PROJ / "wsgi.py"), "--die-on-term", "--disable-logging"]
    if extra is not None:
        cmd += ["--plugin", plugin] + extra
    env = dict(os.environ, DJANGOPROJ_WARM="0")
    proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"uWSGI did not start: {' '.join(cmd)}")
                time.sleep(0.2)
        time.sleep(1)
        kids = [int(x) for x in subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                                               text=True).stdout.split()]
        before = statistics.mean(kb(k, "Private_Clean", "Private_Dirty") for k in kids)

        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                r.read()
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
            list(ex.map(get, paths()))  # the first 100 requests, spread over the workers
        after = [kb(k, "Private_Clean", "Private_Dirty") for k in kids]
        return {"private_mb_before": before / 1024, "private_mb_after_100": statistics.mean(after) / 1024,
                "master_rss_mb": kb(proc.pid, "Rss") / 1024}
    finally:
        kill_group(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    plugin = default_plugin()
    subprocess.run(["/usr/bin/python3", str(PROJ / "make_db.py")], check=True, capture_output=True)
    samples = {name: [] for name in CONFIGS}
    for _ in range(a.rounds):
        for name, extra in CONFIGS.items():
            samples[name].append(run(plugin, extra))
    res = {"date": datetime.now().isoformat(timespec="seconds"), "workers": WORKERS, "rounds": a.rounds,
           "configurations": {n: {k: round(statistics.median(s[k] for s in v), 2) for k in v[0]} for n, v in samples.items()},
           "samples": samples}
    out = HERE / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "warmup_trim.json").write_text(json.dumps(res, indent=1))
    print(f"| Django, cold wsgi.py, {WORKERS} workers (median of {a.rounds}) | private MB/worker at start | after 100 requests | master RSS MB |")
    print("|---|---:|---:|---:|")
    for n, r in res["configurations"].items():
        print(f"| {n} | {r['private_mb_before']:.1f} | {r['private_mb_after_100']:.1f} | {r['master_rss_mb']:.1f} |")
    print(f"\nwritten {out / 'warmup_trim.json'}")


if __name__ == "__main__":
    main()
