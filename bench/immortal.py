#!/usr/bin/python3
"""cowguard-immortalize side by side (issue #14), on the heapread app (bench/apps/heapread.py:
requests read 1000 random rows of a 300k-row fork-time heap) and the Django project (--apps).

1. Memory: each configuration alone, 4 workers, wrk -t2 -c8 for --load-s seconds (run.main_phase):
   private MB per worker (Private_Clean + Private_Dirty) and total PSS (master + workers) at the
   end of the load. Configurations: stock, app-freeze (the app's own gc.collect(); gc.freeze()),
   cowguard with cowguard-immortalize = false, = true, and = true without cowguard-fill-holes.
2. Throughput: the same configurations started at once, --rounds rounds of --round-s seconds of wrk
   each, order rotated every round (run.throughput_rounds): medians.
3. Immortalization time per object count: cowguard (immortalize = true) started with HEAPREAD_ROWS
   in --rows-list; the master's startup line gives objects made immortal and the time.

  COWGUARD_PLUGIN=$PWD/build/cowguard_plugin.so /usr/bin/python3 bench/immortal.py
Writes bench/results/immortal-<YYYYmmdd-HHMMSS>.json and prints markdown tables.
"""
import argparse
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

APP = "heapread"  # the app of the immortalization-time phase
Config = run.Config
CONFIGS = [
    Config("stock"),
    Config("app-freeze", recipe="app-freeze"),
    Config("cowguard-immortalize-false", uwsgi_args=("--cowguard-immortalize", "false"), cowguard=True),
    Config("cowguard-immortalize-true", uwsgi_args=("--cowguard-immortalize", "true"), cowguard=True),
    Config("cowguard-immortalize-true-no-fill", cowguard=True,
           uwsgi_args=("--cowguard-immortalize", "true", "--cowguard-fill-holes", "false")),
]
STARTUP = re.compile(r"froze (\d+) objects in ([\d.]+) ms .*immortalized (\d+) objects in ([\d.]+) ms")


def immortalize_times(plugin, rows_list, logdir):
    out = []
    config = CONFIGS[3]
    for rows in rows_list:
        os.environ["HEAPREAD_ROWS"] = str(rows)
        logpath = logdir / ("immortalize-%d.log" % rows)
        u = run.Uwsgi(APP, config, 1, plugin, logpath)
        try:
            u.start()
            m = STARTUP.search(logpath.read_text(errors="replace"))
            if not m:
                raise RuntimeError("no startup line in %s" % logpath)
            out.append({"rows": rows, "frozen": int(m.group(1)), "freeze_ms": float(m.group(2)),
                        "immortal_objects": int(m.group(3)), "immortalize_ms": float(m.group(4)),
                        "master_rss_mb": run.smaps(u.pid)["rss"]})
            run.log("rows %d: %d objects immortal in %.1f ms" % (rows, out[-1]["immortal_objects"],
                                                                 out[-1]["immortalize_ms"]))
        finally:
            u.kill()
            os.environ.pop("HEAPREAD_ROWS", None)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apps", default="heapread,django")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--load-s", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--round-s", type=int, default=4)
    ap.add_argument("--rows-list", default="0,30000,100000,300000,1000000")
    args = ap.parse_args(argv)
    plugin = os.environ.get("COWGUARD_PLUGIN")
    if not plugin or not os.path.exists(plugin):
        sys.exit("COWGUARD_PLUGIN must name the built cowguard_plugin.so")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = run.BENCH / "results" / ("immortal-%s-logs" % stamp)
    logdir.mkdir(parents=True, exist_ok=True)
    durations = run.Durations(load_s=args.load_s, cycles_s=1)
    apps = [a for a in args.apps.split(",") if a]
    if "django" in apps:
        run.ensure_django_db()
    results = {"python": sys.version.split()[0], "workers": args.workers, "load_s": args.load_s, "apps": {}}
    for app in apps:
        res = results["apps"][app] = {"memory": {}}
        for config in CONFIGS:
            run.log("%s memory: %s" % (app, config.name))
            r = run.main_phase(app, config, args, durations, plugin, logdir)
            res["memory"][config.name] = {k: r.get(k) for k in (
                "private_mb_per_worker", "pss_total_mb", "rps", "requests", "master_rss_mb", "non_2xx",
                "socket_errors", "private_mb_per_worker_before_load", "notes")}
        if args.rounds:
            tp = run.throughput_rounds(app, CONFIGS, args.workers, plugin, logdir, args.rounds, args.round_s)
            res["throughput"] = {n: {k: v for k, v in f.items() if k != "rounds"} for n, f in tp.items()}
    rows_list = [int(x) for x in args.rows_list.split(",") if x.strip()]
    results["immortalize_time"] = immortalize_times(plugin, rows_list, logdir)
    out = run.BENCH / "results" / ("immortal-%s.json" % stamp)
    out.write_text(json.dumps(results, indent=1))

    print("Python %s, %d workers, %d s of wrk -t%d -c%d per configuration\n" % (
        results["python"], args.workers, args.load_s, run.WRK_THREADS, run.WRK_CONNECTIONS))
    for app, res in results["apps"].items():
        stock = res["memory"]["stock"]
        fr = res.get("throughput", {}).get("app-freeze", {}).get("rps_median")
        print("%s\n\n| configuration | private MB/worker | x stock | total PSS MB | x stock | req/s (median of %d rounds) | x app-freeze |"
              % (app, args.rounds))
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, m in res["memory"].items():
            rps = res.get("throughput", {}).get(name, {}).get("rps_median")
            print("| %s | %.1f | %.2f | %.0f | %.2f | %s | %s |" % (
                name, m["private_mb_per_worker"], m["private_mb_per_worker"] / stock["private_mb_per_worker"],
                m["pss_total_mb"], m["pss_total_mb"] / stock["pss_total_mb"], "%.0f" % rps if rps else "-",
                "%.2f" % (rps / fr) if rps and fr else "-"))
        print()
    print("\n| rows | frozen | made immortal | immortalize ms | ns/object |")
    print("|---:|---:|---:|---:|---:|")
    for t in results["immortalize_time"]:
        print("| %d | %d | %d | %.1f | %.0f |" % (t["rows"], t["frozen"], t["immortal_objects"], t["immortalize_ms"],
                                                1e6 * t["immortalize_ms"] / max(1, t["immortal_objects"])))
    print("\n%s" % out)


if __name__ == "__main__":
    main()
