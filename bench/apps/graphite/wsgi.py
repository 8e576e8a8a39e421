"""WSGI entry of the benchmark's third-party Django project: Debian's graphite-web.

  uwsgi --wsgi-file bench/apps/graphite/wsgi.py

Loads graphite-web's own WSGI application (graphite.wsgi) with bench_local_settings.py, as a
deployment's wsgi.py would, and nothing else at import: no warm-up, so the project is as cold as
most deployments leave it. Two paths are answered before graphite sees the request, the same in
every benchmark app: /gc (this worker's GC state, JSON; the runner's readiness probe) and /cycles
(200 objects in reference cycles, dropped).

COWGUARD_BENCH_RECIPE (bench/apps/benchapp.py) is applied after the application is loaded.
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(HERE.parent)):  # bench_local_settings, benchapp
    if _p not in sys.path:
        sys.path.insert(0, _p)
os.environ["GRAPHITE_SETTINGS_MODULE"] = "bench_local_settings"
os.environ["DJANGO_SETTINGS_MODULE"] = "graphite.settings"

import graphite.wsgi  # noqa: E402

import bench_local_settings  # noqa: E402
import benchapp  # noqa: E402

if not os.path.exists(bench_local_settings.DATABASES["default"]["NAME"]):
    raise RuntimeError("graphite data missing: run bench/apps/graphite/make_data.py")

_graphite = graphite.wsgi.application


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/gc":
        body, ctype = benchapp.gc_body(), "application/json"
    elif path == "/cycles":
        body, ctype = benchapp.cycles_body(), "text/plain"
    else:
        return _graphite(environ, start_response)
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


benchapp.apply_recipe()
