"""WSGI entry point of the benchmark's Django project: uwsgi --wsgi-file bench/apps/djangoproj/wsgi.py

At import (in the uWSGI master, before the fork, unless lazy-apps) it loads Django, resolves the
URLconf, compiles every template into the cached loader and preloads the in-memory catalog, then
closes the database connection so no SQLite handle crosses the fork.

COWGUARD_BENCH_RECIPE (same as bench/apps/gcheavy.py), applied after get_wsgi_application():
  app-freeze      gc.collect(); gc.freeze()
  article-recipe  gc.set_threshold(0); atexit.register(os._exit, 0)
"""
import atexit
import gc
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
    connections.close_all()


_warm()

RECIPE = os.environ.get("COWGUARD_BENCH_RECIPE", "").strip()
if RECIPE == "app-freeze":
    gc.collect()
    gc.freeze()
elif RECIPE == "article-recipe":
    gc.set_threshold(0)
    atexit.register(os._exit, 0)
elif RECIPE:
    raise RuntimeError("COWGUARD_BENCH_RECIPE=%r: expected app-freeze or article-recipe" % RECIPE)
