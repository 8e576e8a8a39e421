"""A large tracked heap for the fast-exit stop measurements, built at import in the master and
shared copy-on-write by the workers: 300k rows shaped like bench/apps/gcheavy.py's, each a tuple
holding an int, a str and two empty lists (900k GC-tracked containers, ~95 MB). Stock uWSGI's
Py_Finalize (its final collection and teardown) writes to these objects in every exiting worker."""
import json
import os

HEAP = [(i, "c%07d" % i, [], []) for i in range(300000)]


def application(env, start_response):
    body = json.dumps({"pid": os.getpid(), "rows": len(HEAP)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
