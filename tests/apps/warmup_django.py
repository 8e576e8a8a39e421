"""The benchmark's Django project (bench/apps/djangoproj) loaded the plain way, without the
in-process warm-up its own wsgi.py does, for the cowguard:django_warmup tests (issue #6).

Like many apps it queries the database at import (here: counts the products), which opens a
connection in the uWSGI master and leaves it open; $COWGUARD_BENCH_CACHE says where the
database is (bench/apps/djangoproj/make_db.py builds it there).
"""
import os
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2] / "bench" / "apps" / "djangoproj"
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

from shop.models import Product  # noqa: E402

PRODUCTS_AT_IMPORT = Product.objects.count()
