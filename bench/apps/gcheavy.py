"""gcheavy: a WSGI app whose memory behaviour under fork is dominated by the CPython GC.

At import it builds a long-lived heap of GC-tracked containers: 300,000 rows by default, each a
tuple holding an int, a str and two empty lists (900k tracked containers, ~95 MB), the kind of heap
a real app builds from config, caches and ORM metadata. Requests then allocate enough containers
to trigger collections:

  /         builds 3000 small dicts (each holding a list, so they are GC-tracked) and returns a
            short text body.
  /cycles   creates 200 objects in reference cycles (100 pairs), each holding ~1 KB, and drops
            them: only the cyclic GC can free them.
  /gc       returns JSON with this worker's GC state.

COWGUARD_BENCH_RECIPE chooses what the app itself does at the end of import (benchapp.py).
GCHEAVY_ROWS overrides the number of heap rows (for tests).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchapp  # noqa: E402  (bench/apps/benchapp.py: recipe, /cycles, /gc)

ROWS = int(os.environ.get("GCHEAVY_ROWS", "300000"))


def _build_heap(n):
    heap = []
    append = heap.append
    for i in range(n):
        # three tracked containers per row (the row tuple and two empty lists: "tags", "refs"),
        # an int and a unique str: ~320 bytes per row, ~95 MB for 300k rows
        append((i, "c%07d" % i, [], []))
    return heap


HEAP = _build_heap(ROWS)
INDEX = {}  # a second long-lived structure: ~3% of rows indexed by name
for _row in HEAP[:: 32]:
    INDEX[_row[1]] = _row
del _row


def _handle_default():
    # 3000 tracked dicts alive at once (like rows of a query result being shaped for output)
    rows = [{"id": i, "vals": [i, i + 1]} for i in range(3000)]
    total = 0
    for r in rows:
        total += r["vals"][1]
    # touch a few long-lived rows (read-only use of the shared heap)
    probe = HEAP[total % len(HEAP)] if HEAP else None
    return ("ok %d %s\n" % (total, probe[1] if probe else "-")).encode()


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/cycles":
        body, ctype = benchapp.cycles_body(), "text/plain"
    elif path == "/gc":
        body, ctype = benchapp.gc_body(rows=ROWS), "application/json"
    else:
        body, ctype = _handle_default(), "text/plain"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


benchapp.apply_recipe()
