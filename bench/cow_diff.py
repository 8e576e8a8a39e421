#!/usr/bin/python3
"""What a Django worker wrote into the pages it shares with the master: 2 workers of the bench's
Django project (bench/apps/cow_diff_wsgi.py) under cowguard, 8 s of the page mix, then every
present page of the first worker's writable anonymous mappings and [heap] compared with the
master's (/proc/PID/mem, root): pages equal, changed (by how many 8-byte words), absent in the
master (a page it never touched: the worker's own), or with no master page (the worker's heap grew
past the master's); then the worker locates the changed words in objects, and for each of those
objects the master's memory at its address tells what was there at fork time: the same object
(immortal or mortal, with its reference count), or a free block. Diagnostic, not part of
bench/run.py. COW_DIFF_MORTAL_STR=1 also prints the text of every mortal str found so.

  /usr/bin/python3 bench/cow_diff.py [extra uWSGI options]    (COWGUARD_PLUGIN: the plugin)
"""
import collections
import json
import os
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import run  # noqa: E402
from common import run_wrk  # noqa: E402

PORT = common.free_port()
cmd = ["uwsgi", "--master", "--workers", "2", "--plugin", "python3", "--plugin", os.environ["COWGUARD_PLUGIN"],
       "--http-socket", "127.0.0.1:%d" % PORT, "--wsgi-file", str(run.BENCH / "apps" / "cow_diff_wsgi.py"), "--die-on-term", "--disable-logging",
       "--add-header", "Connection: close", "--cowguard-guard", "allow"] + sys.argv[1:]
u = common.Uwsgi(cmd, PORT, 2, Path("/tmp/cow_diff.log"), env={}, name="diag")
def maps(pid):
    out = []
    for line in open("/proc/%d/maps" % pid):
        f = line.split()
        lo, hi = [int(x, 16) for x in f[0].split("-")]
        name = f[5] if len(f) > 5 else ""
        if "w" in f[1] and (name in ("", "[heap]")):
            out.append((lo, hi, name or "anon"))
    return out
try:
    u.start(); pids = u.worker_pids()
    a = run.APPS["django"]
    run_wrk(u.url(a.path), 8, a.wrk_script)
    w = pids[0]
    mm = open("/proc/%d/mem" % u.pid, "rb", buffering=0); wm = open("/proc/%d/mem" % w, "rb", buffering=0)
    pm = open("/proc/%d/pagemap" % w, "rb", buffering=0)
    mpm = open("/proc/%d/pagemap" % u.pid, "rb", buffering=0)
    master_maps = maps(u.pid)
    stats = collections.Counter(); hist = collections.Counter(); page_addrs = []
    for lo, hi, name in maps(w):
        mrange = [x for x in master_maps if x[0] <= lo < x[1]]
        pm.seek(lo // 4096 * 8); ents = pm.read((hi - lo) // 4096 * 8)
        for i in range((hi - lo) // 4096):
            e = int.from_bytes(ents[i*8:i*8+8], "little")
            if not (e >> 63 & 1): continue
            addr = lo + i * 4096
            try:
                wm.seek(addr); wp = wm.read(4096)
            except OSError: continue
            mp = None
            if mrange and addr < mrange[0][1]:
                try: mm.seek(addr); mp = mm.read(4096)
                except OSError as e: mp = None; stats[name + ":master-read-error-" + str(e.errno)] += 1
            if mp is None:
                stats[name + ":no-master-page"] += 1; continue
            if mp == wp:
                stats[name + ":same"] += 1; continue
            # A page the master never touched reads as zeros: the worker's own new page, not a copy.
            mpm.seek(addr // 4096 * 8)
            if not (int.from_bytes(mpm.read(8), "little") >> 63 & 1):
                stats[name + ":master-page-absent"] += 1; continue
            words = [j for j in range(0, 4096, 8) if wp[j:j+8] != mp[j:j+8]]
            n = len(words)
            b = "1-2" if n <= 2 else "3-8" if n <= 8 else "9-64" if n <= 64 else "65+"
            stats[name + ":changed-words-" + b] += 1
            step = max(1, n // 16)
            page_addrs.append((name, [addr + j for j in words[::step][:16]]))
    for k in sorted(stats): print(k, stats[k], "pages")
    req = urllib.request.Request(u.url("/locate"), data=json.dumps(page_addrs).encode())
    res = json.loads(urllib.request.urlopen(req, timeout=120).read())
    print("changed pages by what their changed words sit in (MB):")
    for k, v in sorted(res["pages"].items(), key=lambda kv: -kv[1]): print("  %6.2f MB  %s" % (v * 4096 / 1048576, k))
    print("offsets:", sorted(res["offsets"].items(), key=lambda kv: -kv[1])[:25])
    # What the master held at fork time where the worker now has these objects: the same object
    # (immortal or mortal), another object, or a free block.
    types = {int(k): v for k, v in res["types"].items()}
    was = collections.Counter()
    for addr, kind in res["objects"].items():
        mm.seek(int(addr)); head = mm.read(16)
        word0 = int.from_bytes(head[:8], "little"); tp = int.from_bytes(head[8:16], "little")
        # A freed block's first word is the next free block (or NULL), its second is left as it was.
        if word0 == 0 or (1 << 40 <= word0 < 1 << 48) or tp not in types:
            was["now %s, master: free block%s" % (kind, " (was a %s)" % types[tp] if tp in types else "")] += 1
        else:
            state = "immortal" if word0 & 0xFFFFFFFF >= 1 << 31 else "mortal, refcount %d" % min(word0, 9)
            was["now %s, master: %s %s" % (kind, state, types[tp])] += 1
            if os.environ.get("COW_DIFF_MORTAL_STR") and types[tp] == "str" and state != "immortal":
                mm.seek(int(addr) + 16); n = int.from_bytes(mm.read(8), "little")
                mm.seek(int(addr) + 40); print("mortal str in the master:", mm.read(min(n, 60)))
    print("at fork time, the master held there (objects):")
    for k, v in was.most_common(30): print("  %6d  %s" % (v, k))
finally:
    u.kill()
