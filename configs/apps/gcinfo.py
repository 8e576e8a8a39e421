"""A small app for the example configs: a heap worth freezing, and /gc reporting the serving
worker's GC state (what cowguard set), as JSON."""
import gc
import json
import os

HEAP = [{"id": i, "tags": [i % 7]} for i in range(50000)]


def application(env, start_response):
    if env.get("PATH_INFO") == "/gc":
        body = json.dumps({
            "pid": os.getpid(),
            "enabled": gc.isenabled(),
            "threshold": list(gc.get_threshold()),
            "frozen": gc.get_freeze_count(),
        }).encode()
        ctype = "application/json"
    else:
        body = b"hello from a cowguard vassal\n"
        ctype = "text/plain"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
