"""heapread: a WSGI app whose requests read its fork-time heap, as real apps read their module-level
state (settings, lookup tables, caches) on every request (issues #14, #16).

At import it builds HEAPREAD_ROWS (default 100,000) rows, half of them GC-tracked dicts holding a
list, half tuples of ints, floats and strs (which the GC untracks after one pass over them), and an
index dict from each row's name to the row; plus CACHE, a module-level dict of CACHE_SIZE (30,000)
entries. About 0.8 M objects, ~55 MB (small enough that a mortal worker copies most of it within
the benchmark's short loads on a busy 2-core machine). Every read writes the object's reference count on every
Python (only immortal objects, 3.12+, are exempt), so the page under it is copied in a worker.

  /         looks up READS (500) random rows by name, reads every field and builds a small result dict
            per row (temporaries, GC-tracked), returns a summary line.
  /rw       the same, then replaces 100 random CACHE entries with new ones: the fork-time entries
            it drops are what an immortal heap never frees (bench/run.py's `heapcache` app).
  /cycles   creates 200 objects in reference cycles and drops them (as gcheavy's).
  /gc       JSON with this worker's GC state.

COWGUARD_BENCH_RECIPE (benchapp.py) is applied at the end of import.
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchapp  # noqa: E402  (bench/apps/benchapp.py: recipe, /cycles, /gc)

ROWS = int(os.environ.get("HEAPREAD_ROWS", "100000"))
CACHE_SIZE = 30000
READS = 500  # rows looked up per request


def _row(i):
    name = "row-%07d" % i
    if i % 2:
        return {"id": i, "name": name, "score": i * 0.5, "tags": ["t%d" % (i % 13), "g%d" % (i % 29)]}
    return (i, name, i * 0.5, (i % 7, "k%d" % (i % 97)))


HEAP = [_row(i) for i in range(ROWS)]
INDEX = {(r["name"] if isinstance(r, dict) else r[1]): r for r in HEAP}
CACHE = {k: (k, "cached-%d" % k, [k % 11]) for k in range(CACHE_SIZE)}
_replaced = 0


def _read_rows():
    out = []
    pick = random.randrange
    for _ in range(READS):
        row = INDEX["row-%07d" % pick(ROWS)]
        if isinstance(row, dict):
            out.append({"id": row["id"], "label": row["name"], "score": row["score"], "tags": len(row["tags"])})
        else:
            out.append({"id": row[0], "label": row[1], "score": row[2], "tags": row[3][0]})
    return "ok %d %d %.1f" % (len(out), sum(r["id"] for r in out), sum(r["score"] for r in out))


def _replace_cache():
    global _replaced
    pick = random.randrange
    for _ in range(100):
        k = pick(CACHE_SIZE)
        _replaced += 1
        CACHE[k] = (k, "cached-%d-%d" % (k, _replaced), [_replaced % 11])


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/cycles":
        body, ctype = benchapp.cycles_body(), "text/plain"
    elif path == "/gc":
        body, ctype = benchapp.gc_body(rows=ROWS, cache_replaced=_replaced,
                                       heap_refcount=sys.getrefcount(HEAP)), "application/json"
    elif path == "/rw":
        text = _read_rows()
        _replace_cache()
        body, ctype = (text + " replaced %d\n" % _replaced).encode(), "text/plain"
    else:
        body, ctype = (_read_rows() + "\n").encode(), "text/plain"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


benchapp.apply_recipe()
