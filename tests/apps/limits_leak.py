"""A leaking app for the memory-limit tests (tests/integration/test_limits.py).

/leak  appends a 5 MB bytearray (written, so resident and private) to a module-level list
/      only answers
Both return {"pid", "leaked_mb"}.
"""
import json
import os

LEAKED = []


def application(env, start_response):
    if env.get("PATH_INFO") == "/leak":
        LEAKED.append(bytearray(b"x" * (5 * 1024 * 1024)))
    body = json.dumps({"pid": os.getpid(), "leaked_mb": 5 * len(LEAKED)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
