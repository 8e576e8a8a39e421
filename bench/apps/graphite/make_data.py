#!/usr/bin/env python3
"""Build the graphite-web benchmark's data once: whisper files and the SQLite database.

Under $COWGUARD_BENCH_CACHE/graphite (default /tmp/cowguard-bench-cache/graphite), never in the
repository: HOSTS hosts x METRICS_PER_HOST metrics (servers.hostNN.cpu.N.user, .memory.used,
.disk.sda.reads, .network.eth0.rx, .load.1, apps.web.requests, ...), each a whisper file with
60s:1d,10m:7d retention filled with a day of synthetic points (daily cycle + noise, seeded), then
`migrate` and DASHBOARDS saved dashboards and EVENTS events. Rebuilt only when this script or
bench_local_settings.py changes (a stamp file holds their hash); built in a temporary directory
and renamed into place, so a half-built tree is never used.

Usage: /usr/bin/python3 bench/apps/graphite/make_data.py [--force]   (prints the storage path)
"""
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOSTS = 40
CPUS = 4
DASHBOARDS = 30
EVENTS = 500
RETENTION = [(60, 1440), (600, 1008)]  # 60 s for a day, 10 min for a week


def metric_names():
    names = []
    for h in range(HOSTS):
        p = "servers.host%02d." % h
        for c in range(CPUS):
            names += [p + "cpu.%d.%s" % (c, k) for k in ("user", "system", "idle", "iowait")]
        names += [p + "memory." + k for k in ("used", "free", "cached", "buffers")]
        names += [p + "disk.%s.%s" % (d, k) for d in ("sda", "sdb") for k in ("reads", "writes")]
        names += [p + "network.eth0." + k for k in ("rx", "tx", "errors")]
        names += [p + "load." + k for k in ("1", "5", "15")]
        names += [p + "apps.%s.%s" % (a, k) for a in ("web", "api") for k in ("requests", "errors", "p50", "p99")]
    return names


METRICS_PER_HOST = len(metric_names()) // HOSTS


def source_hash():
    h = hashlib.sha256()
    for f in (Path(__file__).resolve(), HERE / "bench_local_settings.py"):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def storage_dir():
    return Path(os.environ.get("COWGUARD_BENCH_CACHE", "/tmp/cowguard-bench-cache")) / "graphite"


def build(tmp):
    import whisper

    rng = random.Random(20080101)
    now = int(time.time()) // 60 * 60
    for i, name in enumerate(metric_names()):
        path = tmp / "whisper" / (name.replace(".", "/") + ".wsp")
        path.parent.mkdir(parents=True, exist_ok=True)
        whisper.create(str(path), RETENTION, xFilesFactor=0.0, aggregationMethod="average")
        base, amp = rng.uniform(10, 1000), rng.uniform(1, 300)
        points = [(now - 60 * k, base + amp * math.sin(2 * math.pi * k / 1440.0 + i) + rng.gauss(0, amp / 10))
                  for k in range(1440)]
        whisper.update_many(str(path), points)


def populate_db():
    sys.path.insert(0, str(HERE))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from datetime import datetime, timedelta, timezone

    from graphite.dashboard.models import Dashboard
    from graphite.events.models import Event

    rng = random.Random(1)
    for d in range(DASHBOARDS):
        graphs = []
        for g in range(6):
            h = rng.randrange(HOSTS)
            target = rng.choice(["servers.host%02d.cpu.*.user" % h, "servers.host%02d.load.1" % h,
                                 "sumSeries(servers.host%02d.apps.*.requests)" % h,
                                 "servers.host%02d.memory.used" % h])
            graphs.append([target, {"target": [target], "from": "-6hours"}, "/render?target=" + target])
        state = {"name": "team-%02d" % d, "timeConfig": {"type": "relative", "relativeStartUnits": "hours",
                                                           "relativeStartQuantity": "6"},
                 "refreshConfig": {"enabled": False, "interval": 60000}, "graphSize": {"width": 400, "height": 250},
                 "defaultGraphParams": {"from": "-6hours", "until": "now"}, "graphs": graphs}
        Dashboard.objects.create(name="team-%02d" % d, state=json.dumps(state))
    start = datetime.now(timezone.utc) - timedelta(days=1)
    Event.objects.bulk_create([
        Event(when=start + timedelta(seconds=rng.randrange(86400)), what="deploy %d" % e,
              data="release %d of service %s" % (e, rng.choice(["web", "api", "worker"])), tags="deploy")
        for e in range(EVENTS)])
    from django.db import connections

    connections.close_all()


def main():
    force = "--force" in sys.argv[1:]
    final = storage_dir()
    stamp = final / ".stamp"
    want = source_hash()
    if not force and stamp.is_file() and stamp.read_text().strip() == want:
        print(final)
        return 0
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / ("graphite.tmp.%d" % os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "log").mkdir()
        build(tmp)
        os.environ["COWGUARD_BENCH_GRAPHITE_DIR"] = str(tmp)
        os.environ["GRAPHITE_SETTINGS_MODULE"] = "bench_local_settings"
        os.environ["DJANGO_SETTINGS_MODULE"] = "graphite.settings"
        populate_db()
        (tmp / ".stamp").write_text(want + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
