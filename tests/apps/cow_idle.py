"""App for the copy-on-write report (issue #8) whose requests mutate nothing: it builds a
read-only cache at import, 60,000 records (an instance of a distinctive class holding a list
each: 120,000 frozen containers besides the interpreter's own ~7,600), and its requests only
answer with the worker's pid; they never look at the cache.

/report   json.dumps(cowguard.cow_report())
/         {"pid": ...}
"""
import json
import os

import cowguard


class CowIdleRecord:
    __slots__ = ("id", "name", "tags")

    def __init__(self, i):
        self.id = i
        self.name = "user%d" % i
        self.tags = [i % 7, i % 11]


RECORDS = [CowIdleRecord(i) for i in range(60_000)]


def application(env, start_response):
    if env.get("PATH_INFO", "/") == "/report":
        body = cowguard.cow_report()
    else:
        body = {"pid": os.getpid()}
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
