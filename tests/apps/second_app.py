"""A second app, mounted beside the first: uWSGI gives it a sub-interpreter."""
import gc
import json
import os
import sys

HEAP = [[i, [i]] for i in range(15000)]
ENABLED_AT_IMPORT = gc.isenabled()


def application(env, start_response):
    body = json.dumps({
        "pid": os.getpid(),
        "sys_id": id(sys),  # one sys module per interpreter
        "enabled": gc.isenabled(),
        "enabled_at_import": ENABLED_AT_IMPORT,
        "threshold": list(gc.get_threshold()),
        "frozen": gc.get_freeze_count(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
