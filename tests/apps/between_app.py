"""App for cowguard-gc = between (issue 15). Each answer is JSON with this worker's pid, its gen-0
count as the request starts (what earlier requests left behind) and its GC figures.

  /churn    builds 3000 small tracked dicts (each holding a list) and drops them: 6000 container
            allocations that all die with the request (gcheavy's `/`).
  /cycles   leaves 100 two-object reference cycles of ~1 KB each: only the cyclic GC frees them.
  /long     one long request that makes 20000 cycles (40000 objects): past the in-request bound.
  /state    nothing else.
"""
import gc
import json
import os

import cowguard

HEAP = [[i, [i]] for i in range(20000)]  # a frozen heap, as a real app has


class Node:
    __slots__ = ("peer", "payload")

    def __init__(self):
        self.peer = None
        self.payload = bytearray(1024)


def churn():
    rows = [{"id": i, "vals": [i, i + 1]} for i in range(3000)]
    return sum(r["vals"][1] for r in rows)


def cycles(n):
    for _ in range(n):
        a, b = Node(), Node()
        a.peer, b.peer = b, a


def application(env, start_response):
    count = gc.get_count()
    path = env.get("PATH_INFO", "/")
    if path == "/churn":
        churn()
    elif path == "/cycles":
        cycles(100)
    elif path == "/long":
        cycles(20000)
    body = json.dumps({"pid": os.getpid(), "count_at_start": count, "threshold": gc.get_threshold(),
                       "gc": cowguard.stats()["gc"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
