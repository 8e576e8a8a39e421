#!/usr/bin/env python3
"""What cowguard-prometheus costs the master: one uWSGI master with N workers (cowguard, sampler
every 1 s, cowguard-prometheus on), measured in alternating windows without scrapes and with one
scrape a second (what a Prometheus server with scrape_interval 1s does), R rounds each, so that
the machine's other load falls on both sides alike. Per window: the whole master's CPU and its
threads' (cowguard-prom: the endpoint; cowguard-sample: the sampler), from /proc. Then 50 scrapes
back to back: client-side time and bytes. Prints a markdown table and writes
bench/results/<date>/prometheus_cost.json.

Usage: COWGUARD_PLUGIN=build/cowguard_plugin.so /usr/bin/python3 bench/prometheus_cost.py [--workers 64] [--seconds 20] [--rounds 3]
"""
import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import default_plugin, free_port, kill_group, spawn  # noqa: E402

HERE = Path(__file__).resolve().parent
APP = HERE.parent / "configs" / "apps" / "gcinfo.py"


def cpu_s(schedstat_path):
    """CPU time in seconds from a schedstat file (nanoseconds on CPU, its first field): precise where
    /proc/PID/stat counts 10 ms ticks, which one scrape (under a millisecond) would not move."""
    return int(open(schedstat_path).read().split()[0]) / 1e9


def thread_stat(pid, name):
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == name:
            return str(task / "schedstat")
    raise SystemExit(f"no thread {name} in {pid}")


def master_cpu_s(pid):
    """The whole master: the sum of its threads' schedstat (/proc/PID/schedstat is the main thread's)."""
    return sum(cpu_s(str(t / "schedstat")) for t in Path(f"/proc/{pid}/task").iterdir())


def scrape(port):
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    took = time.perf_counter() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return took, body


def window(pid, threads, seconds, scrape_port=None):
    """CPU % of a core of the master and of each named thread over `seconds`, scraping once a
    second when scrape_port is given."""
    before = {"master": master_cpu_s(pid)} | {n: cpu_s(p) for n, p in threads.items()}
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        if scrape_port:
            scrape(scrape_port)
            n += 1
        next_tick = t0 + n if scrape_port else t0 + seconds
        time.sleep(max(0.0, min(next_tick, t0 + seconds) - time.monotonic()))
    wall = time.monotonic() - t0
    after = {"master": master_cpu_s(pid)} | {n_: cpu_s(p) for n_, p in threads.items()}
    return {k: 100 * (after[k] - before[k]) / wall for k in before}, n


def gauge(body, name):
    """The value of an instance-wide series in an exposition."""
    for line in body.decode().splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    plugin = default_plugin()
    http, prom = free_port(), free_port()
    cmd = ["uwsgi", "--master", "--workers", str(a.workers), "--plugin", "python3", "--plugin", plugin,
           "--http-socket", f"127.0.0.1:{http}", "--wsgi-file", str(APP), "--die-on-term", "--disable-logging",
           "--cowguard-prometheus", f"127.0.0.1:{prom}"]
    proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "uWSGI did not come up"
            try:
                _, body = scrape(prom)
                if body.count(b'cowguard_process_uss_bytes{') >= a.workers:
                    break
            except (OSError, AssertionError):
                pass
            time.sleep(0.5)
        time.sleep(3)  # let the first samplings settle
        threads = {n: thread_stat(proc.pid, n) for n in ("cowguard-prom", "cowguard-sample")}
        idle, scraped = [], []
        for _ in range(a.rounds):
            idle.append(window(proc.pid, threads, a.seconds)[0])
            scraped.append(window(proc.pid, threads, a.seconds, prom)[0])
        p0 = cpu_s(threads["cowguard-prom"])
        runs = [scrape(prom) for _ in range(50)]
        prom_cpu_ms = 1000 * (cpu_s(threads["cowguard-prom"]) - p0) / len(runs)
    finally:
        kill_group(proc)

    def mean(rows, key):
        return round(statistics.mean(r[key] for r in rows), 3)

    times = [t for t, _ in runs]
    res = {"date": datetime.now().isoformat(timespec="seconds"), "workers": a.workers, "seconds": a.seconds,
           "rounds": a.rounds, "interval_s": 1, "scrape_every_s": 1,
           "idle": idle, "scraped": scraped,
           "master_cpu_pct": {"idle": mean(idle, "master"), "scraped": mean(scraped, "master")},
           "prom_thread_cpu_pct": {"idle": mean(idle, "cowguard-prom"), "scraped": mean(scraped, "cowguard-prom")},
           "sampler_cpu_pct": {"idle": mean(idle, "cowguard-sample"), "scraped": mean(scraped, "cowguard-sample")},
           "scrape_ms": {"median": round(1000 * statistics.median(times), 2), "max": round(1000 * max(times), 2)},
           "scrape_cpu_ms": round(prom_cpu_ms, 3), "scrape_bytes": len(runs[0][1]),
           "sampler": {k: gauge(runs[-1][1], f"cowguard_sampler_{k}") for k in ("interval_seconds", "round_seconds")}}
    out = HERE / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "prometheus_cost.json").write_text(json.dumps(res, indent=1))
    print(f"| {a.workers} workers, {a.rounds} x {a.seconds:.0f} s windows | no scrapes | a scrape every second | added |")
    print("|---|---:|---:|---:|")
    for label, key in (("master, % of a core", "master_cpu_pct"), ("cowguard-prom thread", "prom_thread_cpu_pct"),
                       ("cowguard-sample thread", "sampler_cpu_pct")):
        r = res[key]
        print(f"| {label} | {r['idle']:.2f} | {r['scraped']:.2f} | {r['scraped'] - r['idle']:+.2f} |")
    print(f"\none scrape: {res['scrape_bytes']} bytes, {res['scrape_ms']['median']:.2f} ms median "
          f"({res['scrape_ms']['max']:.2f} ms max) of 50 back to back, {res['scrape_cpu_ms']:.2f} ms of the "
          f"endpoint thread's CPU; the sampler's interval {res['sampler']['interval_seconds']:.2f} s, its round "
          f"{1000 * res['sampler']['round_seconds']:.1f} ms; written {out / 'prometheus_cost.json'}")


if __name__ == "__main__":
    main()
