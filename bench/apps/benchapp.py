"""What every benchmark app (bench/apps/) shares: the recipe it applies at the end of its import
(COWGUARD_BENCH_RECIPE), the /cycles load and the /gc state.

COWGUARD_BENCH_RECIPE:
  (unset)          nothing: stock CPython GC behaviour.
  app-freeze       gc.collect(); gc.freeze()  (CPython docs' recommendation, done by the app).
  article-recipe   gc.set_threshold(0); atexit.register(os._exit, 0)  (Instagram's recipe:
                   set_threshold(0) turns automatic collection off entirely).
"""
import atexit
import gc
import json
import os

RECIPE = os.environ.get("COWGUARD_BENCH_RECIPE", "").strip()


class Node:
    __slots__ = ("peer", "payload", "__weakref__")

    def __init__(self, payload):
        self.peer = None
        self.payload = payload


def cycles_body(pairs=100):
    """/cycles: `pairs` two-object reference cycles, each object holding ~1 KB, dropped: only the
    cyclic GC can free them."""
    for _ in range(pairs):
        a, b = Node(bytearray(1024)), Node(bytearray(1024))
        a.peer, b.peer = b, a
    return ("cycles %d\n" % (2 * pairs)).encode()


def gc_body(**extra):
    """/gc: this worker's GC state as JSON (the benchmark's readiness probe), plus `extra`."""
    state = {"pid": os.getpid(), "isenabled": gc.isenabled(), "threshold": list(gc.get_threshold()),
             "freeze_count": gc.get_freeze_count(), "count": list(gc.get_count()), "recipe": RECIPE or None}
    state.update(extra)
    return json.dumps(state).encode()


def apply_recipe():
    """Called by each app at the very end of its import."""
    if RECIPE == "app-freeze":
        gc.collect()
        gc.freeze()
    elif RECIPE == "article-recipe":
        gc.set_threshold(0)
        atexit.register(os._exit, 0)
    elif RECIPE:
        raise RuntimeError("COWGUARD_BENCH_RECIPE=%r: expected app-freeze or article-recipe" % RECIPE)
