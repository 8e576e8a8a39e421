"""App for the reliability tests (tests/integration/test_faults.py, test_soak.py, test_bad_config.py
and tests/sanitize/): small, fast, and able to stand still in the middle of a request.

/              {"pid", "served"} of the serving process (cheap: the load endpoint)
/gc            {"pid", "served", "gc": {enabled, threshold, frozen}} (gc.get_freeze_count() walks
               the whole permanent generation: about a millisecond per call for this heap)
/sleep?s=X     sleeps X seconds first (a request to kill a worker in, or to outlive harakiri);
               with &pidfile=PATH it first writes the serving pid into PATH
/containers    creates and drops reference cycles (work for the GC: collections in the slot)
/enable        calls gc.enable() and gc.unfreeze() (the guard blocks, warns or allows them)
/segv          reads address 0 through ctypes: a real segmentation fault in the middle of a request
               (ctypes releases the GIL around the call); /segv?gil=1 crashes inside the C API
               with the GIL held (as a buggy extension does)
/report        cowguard.cow_report() of the serving worker
/cowstats      cowguard.stats() of the serving worker
"""
import ctypes
import gc
import json
import os
import time
from urllib.parse import parse_qs

HEAP = [[i, {"k": [i]}] for i in range(20000)]  # a small heap for the master to freeze
SERVED = 0


def gc_state():
    return {"enabled": gc.isenabled(), "threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}


def application(env, start_response):
    global SERVED
    SERVED += 1
    path = env.get("PATH_INFO", "/")
    query = parse_qs(env.get("QUERY_STRING", ""))
    if path == "/sleep":
        if "pidfile" in query:
            with open(query["pidfile"][0] + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(query["pidfile"][0] + ".tmp", query["pidfile"][0])
        time.sleep(float(query.get("s", ["1"])[0]))
    elif path == "/containers":
        for i in range(int(query.get("n", ["20000"])[0])):
            d = {"k": [i]}
            d["self"] = d
    elif path == "/segv":
        if "gil" in query:
            ctypes.pythonapi.Py_IncRef.argtypes = [ctypes.c_void_p]
            ctypes.pythonapi.Py_IncRef(ctypes.c_void_p(8))
        else:
            ctypes.string_at(0)
    elif path == "/enable":
        gc.enable()
        gc.unfreeze()
    if path == "/report":
        import cowguard
        body = json.dumps(cowguard.cow_report()).encode()
    elif path == "/cowstats":
        import cowguard
        body = json.dumps(cowguard.stats()).encode()
    elif path == "/gc":
        body = json.dumps({"pid": os.getpid(), "served": SERVED, "gc": gc_state()}).encode()
    else:
        body = json.dumps({"pid": os.getpid(), "served": SERVED}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
