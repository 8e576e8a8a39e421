"""A large shared heap and little private memory (tests/integration/test_limits.py).

At import, in the master: 1.5 million distinct 100-byte bytes objects (about 200 MB, untracked by
the GC, so neither collections nor the freeze write to them). Workers inherit them: their rss is
large but almost all of it is shared with the master. / answers without touching the heap.
"""
import json
import os

HEAP = [b"%099d" % i for i in range(1_500_000)]


def application(env, start_response):
    body = json.dumps({"pid": os.getpid(), "objects": len(HEAP)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
