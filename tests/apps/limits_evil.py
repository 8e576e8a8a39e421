"""An app that goes over its memory and then hangs in the request (tests/integration/test_limits.py).

/grab?mb=N  allocates and writes N MB, then sleeps 30 s inside the request
/           only answers
Both return {"pid"}.
"""
import json
import os
import time
from urllib.parse import parse_qs


def application(env, start_response):
    if env.get("PATH_INFO") == "/grab":
        mb = int(parse_qs(env.get("QUERY_STRING", "")).get("mb", ["100"])[0])
        hog = bytearray(b"x" * (mb * 1024 * 1024))
        time.sleep(30)
        del hog
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
