"""App that reports the GC state of the worker that serves the request.

Also exercises the guard: /enable calls gc.enable() and gc.unfreeze() from this file,
/native switches the GC on through the C API (PyGC_Enable), as native libraries can.
"""
import ctypes
import gc
import json
import os
import sys

import gclib  # a third-party-style module that calls gc.enable()/gc.unfreeze() at import

# A heap worth freezing: tracked containers (lists of lists).
HEAP = [[i, [i]] for i in range(20000)]
IMPORT_STATE = {"enabled_at_import": gc.isenabled(), "threshold_at_import": gc.get_threshold()}


def state():
    return {
        "pid": os.getpid(),
        "enabled": gc.isenabled(),
        "threshold": list(gc.get_threshold()),
        "frozen": gc.get_freeze_count(),
        "sys_id": id(sys),  # one sys module per interpreter
        **IMPORT_STATE,
    }


def application(env, start_response):
    path = env.get("PATH_INFO", "/")
    if path == "/enable":
        gclib.per_request()
    elif path == "/native":
        ctypes.pythonapi.PyGC_Enable()
    elif path == "/set-threshold":
        gc.set_threshold(700, 10, 10)
    body = json.dumps(state()).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
