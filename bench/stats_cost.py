#!/usr/bin/env python3
"""What cowguard's stats cost the master: CPU of the master with N workers over a window, with
cowguard's sampler (interval 1 s) and without the plugin, side by side; and the time to serve
one stats document. Prints a markdown table and writes bench/results/<date>/stats_cost.json.

Usage: COWGUARD_PLUGIN=build/cowguard_plugin.so /usr/bin/python3 bench/stats_cost.py [--workers 64] [--seconds 30]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds as cpu_s, default_plugin, free_port, kill_group, read_stats, read_stats_bytes, spawn  # noqa: E402

HERE = Path(__file__).resolve().parent
APP = HERE.parent / "configs" / "apps" / "gcinfo.py"


def read_doc(port):
    t0 = time.perf_counter()
    data = read_stats_bytes(port)
    took = time.perf_counter() - t0
    json.loads(data)
    return took, len(data)


def measure(plugin, workers, seconds):
    http, stats = free_port(), free_port()
    cmd = ["uwsgi", "--master", "--workers", str(workers), "--plugin", "python3", "--http-socket",
           f"127.0.0.1:{http}", "--stats", f"127.0.0.1:{stats}", "--wsgi-file", str(APP), "--die-on-term",
           "--disable-logging"]
    if plugin:
        cmd[6:6] = ["--plugin", plugin]
    proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if sum(1 for w in read_stats(stats)["workers"] if w["pid"] > 0) == workers:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        time.sleep(3)  # let the first samplings settle
        c0, t0 = cpu_s(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu = (cpu_s(proc.pid) - c0) / (time.monotonic() - t0)
        serve = [read_doc(stats) for _ in range(20)]
        return {"master_cpu_pct": round(100 * cpu, 3), "doc_ms_mean": round(1000 * statistics.mean(t for t, _ in serve), 2),
                "doc_ms_max": round(1000 * max(t for t, _ in serve), 2), "doc_bytes": serve[0][1]}
    finally:
        kill_group(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30)
    a = ap.parse_args()
    plugin = default_plugin()
    stock = measure(None, a.workers, a.seconds)
    cow = measure(plugin, a.workers, a.seconds)
    res = {"date": datetime.now().isoformat(timespec="seconds"), "workers": a.workers, "seconds": a.seconds,
           "interval_s": 1, "stock": stock, "cowguard": cow,
           "sampling_cpu_pct": round(cow["master_cpu_pct"] - stock["master_cpu_pct"], 3)}
    out = HERE / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats_cost.json").write_text(json.dumps(res, indent=1))
    print(f"| {a.workers} workers, {a.seconds:.0f} s | master CPU % of a core | stats document ms (mean / max of 20) | bytes |")
    print("|---|---:|---:|---:|")
    for name in ("stock", "cowguard"):
        r = res[name]
        print(f"| {name} | {r['master_cpu_pct']:.2f} | {r['doc_ms_mean']:.1f} / {r['doc_ms_max']:.1f} | {r['doc_bytes']} |")
    print(f"\nsampling cost: {res['sampling_cpu_pct']:.2f}% of a core (cowguard minus stock); written {out / 'stats_cost.json'}")


if __name__ == "__main__":
    main()
