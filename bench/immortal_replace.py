#!/usr/bin/python3
"""What replacing a fork-time module-level cache costs a worker, with and without
cowguard-immortalize (issue #14): tests/apps/immortal_heap.py with 300k rows, one worker,
private MB (Private_Clean + Private_Dirty) after one request, then after each of 5 /replace
(the worker rebuilds its 30k-entry CACHE).

  COWGUARD_PLUGIN=$PWD/build/cowguard_plugin.so /usr/bin/python3 bench/immortal_replace.py
"""
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, kill_group, spawn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLUGIN = os.environ["COWGUARD_PLUGIN"]


def private_mb(pid):
    v = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            p = line.split()
            if len(p) >= 3 and p[-1] == "kB":
                v[p[0].rstrip(":")] = int(p[1])
    return (v["Private_Clean"] + v["Private_Dirty"]) / 1024


for mode in ("false", "true"):
    port = free_port()
    p = spawn(["uwsgi", "--master", "--plugin", "python3", "--plugin", PLUGIN,
               "--http-socket", f"127.0.0.1:{port}", "--die-on-term",
               "--pythonpath", str(REPO / "tests" / "apps"), "--module", "immortal_heap",
               "--workers", "1", "--env", "HEAP_ROWS=300000", "--cowguard-immortalize", mode,
               "--disable-logging"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                pid = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/read?seed=1"))["pid"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        out = [round(private_mb(pid), 1)]
        for _ in range(5):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/replace").read()
            out.append(round(private_mb(pid), 1))
        print(f"cowguard-immortalize = {mode}: private MB after 0..5 replacements: {out}", flush=True)
    finally:
        kill_group(p)
