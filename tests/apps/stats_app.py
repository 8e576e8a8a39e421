"""Small app for the stats tests (tests/integration/test_stats.py).

/            {"pid": ..., "requests": requests this process served, this one included}
/containers  creates and drops many tracked container objects, each in a reference cycle (work
             for the GC: generation-0 collections, and objects only the GC can free)
/enable      calls gc.enable() (the guard counts it)
/sleep?s=X   sleeps X seconds
"""
import gc
import json
import os
import time
from urllib.parse import parse_qs

HEAP = [[i, [i]] for i in range(20000)]  # a small frozen heap
SERVED = 0


def application(env, start_response):
    global SERVED
    SERVED += 1
    path = env.get("PATH_INFO", "/")
    query = parse_qs(env.get("QUERY_STRING", ""))
    if path == "/containers":
        for i in range(int(query.get("n", ["20000"])[0])):
            d = {"k": [i]}
            d["self"] = d
    elif path == "/enable":
        gc.enable()
    elif path == "/sleep":
        time.sleep(float(query.get("s", ["1"])[0]))
    body = json.dumps({"pid": os.getpid(), "requests": SERVED}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
