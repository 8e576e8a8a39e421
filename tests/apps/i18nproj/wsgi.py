"""A small Django project for the django_warmup and replay tests (issue 18): two languages
besides English, a template that does not compile, optionally a lazily loaded URLconf that
cannot be imported. Its catalogs are built by the test into $I18NPROJ_LOCALE (LOCALE_PATHS), so that one
of them can carry a Plural-Forms header Python's gettext rejects.

  I18NPROJ_LOCALE    the LOCALE_PATHS directory (required)
  I18NPROJ_USE_I18N  0 turns USE_I18N off
  I18NPROJ_LEGACY_URLS  1 adds a lazily loaded URLconf that cannot be imported
  I18NPROJ_OUT       if set, each view appends "pid worker_id path" to this file
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "i18nsite.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
