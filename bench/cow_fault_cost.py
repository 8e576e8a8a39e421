#!/usr/bin/env python3
"""What one copy-on-write page fault costs on this host (issue 18: a fresh worker's first request
takes 1,000-2,600 of them). The parent writes 200 MB (every page present), forks; the child writes
one byte per 4 KiB page and reports its minor faults, and the CPU (thread time) and wall time per
fault. Repeated --runs times; prints one JSON line per run. No uWSGI needed.

  /usr/bin/python3 bench/cow_fault_cost.py [--runs 3] [--mb 200]
"""
import argparse
import json
import os
import time


def minflt():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def run(mb):
    n = mb << 20
    buf = bytearray(n)
    for i in range(0, n, 4096):
        buf[i] = 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        f0, c0, t0 = minflt(), time.thread_time(), time.perf_counter()
        for i in range(0, n, 4096):
            buf[i] = 2
        f1, c1, t1 = minflt(), time.thread_time(), time.perf_counter()
        faults = max(1, f1 - f0)
        os.write(w, json.dumps({"faults": f1 - f0, "cpu_us_per_fault": round((c1 - c0) * 1e6 / faults, 2),
                                "wall_us_per_fault": round((t1 - t0) * 1e6 / faults, 2)}).encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 4096)
    os.waitpid(pid, 0)
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=int, default=200)
    a = ap.parse_args()
    for _ in range(a.runs):
        print(json.dumps({**run(a.mb), "loadavg_1min": os.getloadavg()[0], "kernel": os.uname().release}), flush=True)


if __name__ == "__main__":
    main()
