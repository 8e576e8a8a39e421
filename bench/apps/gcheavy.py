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

COWGUARD_BENCH_RECIPE chooses what the app itself does at the end of import:
  (unset)          nothing: stock CPython GC behaviour.
  app-freeze       gc.collect(); gc.freeze()  (CPython docs' recommendation, done by the app).
  article-recipe   gc.set_threshold(0); atexit.register(os._exit, 0)  (Instagram's recipe:
                   set_threshold(0) turns automatic collection off entirely).
GCHEAVY_ROWS overrides the number of heap rows (for tests).
"""
import atexit
import gc
import json
import os

ROWS = int(os.environ.get("GCHEAVY_ROWS", "300000"))
RECIPE = os.environ.get("COWGUARD_BENCH_RECIPE", "").strip()


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


class Node:
    __slots__ = ("peer", "payload", "__weakref__")

    def __init__(self, payload):
        self.peer = None
        self.payload = payload


def _handle_default():
    # 3000 tracked dicts alive at once (like rows of a query result being shaped for output)
    rows = [{"id": i, "vals": [i, i + 1]} for i in range(3000)]
    total = 0
    for r in rows:
        total += r["vals"][1]
    # touch a few long-lived rows (read-only use of the shared heap)
    probe = HEAP[total % len(HEAP)] if HEAP else None
    return ("ok %d %s\n" % (total, probe[1] if probe else "-")).encode()


def _handle_cycles():
    made = 0
    for _ in range(100):
        a = Node(bytearray(1024))
        b = Node(bytearray(1024))
        a.peer = b
        b.peer = a
        made += 2
    return ("cycles %d\n" % made).encode()


def _handle_gc():
    state = {
        "pid": os.getpid(),
        "isenabled": gc.isenabled(),
        "threshold": list(gc.get_threshold()),
        "freeze_count": gc.get_freeze_count(),
        "count": list(gc.get_count()),
        "recipe": RECIPE or None,
        "rows": ROWS,
    }
    return json.dumps(state).encode()


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
elif RECIPE == "article-recipe":
    gc.set_threshold(0)
    atexit.register(os._exit, 0)
elif RECIPE:
    raise RuntimeError("COWGUARD_BENCH_RECIPE=%r: expected app-freeze or article-recipe" % RECIPE)
