#!/usr/bin/python3
"""`make demo`: cowguard on and off on the gcheavy app, then the quick side-by-side benchmark.

1. Starts uWSGI with configs/demo.ini (or, while that file does not exist or cannot start, the
   equivalent flags: master, 4 workers, plugins python3 + cowguard, http-socket on 127.0.0.1, the
   gcheavy app), puts 10 s of wrk load on it and prints each worker's private and shared memory.
2. Same again with `--cowguard false` on the command line (it overrides the ini).
3. Runs bench/run.py --quick --apps gcheavy,heapread (about 2 minutes).
Total under 3 minutes on 2 cores. Needs COWGUARD_PLUGIN (the Makefile sets it after building).
"""
import argparse
import configparser
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (process-group cleanup, /proc readers, wrk wrapper)

REPO = run.REPO
DEFAULT_INI = REPO / "configs" / "demo.ini"
INI = DEFAULT_INI
LOAD_S = int(os.environ.get("COWGUARD_DEMO_LOAD_S", "10"))
WORKERS = 4


def ini_settings(path):
    """The [uwsgi] section of an ini as a dict (last value wins), or None if unreadable."""
    cp = configparser.ConfigParser(strict=False, interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        with open(path) as f:
            cp.read_file(f)
    except (OSError, configparser.Error) as e:
        print("demo: cannot parse %s (%s); using command-line flags" % (path, e))
        return None
    if not cp.has_section("uwsgi"):
        print("demo: %s has no [uwsgi] section; using command-line flags" % path)
        return None
    return {k.strip().replace("_", "-"): v.strip() for k, v in cp.items("uwsgi")}


def port_of(address):
    host, _, port = address.rpartition(":")
    if port.isdigit() and host in ("", "127.0.0.1", "localhost", "0.0.0.0", "[::]", "::"):
        return int(port)
    return None


def ini_command(plugin):
    """uWSGI command for configs/demo.ini plus what it lacks; (cmd, port) or None."""
    if not INI.is_file():
        return None
    s = ini_settings(INI)
    if s is None:
        return None
    # a `plugins = python3,cowguard` line finds cowguard_plugin.so in --plugins-dir (it has to come
    # before --ini: uWSGI loads plugins while it parses)
    cmd = [run.UWSGI, "--plugins-dir", os.path.dirname(plugin), "--ini", str(INI)]
    port = None
    for key in ("http-socket", "http"):
        if key in s:
            port = port_of(s[key].split(",")[0].strip())
            if port is None:
                print("demo: %s = %s in %s is not a local port; using command-line flags" % (key, s[key], INI))
                return None
            break
    if port is None:
        port = run.free_port()
        cmd += ["--http-socket", "127.0.0.1:%d" % port]
    plugins = ",".join(s.get(k, "") for k in ("plugins", "plugin", "need-plugin", "need-plugins"))
    if "cowguard" not in plugins:
        cmd += ["--plugin", plugin]
    if not any(k in s for k in ("wsgi-file", "module", "wsgi", "mount")):
        cmd += ["--wsgi-file", str(run.APPS["gcheavy"].wsgi_file)]
    if "die-on-term" not in s:
        cmd += ["--die-on-term"]
    if "add-header" not in s:
        cmd += ["--add-header", "Connection: close"]  # uWSGI closes anyway; tells wrk so
    return cmd, port, int(s.get("workers", s.get("processes", WORKERS)) or WORKERS)


def flags_command(plugin):
    port = run.free_port()
    cmd = [run.UWSGI, "--master", "--workers", str(WORKERS), "--plugin", "python3", "--plugin", plugin,
           "--http-socket", "127.0.0.1:%d" % port, "--wsgi-file", str(run.APPS["gcheavy"].wsgi_file),
           "--die-on-term", "--disable-logging", "--add-header", "Connection: close"]
    return cmd, port, WORKERS


def measure(label, cmd, port, workers, logdir, expect_frozen):
    u = run.common.Uwsgi(cmd, port, workers, logdir / ("demo-%s.log" % label), name=label)
    try:
        gc_state = json.loads(u.start())
        frozen = gc_state.get("freeze_count", 0) > 0
        if frozen != expect_frozen:
            raise RuntimeError("cowguard looks %s (gc.get_freeze_count() = %s in a worker); see %s"
                               % ("on" if frozen else "off", gc_state.get("freeze_count"), u.logpath))
        pids = u.worker_pids()
        w = run.run_wrk(u.url("/"), LOAD_S)
        mem = run.sample_workers(pids)
        print()
        print("%s: %.0f req/s, p50 %.1f ms, p99 %.1f ms over %d s (gc in a worker: enabled=%s, "
              "threshold=%s, frozen objects=%s)" % (label, w["rps"], w["p50_ms"], w["p99_ms"], LOAD_S,
                                                    gc_state.get("isenabled"), tuple(gc_state.get("threshold", ())),
                                                    gc_state.get("freeze_count")))
        print("  $ %s" % " ".join(cmd))
        print("  %-8s %9s %10s %11s %8s" % ("worker", "RSS MB", "shared MB", "private MB", "PSS MB"))
        for p in sorted(mem):
            m = mem[p]
            print("  %-8d %9.1f %10.1f %11.1f %8.1f" % (p, m["rss"], m["shared"], m["private"], m["pss"]))
        master = run.smaps(u.pid)
        print("  %-8s %9.1f %10.1f %11.1f %8.1f" % ("master", master["rss"], master["shared"], master["private"],
                                                    master["pss"]))
        total_pss = master["pss"] + sum(m["pss"] for m in mem.values())
        print("  total PSS (master + workers): %.0f MB" % total_pss)
        return {"rps": w["rps"], "private": run.mean(m["private"] for m in mem.values()),
                "shared": run.mean(m["shared"] for m in mem.values()), "pss_total": total_pss}
    finally:
        u.kill()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-bench", action="store_true", help="skip the final bench/run.py --quick --apps gcheavy,heapread")
    ap.add_argument("--ini", default=str(DEFAULT_INI), help="uWSGI ini to demo (default configs/demo.ini)")
    args = ap.parse_args(argv)
    global INI
    INI = Path(args.ini)
    t0 = time.monotonic()
    plugin, why = run.plugin_status()
    if not plugin:
        print("demo: %s. Run it as `make demo`, which builds build/cowguard_plugin.so first." % why,
              file=sys.stderr)
        return 2
    logdir = Path(os.environ.get("TMPDIR", "/tmp")) / ("cowguard-demo-%d" % os.getpid())
    logdir.mkdir(parents=True, exist_ok=True)

    print("cowguard demo: gcheavy app (300k-row heap, ~95 MB) under %d s of `wrk -t2 -c8` on 127.0.0.1, "
          "with cowguard on and then off. uWSGI logs: %s" % (LOAD_S, logdir))
    results = {}
    source = str(INI)
    try:
        ic = ini_command(plugin)
        if ic is None:
            source = "command-line flags" + (" (%s not found)" % INI if not INI.exists() else "")
            ic = flags_command(plugin)
        cmd, port, workers = ic
        try:
            results["on"] = measure("cowguard-on", cmd, port, workers, logdir, expect_frozen=True)
        except RuntimeError as e:
            if source != str(INI):
                raise
            print("demo: %s did not work (%s); retrying with command-line flags" % (INI, e))
            source = "command-line flags (%s failed)" % INI
            cmd, port, workers = flags_command(plugin)
            results["on"] = measure("cowguard-on", cmd, port, workers, logdir, expect_frozen=True)
        results["off"] = measure("cowguard-off", cmd + ["--cowguard", "false"], port, workers, logdir,
                                 expect_frozen=False)
    except (RuntimeError, OSError) as e:
        print("demo: failed: %s" % e, file=sys.stderr)
        run.kill_all()
        return 1
    on, off = results["on"], results["off"]
    print()
    print("Summary (%s): private memory per worker %.1f MB with cowguard vs %.1f MB without (shared %.1f vs "
          "%.1f MB); total PSS %.0f vs %.0f MB; %.0f vs %.0f req/s." % (
              source, on["private"], off["private"], on["shared"], off["shared"], on["pss_total"],
              off["pss_total"], on["rps"], off["rps"]))
    print("(wrk runs on the same %d cores as uWSGI: compare the req/s, don't read them as capacity.)"
          % os.cpu_count())
    print("demo part took %.0f s" % (time.monotonic() - t0))
    if args.no_bench:
        return 0
    print()
    print("Now the side-by-side benchmark: bench/run.py --quick --apps gcheavy,heapread")
    sys.stdout.flush()
    r = subprocess.run([sys.executable, str(run.BENCH / "run.py"), "--quick", "--apps", "gcheavy,heapread"], cwd=str(REPO), timeout=600)
    print("demo total: %.0f s" % (time.monotonic() - t0))
    return r.returncode


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        run.kill_all()
        sys.exit(130)
