"""App for the copy-on-write report (issue #8): 120,000 instances of a distinctive class,
created at import (so the master freezes them), that requests can mutate.

/mutate?n=N   increments an attribute on the first N instances (cumulative: the first N
              instances are the same ones every time)
/report       json.dumps(cowguard.cow_report())
/uss          this worker's uss in kB (from /proc/self/smaps_rollup), for tests that want it
              without another process reading it
/             {"pid": ...}
"""
import json
import os

import cowguard

COUNT = 120_000


class CowDistinctive:
    __slots__ = ("hits", "label")

    def __init__(self, i):
        self.hits = 0
        self.label = i


OBJS = [CowDistinctive(i) for i in range(COUNT)]


def mutate(n):
    objs = OBJS
    for i in range(min(n, COUNT)):
        objs[i].hits += 1


def application(env, start_response):
    path = env.get("PATH_INFO", "/")
    query = dict(p.split("=", 1) for p in env.get("QUERY_STRING", "").split("&") if "=" in p)
    if path == "/mutate":
        mutate(int(query.get("n", "0")))
        body = {"pid": os.getpid(), "mutated": int(query.get("n", "0"))}
    elif path == "/report":
        body = cowguard.cow_report()
    else:
        body = {"pid": os.getpid()}
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
