#!/usr/bin/python3
"""Collections inside requests vs after them, in steady state, from cowguard's stats document.

  COWGUARD_PLUGIN=$PWD/build/cowguard_plugin.so /usr/bin/python3 bench/in_request_collections.py [--app gcheavy] [--seconds 10]

Starts the app with cowguard's defaults (bench/run.py's `cowguard` configuration, 4 workers) and
the stats server, loads it for --prewarm seconds (the steady state), reads each worker's
`in_request` and `after_request` collections, loads it --seconds more and prints the difference
per generation, summed over the workers, with the requests served in between.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402
from common import Uwsgi, free_port, read_stats, run_wrk  # noqa: E402


def phases(doc):
    """{phase: [gen0, gen1, gen2]} summed over the workers, and the workers' requests."""
    out = {"in_request": [0, 0, 0], "after_request": [0, 0, 0]}
    for w in doc["workers"]:
        gc = w["cowguard"]["gc"]
        for phase in out:
            for g, n in enumerate(gc[phase]["collections"]):
                out[phase][g] += n
    return out, sum(w["requests"] for w in doc["workers"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--app", default="gcheavy", choices=sorted(run.APPS))
    ap.add_argument("--prewarm", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    plugin, why = run.plugin_status()
    if not plugin:
        sys.exit("needs the plugin: %s" % why)
    app = run.APPS[args.app]
    if app.prepare:
        app.prepare()
    port, stats_port = free_port(), free_port()
    cmd = run.uwsgi_command(args.app, run.CONFIG_BY_NAME["cowguard"], 4, plugin, port) + [
        "--stats", "127.0.0.1:%d" % stats_port]
    with tempfile.TemporaryDirectory() as tmp:
        u = Uwsgi(cmd, port, 4, Path(tmp) / "uwsgi.log")
        u.start()
        try:
            run_wrk(u.url(app.path), args.prewarm, app.wrk_script)
            before, req0 = phases(read_stats(stats_port))
            run_wrk(u.url(app.path), args.seconds, app.wrk_script)
            after, req1 = phases(read_stats(stats_port))
        finally:
            u.kill()
    diff = {p: [a - b for a, b in zip(after[p], before[p])] for p in after}
    print(json.dumps({"app": args.app, "python": run.versions()["python"], "requests": req1 - req0,
                      "collections": diff}))


if __name__ == "__main__":
    main()
