"""heapread: a WSGI app whose requests read its fork-time heap (issue #14).

At import it builds 300,000 rows (HEAPREAD_ROWS overrides), each a GC-tracked list
[int, str, float, (int, str)] (~330 bytes of objects per row, ~100 MB), the kind of module-level
data, caches and settings real apps read on every request. Reading an object writes its reference
count on every Python; only immortal objects (3.12+) are exempt.

  /         reads 1000 random rows (every field) and returns a short text body.
  /cycles   creates 200 objects in reference cycles and drops them (as gcheavy's).
  /gc       returns JSON with this worker's GC state.

COWGUARD_BENCH_RECIPE: (unset) nothing; app-freeze: gc.collect(); gc.freeze() at the end of import.
"""
import gc
import json
import os
import random
import sys

ROWS = int(os.environ.get("HEAPREAD_ROWS", "300000"))
RECIPE = os.environ.get("COWGUARD_BENCH_RECIPE", "").strip()
HEAP = [[i, "row-%07d" % i, i * 0.5, (i % 7, "k%d" % (i % 97))] for i in range(ROWS)]


class Node:
    __slots__ = ("peer", "payload", "__weakref__")

    def __init__(self, payload):
        self.peer = None
        self.payload = payload


def _handle_default():
    total, names, score = 0, 0, 0.0
    pick = random.randrange
    for _ in range(1000):
        row = HEAP[pick(ROWS)]
        total += row[0] + row[3][0]
        names += len(row[1]) + len(row[3][1])
        score += row[2]
    return ("ok %d %d %.1f\n" % (total, names, score)).encode()


def _handle_cycles():
    for _ in range(100):
        a, b = Node(bytearray(1024)), Node(bytearray(1024))
        a.peer, b.peer = b, a
    return b"cycles 200\n"


def _handle_gc():
    return json.dumps({"pid": os.getpid(), "isenabled": gc.isenabled(), "threshold": list(gc.get_threshold()),
                       "freeze_count": gc.get_freeze_count(), "recipe": RECIPE or None, "rows": ROWS,
                       "heap_refcount": sys.getrefcount(HEAP)}).encode()


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/cycles":
        body, ctype = _handle_cycles(), "text/plain"
    elif path == "/gc":
        body, ctype = _handle_gc(), "application/json"
    else:
        body, ctype = _handle_default(), "text/plain"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


if RECIPE == "app-freeze":
    gc.collect()
    gc.freeze()
elif RECIPE:
    raise RuntimeError("COWGUARD_BENCH_RECIPE=%r: expected app-freeze" % RECIPE)
