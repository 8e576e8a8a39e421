#!/usr/bin/python3
"""Where a Django worker's private memory goes (issues #14, #15): per configuration, 4 workers,
prewarm then load on the bench's Django project (run.main_phase's load), then per worker the private
kB of each mapping class from /proc/PID/smaps (heap, anonymous, libpython data, .so data, stack, other)
and cowguard's copy-on-write report.

  COWGUARD_PLUGIN=$PWD/build/cowguard_plugin.so [COWGUARD_PLUGIN_BEFORE=...] /usr/bin/python3 bench/django_cow.py \
      [--configs a,b] [--load-s 10] [--repeat N]
Writes bench/results/django-cow-<stamp>-<codename>.json and prints a table.
"""
import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402
from common import mean, run_wrk, sample_workers, smaps  # noqa: E402

Config = run.Config
CONFIGS = {c.name: c for c in [
    Config("stock"),
    Config("app-freeze", recipe="app-freeze"),
    Config("cowguard", cowguard=True),
    # the plugin named by COWGUARD_PLUGIN_BEFORE (an earlier build), defaults
    Config("cowguard-before", cowguard=True),
    Config("cowguard-no-collect", cowguard=True, uwsgi_args=("--cowguard-collect-before-freeze", "false")),
    Config("cowguard-no-fill", cowguard=True, uwsgi_args=("--cowguard-fill-holes", "false")),
    Config("cowguard-between-100", cowguard=True, uwsgi_args=("--cowguard-gc-between", "100")),
    Config("cowguard-immortalize-false", cowguard=True, uwsgi_args=("--cowguard-immortalize", "false")),
    Config("cowguard-replay", cowguard=True,
           uwsgi_args=("--cowguard-warmup-requests", str(run.BENCH / "wrk" / "django_urls.txt"))),
    Config("cowguard-replay-2", cowguard=True,
           uwsgi_args=("--cowguard-warmup-requests", str(run.BENCH / "wrk" / "django_urls.txt"),
                       "--cowguard-warmup-rounds", "2")),
]}


def mapping_class(name, perms):
    if name == "[heap]":
        return "heap"
    if name == "[stack]" or name.startswith("[stack"):
        return "stack"
    if not name or name.startswith("[anon"):
        return "anon"
    if "libpython" in name or "/uwsgi" in name or name.endswith("python3"):
        return "python_binary_data" if "w" in perms else "code"
    if ".so" in name:
        return "so_data" if "w" in perms else "code"
    return "other"


