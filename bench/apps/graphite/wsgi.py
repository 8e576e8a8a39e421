"""WSGI entry of the benchmark's third-party Django project: Debian's graphite-web.

  uwsgi --wsgi-file bench/apps/graphite/wsgi.py

Loads graphite-web's own WSGI application (graphite.wsgi) with bench_local_settings.py, as a
deployment's wsgi.py would, and nothing else at import: no warm-up, so the project is as cold as
most deployments leave it. Two paths are answered before graphite sees the request, the same in
every benchmark app: /gc (this worker's GC state, JSON; the runner's readiness probe) and /cycles
(200 objects in reference cycles, dropped).

COWGUARD_BENCH_RECIPE (as bench/apps/gcheavy.py), applied after the application is loaded:
  app-freeze      gc.collect(); gc.freeze()
  article-recipe  gc.set_threshold(0); atexit.register(os._exit, 0)
"""
import atexit
import gc
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ["GRAPHITE_SETTINGS_MODULE"] = "bench_local_settings"
os.environ["DJANGO_SETTINGS_MODULE"] = "graphite.settings"

import graphite.wsgi  # noqa: E402

import bench_local_settings  # noqa: E402

if not os.path.exists(bench_local_settings.DATABASES["default"]["NAME"]):
    raise RuntimeError("graphite data missing: run bench/apps/graphite/make_data.py")

RECIPE = os.environ.get("COWGUARD_BENCH_RECIPE", "").strip()


class _Node:
    __slots__ = ("peer", "payload", "__weakref__")

    def __init__(self, payload):
        self.peer = None
        self.payload = payload


def _cycles():
    for _ in range(100):
        a, b = _Node(bytearray(1024)), _Node(bytearray(1024))
        a.peer, b.peer = b, a
    return b"cycles 200\n"


def _gc_state():
    return json.dumps({"pid": os.getpid(), "isenabled": gc.isenabled(), "threshold": list(gc.get_threshold()),
                       "freeze_count": gc.get_freeze_count(), "recipe": RECIPE or None}).encode()


_graphite = graphite.wsgi.application


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/gc":
        body, ctype = _gc_state(), "application/json"
    elif path == "/cycles":
        body, ctype = _cycles(), "text/plain"
    else:
        return _graphite(environ, start_response)
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


if RECIPE == "app-freeze":
    gc.collect()
    gc.freeze()
elif RECIPE == "article-recipe":
    gc.set_threshold(0)
    atexit.register(os._exit, 0)
elif RECIPE:
    raise RuntimeError("COWGUARD_BENCH_RECIPE=%r: expected app-freeze or article-recipe" % RECIPE)
