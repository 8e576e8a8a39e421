"""WSGI entry point of the benchmark's Django project: uwsgi --wsgi-file bench/apps/djangoproj/wsgi.py

At import (in the uWSGI master, before the fork, unless lazy-apps) it loads Django, resolves the
URLconf, compiles every template into the cached loader, preloads the in-memory catalog and serves
one request of each page kind in-process (so translations, per-backend caches and lazy imports are
loaded once, in the master), then closes the database connection so no SQLite handle crosses the
fork. Every configuration of the benchmark gets the same warm-up.

DJANGOPROJ_WARM=0 skips that warm-up (a cold project, as most wsgi.py files leave it).

COWGUARD_BENCH_RECIPE (bench/apps/benchapp.py) is applied at the end, after the warm-up.
"""
import io
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()


def _warm():
    from django.conf import settings
    from django.db import connections
    from django.template.loader import get_template
    from django.urls import get_resolver

    if not Path(settings.DATABASES["default"]["NAME"]).exists():
        raise RuntimeError("benchmark database %s is missing: run bench/apps/djangoproj/make_db.py"
                           % settings.DATABASES["default"]["NAME"])
    get_resolver().url_patterns  # noqa: B018 - imports views and admin
    for name in ("shop/base.html", "shop/_product_row.html", "shop/index.html", "shop/product_list.html",
                 "shop/product_detail.html", "shop/category.html"):
        get_template(name)
    from shop import catalog

    catalog.preload()
    for path, query in (("/", ""), ("/products/", "page=2"), ("/product/1/", ""), ("/category/cat-00/", "")):
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": False,
            "wsgi.multiprocess": True, "wsgi.run_once": False, "SERVER_PROTOCOL": "HTTP/1.1",
        }
        status = []
        body = application(environ, lambda s, h, exc_info=None: status.append(s))
        try:
            b"".join(body)
        finally:
            getattr(body, "close", lambda: None)()
        if not status or not status[0].startswith("200"):
            raise RuntimeError("warm-up request %s failed: %s" % (path, status))
    connections.close_all()


# DJANGOPROJ_WARM=0 leaves Django cold after get_wsgi_application(), as most projects' wsgi.py
# do (bench/warmup_trim.py measures what cowguard's Django warmup adds to such a project).
if os.environ.get("DJANGOPROJ_WARM", "1") != "0":
    _warm()

if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
import benchapp  # noqa: E402  (bench/apps/benchapp.py)

benchapp.apply_recipe()