def smaps_classes(pid):
    """Private kB (clean + dirty) per mapping class, and the 8 largest private mappings."""
    out, each, cur = {}, [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 else ""
                cur = [mapping_class(name, parts[1]), name, parts[0], 0]
                each.append(cur)
            elif parts[0] in ("Private_Clean:", "Private_Dirty:") and cur:
                cur[3] += int(parts[1])
    for cls, name, rng, kb in each:
        out[cls] = out.get(cls, 0) + kb
    top = sorted(each, key=lambda e: -e[3])[:8]
    return out, [{"class": c, "name": n, "range": r, "private_kb": k} for c, n, r, k in top]


def heap_range(pid):
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            if line.rstrip().endswith("[heap]"):
                lo, hi = line.split()[0].split("-")
                return int(lo, 16), int(hi, 16)
    return None


def exclusive_pages(pid, lo, hi):
    """Pages of [lo, hi) present and mapped by this process only (pagemap bits 63 and 56)."""
    n = 0
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        f.seek(lo // 4096 * 8)
        data = f.read((hi - lo) // 4096 * 8)
    for i in range(0, len(data), 8):
        e = int.from_bytes(data[i:i + 8], "little")
        if e >> 63 & 1 and e >> 56 & 1:
            n += 1
    return n


def heap_split(master, pid):
    """A worker's private [heap] pages: within the master's heap as it was at the fork (copied) and
    beyond it (grown since), in MB."""
    m, w = heap_range(master), heap_range(pid)
    if not m or not w:
        return None
    return {"copied_mb": exclusive_pages(pid, w[0], min(m[1], w[1])) * 4096 / 1048576.0,
            "grown_mb": exclusive_pages(pid, m[1], w[1]) * 4096 / 1048576.0 if w[1] > m[1] else 0.0}


def measure(config, args, plugin, logdir):
    app = "django"
    if config.name == "cowguard-before":
        plugin = os.environ["COWGUARD_PLUGIN_BEFORE"]
    a = run.APPS[app]
    cow_dir = None
    if config.cowguard:
        cow_dir = logdir / ("cow-%s-%d" % (config.name, time.monotonic_ns()))
        cow_dir.mkdir(parents=True)
    u = run.Uwsgi(app, config, args.workers, plugin, logdir / ("%s.log" % config.name), cow_dir)
    res = {"config": config.name}
    try:
        u.start()
        pids = u.worker_pids()
        if args.prewarm_s:
            run_wrk(u.url(a.path), args.prewarm_s, a.wrk_script)
        w = run_wrk(u.url(a.path), args.load_s, a.wrk_script)
        end = sample_workers(pids)
        master = smaps(u.pid)
        classes = {}
        tops = {}
        for p in pids:
            c, top = smaps_classes(p)
            tops[p] = top
            for k, v in c.items():
                classes[k] = classes.get(k, 0) + v / 1024.0 / len(pids)
        splits = [heap_split(u.pid, p) for p in pids]
        splits = [x for x in splits if x]
        res["heap_private_mb_per_worker"] = {k: round(mean(x[k] for x in splits), 2) for k in ("copied_mb", "grown_mb")} if splits else None
        res.update({
            "requests": w["requests"], "rps": w["rps"], "non_2xx": w["non_2xx"],
            "private_mb_per_worker": mean(v["private"] for v in end.values()),
            "pss_total_mb": master["pss"] + sum(v["pss"] for v in end.values()),
            "private_mb_per_worker_by_mapping": {k: round(v, 2) for k, v in sorted(classes.items())},
            "largest_private_mappings_first_worker": tops[pids[0]],
        })
        if cow_dir:
            res["cow_report"] = run.cow_report(u, cow_dir, pids)
        log = (logdir / ("%s.log" % config.name)).read_text(errors="replace")
        res["startup_lines"] = [l for l in log.splitlines() if "[cowguard]" in l and ("froze" in l or "fill" in l)][:4]
    finally:
        u.kill()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="stock,app-freeze,cowguard")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--prewarm-s", type=int, default=4)
    ap.add_argument("--load-s", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1, help="alternations of the whole configuration list")
    ap.add_argument("--label", default="")
    ap.add_argument("--rounds", type=int, default=0,
                    help="then interleaved throughput (run.throughput_rounds): app-freeze and cowguard, ROUNDS rounds")
    ap.add_argument("--round-s", type=int, default=4)
    args = ap.parse_args(argv)
    plugin = os.environ.get("COWGUARD_PLUGIN", "")
    run.ensure_django_db()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    codename = dict(l.strip().split("=", 1) for l in open("/etc/os-release") if "=" in l).get(
        "VERSION_CODENAME", "unknown").strip('"') or "unknown"
    logdir = run.BENCH / "results" / ("django-cow-%s-logs" % stamp)
    logdir.mkdir(parents=True, exist_ok=True)
    out = {"kind": "django-cow", "python": platform.python_version(), "versions": run.versions(), "codename": codename,
           "workers": args.workers, "prewarm_s": args.prewarm_s, "load_s": args.load_s, "label": args.label,
           "loadavg_at_start": os.getloadavg(), "runs": []}
    for r in range(args.repeat):
        for name in args.configs.split(","):
            res = measure(CONFIGS[name], args, plugin, logdir)
            res["round"] = r
            out["runs"].append(res)
            print("%-28s private %.2f MB/worker  PSS %.0f MB  %s heap %s" % (
                name, res["private_mb_per_worker"], res["pss_total_mb"], res["private_mb_per_worker_by_mapping"],
                res["heap_private_mb_per_worker"]),
                flush=True)
    if args.rounds:
        tp = run.throughput_rounds("django", [CONFIGS["app-freeze"], CONFIGS["cowguard"]], args.workers, plugin,
                                   logdir, args.rounds, args.round_s)
        out["throughput"] = tp
        for name, t in tp.items():
            print("%-28s req/s median %.1f (%.1f..%.1f), CPU ms/request %s, foreign CPU max %.0f%%" % (
                name, t["rps_median"], t["rps_min"], t["rps_max"], t["cpu_ms_per_request_median"],
                t["foreign_cpu_pct_max"]), flush=True)
    out["loadavg_at_end"] = os.getloadavg()
    path = run.BENCH / "results" / ("django-cow-%s-%s%s.json" % (stamp, codename, "-" + args.label if args.label else ""))
    path.write_text(json.dumps(out, indent=1))
    print(path)


if __name__ == "__main__":
    main()
