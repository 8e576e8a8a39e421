#!/usr/bin/python3
"""Throughput side by side, interleaved: every configuration of bench/run.py runs at the same time
(idle but for the one under load), and short wrk loads rotate over them for several rounds, so a
slow moment of the host or a drift of the CPU clock spreads over all configurations instead of
landing on one. Reports, per configuration, the median req/s and the median uWSGI CPU per request
over the rounds, and the ratios of cowguard against the recipes: of the medians, and the median of
the per-round ratios (each round's pair ran at the same moment).

  COWGUARD_PLUGIN=$PWD/build/cowguard_plugin.so /usr/bin/python3 bench/throughput.py [--rounds 5] [--seconds 4]
      [--configs article-recipe,cowguard]   (two side by side: more rounds in the same time)

Writes bench/results/<YYYYmmdd-HHMMSS>-throughput/throughput.json and prints a markdown table.
The rounds themselves are bench/run.py's throughput_rounds(), which `make bench` also runs.
"""
import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: the configurations, uWSGI instances and wrk)


def ratios(figures):
    """cowguard's median req/s and CPU per request against each other configuration's."""
    cg = figures.get("cowguard")
    if not cg:
        return {}
    res = {}
    for name, f in figures.items():
        if name == "cowguard":
            continue
        r = {"rps": round(cg["rps_median"] / f["rps_median"], 3) if f["rps_median"] else None}
        if cg["cpu_ms_per_request_median"] and f["cpu_ms_per_request_median"]:
            r["cpu_ms_per_request"] = round(cg["cpu_ms_per_request_median"] / f["cpu_ms_per_request_median"], 3)
        # The rounds are interleaved, so each round's pair saw the same moment of the host: the
        # median of the per-round ratios is the steadier figure when the host's speed drifts.
        pairs = [(c["rps"], o["rps"]) for c, o in zip(cg.get("rounds", []), f.get("rounds", [])) if o["rps"]]
        if pairs:
            r["rps_per_round_median"] = round(statistics.median(c / o for c, o in pairs), 3)
            r["rounds_cowguard_faster"] = "%d of %d" % (sum(c > o for c, o in pairs), len(pairs))
        res["cowguard_vs_" + name] = r
    return res


def table(figures):
    lines = ["| configuration | req/s (median) | min-max | CPU ms/request | p99 ms |", "|---|---|---|---|---|"]
    for name, f in figures.items():
        lines.append("| %s | %.0f | %.0f-%.0f | %.3f | %.1f |" % (
            name, f["rps_median"], f["rps_min"], f["rps_max"], f["cpu_ms_per_request_median"] or 0,
            f["p99_ms_median"]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--app", default="gcheavy", choices=sorted(run.APPS))
    full = run.durations("full", "graphite")  # the same rounds as `make bench`
    ap.add_argument("--rounds", type=int, default=full.rounds)
    ap.add_argument("--seconds", type=int, default=full.round_s)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--configs", help="comma-separated configurations to compare (default: bench/run.py's defaults), "
                                      "of: %s" % ",".join(run.CONFIG_BY_NAME))
    args = ap.parse_args(argv)
    names = args.configs.split(",") if args.configs else None
    unknown = [n for n in names or [] if n not in run.CONFIG_BY_NAME]
    if unknown:
        ap.error("unknown configuration %s; known: %s" % (", ".join(unknown), ",".join(run.CONFIG_BY_NAME)))
    plugin, why = run.plugin_status()
    if plugin:
        plugin, _ = run.snapshot_plugin(plugin)
    else:
        run.log("cowguard configurations skipped: %s" % why)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = run.BENCH / "results" / (stamp + "-throughput")
    (outdir / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    python = tuple(int(x) for x in run.versions()["python"].split(".")[:2])
    configs = [c for c in run.CONFIGS if (c.name in names if names else c.default) and not c.skip_reason(python, why)]
    figures = run.throughput_rounds(args.app, configs, args.workers, plugin, outdir / "logs", args.rounds,
                                   args.seconds)
    doc = {"date": datetime.now().isoformat(timespec="seconds"), "machine": run.machine_info(),
           "app": args.app, "workers": args.workers, "rounds": args.rounds, "seconds": args.seconds,
           "configurations": figures, "ratios": ratios(figures), "elapsed_s": round(time.monotonic() - t0, 1)}
    (outdir / "throughput.json").write_text(json.dumps(doc, indent=2))
    print(table(figures))
    print()
    print(json.dumps(doc["ratios"], indent=2))
    print("\nwritten: %s" % (outdir / "throughput.json"))


if __name__ == "__main__":
    main()
