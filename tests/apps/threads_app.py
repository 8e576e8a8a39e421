"""A WSGI app whose import starts background threads (thread_noise) and whose requests call gc."""
import gc
import json
import os
import threading

import thread_noise

thread_noise.start("app import")


def application(env, start_response):
    cycle = []
    cycle.append(cycle)
    body = json.dumps({
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "enabled": gc.isenabled(),
        "count": list(gc.get_count()),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
