#!/usr/bin/python3
"""Run the benchmark on this system and in Debian chroots (one Python each), then merge the runs.

  bench/all.py --full  --chroot /work/chroots/trixie --chroot /work/chroots/forky   (make bench)
  bench/all.py --quick --chroot ...                                                 (make bench-quick)

This system runs bench/run.py with COWGUARD_PLUGIN as given. Each chroot (root only) gets a copy of
this checkout's tracked files (with their working-tree content) in <chroot>/src/<checkout name>,
/proc mounted if it is not, and runs `make bench-here` there, which builds the plugin against the
chroot's uWSGI and Python and runs bench/run.py. Every run writes bench/results/<stamp>/<codename>/
(results.json, PNGs, logs); the chroots' are copied back here, and bench/results/<stamp>/results.json
merges them: {"runs": {codename: that run's results}, ...}. bench/render_readme_table.py renders it.
The runs are sequential: they share the machine's cores.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402
from common import BENCH, REPO, log  # noqa: E402


def codename(root):
    """VERSION_CODENAME of the system at root (forky, as testing, may only say it in PRETTY_NAME)."""
    fields = {}
    for name in ("etc/os-release", "usr/lib/os-release"):
        p = Path(root) / name
        if p.is_file():
            for line in p.read_text().splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v.strip('"')
            break
    name = fields.get("VERSION_CODENAME") or ""
    if not name or name == "sid":
        pretty = fields.get("PRETTY_NAME", "")
        name = pretty.split("/")[0].split()[-1] if "/" in pretty else (name or "unknown")
    return name


def copy_checkout(dest):
    """This checkout's tracked files, as they are in the working tree, into dest (build/ and
    bench/results/ of an earlier copy are kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    tar_out = subprocess.Popen(["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", "-"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    tar_in = subprocess.Popen(["tar", "-C", str(dest), "-xf", "-"], stdin=tar_out.stdout)
    tar_out.stdin.write(files)
    tar_out.stdin.close()
    tar_out.stdout.close()
    if tar_in.wait() != 0 or tar_out.wait() != 0:
        raise RuntimeError("copying the checkout into %s failed" % dest)


def ensure_proc(root):
    proc = Path(root) / "proc"
    if subprocess.run(["mountpoint", "-q", str(proc)]).returncode != 0:
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
        log("mounted proc on %s (left mounted)" % proc)


def run_here(mode, out, extra):
    cmd = [sys.executable, str(BENCH / "run.py"), "--" + mode, "--out", str(out)] + extra
    return subprocess.run(cmd, cwd=str(REPO)).returncode


def run_chroot(root, mode, stamp, name, extra):
    ensure_proc(root)
    inside = "/src/" + REPO.name
    copy_checkout(Path(root) / inside.lstrip("/"))
    out_inside = "bench/results/%s/%s" % (stamp, name)
    args = " ".join(extra)
    cmd = "cd %s && make -s bench-here MODE=%s OUT=%s BENCH_ARGS='%s'" % (inside, mode, out_inside, args)
    log("%s: chroot %s bash -c \"%s\"" % (name, root, cmd))
    rc = subprocess.run(["chroot", str(root), "bash", "-c", cmd]).returncode
    src = Path(root) / inside.lstrip("/") / out_inside
    if src.is_dir():
        shutil.copytree(src, BENCH / "results" / stamp / name, dirs_exist_ok=True)
    return rc


def merge(outdir, mode):
    runs = {}
    for p in sorted(outdir.glob("*/results.json")):
        try:
            runs[p.parent.name] = report.load(p)
        except (OSError, ValueError) as e:
            log("cannot read %s: %s" % (p, e))
    merged = {"date": datetime.now().astimezone().isoformat(timespec="seconds"), "mode": mode,
              "kind": "merged", "runs": runs}
    report.write_json(outdir / "results.json", merged)
    return merged


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    ap.add_argument("--chroot", action="append", default=[], help="a Debian chroot to run in too (repeatable)")
    ap.add_argument("--no-here", action="store_true", help="only the chroots")
    ap.add_argument("bench_args", nargs="*", help="passed to bench/run.py (after --)")
    args = ap.parse_args(argv)
    mode_name = "full" if args.full else "quick"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = BENCH / "results" / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    status = {}
    if not args.no_here:
        name = codename("/")
        log("%s (this system): bench/run.py --%s" % (name, mode_name))
        status[name] = run_here(mode_name, outdir / name, args.bench_args)
    for root in args.chroot:
        if not Path(root).is_dir():
            log("%s: no such chroot, skipped" % root)
            continue
        name = codename(root)
        t = time.monotonic()
        try:
            status[name] = run_chroot(root, mode_name, stamp, name, args.bench_args)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            log("%s: %s" % (name, e))
            status[name] = 1
        log("%s: done in %.0f s, exit status %s" % (name, time.monotonic() - t, status[name]))
    merged = merge(outdir, mode_name)
    print()
    for name, r in merged["runs"].items():
        v = r.get("versions", {})
        print("%s: Python %s, uWSGI %s, Django %s, %.0f s, load average %s at start -> %s"
              % (name, v.get("python"), v.get("uwsgi"), v.get("django"), r.get("elapsed_s") or 0,
                 r.get("loadavg_at_start"), outdir / name))
    print("Merged results: %s (%.0f s in all)" % (outdir / "results.json", time.monotonic() - t0))
    print("README tables: /usr/bin/python3 bench/render_readme_table.py --update README.md %s"
          % os.path.relpath(outdir / "results.json", REPO))
    return 0 if status and all(v == 0 for v in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
