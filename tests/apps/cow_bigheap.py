"""App for the copy-on-write report's cost (issue #8): a large frozen heap built at import.

COW_HEAP_OBJECTS (default 8,000,000) one-item lists: each is one frozen (GC-tracked) object of
72 bytes with its header, plus its 8-byte item array and its int, about 128 bytes of heap in
all, so the default is about 1 GB of Python objects.

/report   json.dumps(cowguard.cow_report())
/         {"pid": ..., "objects": ...}
"""
import json
import os

import cowguard

COUNT = int(os.environ.get("COW_HEAP_OBJECTS", "8000000"))
HEAP = [[i] for i in range(COUNT)]


def application(env, start_response):
    if env.get("PATH_INFO", "/") == "/report":
        body = cowguard.cow_report()
    else:
        body = {"pid": os.getpid(), "objects": COUNT}
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
