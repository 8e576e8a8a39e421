"""A plain WSGI app for the cowguard-warmup-requests tests (issue 18). Every request but /seen is
recorded in SEEN (module state: what the master's replay recorded, the workers inherit):
the process, uwsgi.worker_id(), the environ's str/bool/int values and the types of the others.

  /seen             {"pid", "worker", "seen": [...], "closed": n, "consumed": n} (not recorded)
  /status/NNN       answers status NNN
  /boom             raises RuntimeError
  /thread           starts a daemon thread "replay-sleeper" that sleeps 60 s
  anything else     200, a two-chunk body from a generator; close() counted in CLOSED
$REPLAY_AFTER_OUT: after() appends "after <len(SEEN)>" to it (cowguard-warmup-after).
"""
import json
import os
import threading
import time

import uwsgi

SEEN = []
COUNTS = {"closed": 0, "consumed": 0}


class Body:
    def __init__(self):
        self.chunks = [b"hello ", b"world"]

    def __iter__(self):
        for c in self.chunks:
            yield c
        COUNTS["consumed"] += 1

    def close(self):
        COUNTS["closed"] += 1


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/seen":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"pid": os.getpid(), "worker": uwsgi.worker_id(), "seen": SEEN, **COUNTS}).encode()]
    SEEN.append({
        "pid": os.getpid(),
        "worker": uwsgi.worker_id(),
        "environ": {k: v if isinstance(v, (str, bool, int)) else type(v).__name__ for k, v in environ.items()},
        "input": environ["wsgi.input"].read().decode(),
    })
    if path == "/boom":
        raise RuntimeError("replay_app.boom fails on purpose")
    if path == "/thread":
        threading.Thread(target=time.sleep, args=(60,), name="replay-sleeper", daemon=True).start()
    if path.startswith("/status/"):
        start_response(path[len("/status/"):] + " Whatever", [("Content-Type", "text/plain")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Body()


def after():
    out = os.environ.get("REPLAY_AFTER_OUT")
    if out:
        with open(out, "a") as f:
            f.write("after %d %d\n" % (os.getpid(), len(SEEN)))
