"""App for cowguard-immortalize (issue #14): requests read a module-level heap built at import.

HEAP_ROWS (default 300,000) rows, each a GC-tracked list [int, str, float, tuple]: the rows are
frozen, their items untracked (made immortal through the referent walk).

/read?seed=S  reads 1000 rows picked by random.Random(S); the answer depends only on S and the heap
/state        {"pid", "python", "refcounts": {...}, "is_immortal": {...} (3.14: sys._is_immortal),
               "stats": cowguard.stats()}
/unfreeze     calls gc.unfreeze() (the guard blocks it) and answers gc.get_freeze_count()
/replace      rebuilds CACHE (a module-level dict of HEAP_ROWS / 10 entries) in this worker
An atexit handler writes ATEXIT_DIR/<pid> (when set) at the worker's exit.
"""
import atexit
import gc
import json
import os
import random
import sys

import cowguard

ROWS = int(os.environ.get("HEAP_ROWS", "300000"))
HEAP = [[i, f"row-{i}", i * 0.5, (i % 7, f"k{i % 97}")] for i in range(ROWS)]
CACHE = {f"key-{i}": (i, str(i)) for i in range(ROWS // 10)}


def _exit():
    where = os.environ.get("ATEXIT_DIR")
    if where:
        with open(os.path.join(where, str(os.getpid())), "w") as f:
            f.write("ran")


atexit.register(_exit)


def read(seed):
    rng = random.Random(seed)
    total, names, score = 0, 0, 0.0
    for _ in range(1000):
        row = HEAP[rng.randrange(ROWS)]
        total += row[0] + row[3][0]
        names += len(row[1]) + len(row[3][1])
        score += row[2]
    return {"seed": seed, "total": total, "names": names, "score": score, "cache": len(CACHE)}


def state():
    samples = {"heap": HEAP, "row": HEAP[1], "str": HEAP[1][1], "float": HEAP[1][2], "tuple": HEAP[1][3],
               "cache": CACHE, "function": read, "module_dict": globals()}
    doc = {"pid": os.getpid(), "python": list(sys.version_info[:2]),
           "refcounts": {k: sys.getrefcount(v) for k, v in samples.items()}, "stats": cowguard.stats()}
    if hasattr(sys, "_is_immortal"):
        doc["is_immortal"] = {k: sys._is_immortal(v) for k, v in samples.items()}
    return doc


def application(env, start_response):
    global CACHE
    path = env.get("PATH_INFO", "/")
    if path == "/state":
        body = state()
    elif path == "/unfreeze":
        gc.unfreeze()
        body = {"pid": os.getpid(), "frozen": gc.get_freeze_count()}
    elif path == "/replace":
        CACHE = {f"key-{i}": (i, str(i)) for i in range(ROWS // 10)}
        body = {"pid": os.getpid(), "cache": len(CACHE)}
    else:
        qs = env.get("QUERY_STRING", "")
        seed = int(qs.split("=", 1)[1]) if qs.startswith("seed=") else 0
        body = dict(read(seed), pid=os.getpid())
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
