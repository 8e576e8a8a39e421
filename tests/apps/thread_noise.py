"""Background threads like those APM agents, metrics clients and schedulers start at import: one
prints, one allocates (cycles included), one calls gc functions, each for SECONDS seconds, then
prints "[noise] <where> done". Started from sitecustomize (in the master, during Py_Initialize) and
from the app module (in the master, or in each worker with lazy-apps)."""
import gc
import os
import threading
import time

SECONDS = float(os.environ.get("NOISE_SECONDS", "4"))


def _printer(deadline):
    n = 0
    while time.monotonic() < deadline:
        print("[noise] tick", n, "from", os.getpid())
        n += 1
        time.sleep(0.0005)


def _allocator(deadline):
    keep = []
    while time.monotonic() < deadline:
        a = {"i": len(keep)}
        b = [a, list(range(20))]
        a["b"] = b  # a cycle: only the cyclic GC frees it
        keep.append(b)
        if len(keep) > 2000:
            keep = keep[1000:]


def _gc_caller(deadline):
    while time.monotonic() < deadline:
        gc.get_count()
        gc.isenabled()
        gc.get_threshold()
        gc.collect(0)
        time.sleep(0.001)


def start(where):
    deadline = time.monotonic() + SECONDS
    # NOISE_QUIET=1: no printing thread (a test that needs threads, not the print() crash).
    kinds = (_allocator, _gc_caller) if os.environ.get("NOISE_QUIET") == "1" else (_printer, _allocator, _gc_caller)
    threads = [threading.Thread(target=f, args=(deadline,), daemon=True, name=f"noise-{f.__name__}") for f in kinds]
    for t in threads:
        t.start()

    def _done():
        for t in threads:
            t.join()
        print(f"[noise] {where} done in {os.getpid()}", flush=True)

    threading.Thread(target=_done, daemon=True).start()
