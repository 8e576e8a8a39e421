"""graphite-web's local settings for the benchmark (GRAPHITE_SETTINGS_MODULE=bench_local_settings).

graphite-web is Debian's package (/usr/lib/python3/dist-packages/graphite); only this file, wsgi.py,
make_data.py and bench/wrk/graphite_mix.lua are ours. Everything lives under
$COWGUARD_BENCH_CACHE/graphite (default /tmp/cowguard-bench-cache/graphite), built by make_data.py:
whisper files and the SQLite database (dashboards, events). No carbon daemon: CARBONLINK_HOSTS is
empty, so renders read the whisper files only.
"""
import os
from os.path import join

_CACHE = os.environ.get("COWGUARD_BENCH_CACHE", "/tmp/cowguard-bench-cache")
# make_data.py builds into a temporary directory first (COWGUARD_BENCH_GRAPHITE_DIR)
STORAGE_DIR = os.environ.get("COWGUARD_BENCH_GRAPHITE_DIR") or join(_CACHE, "graphite")
WHISPER_DIR = join(STORAGE_DIR, "whisper")
INDEX_FILE = join(STORAGE_DIR, "search_index")
LOG_DIR = join(STORAGE_DIR, "log")
GRAPHITE_ROOT = "/usr/share/graphite-web"
STATIC_ROOT = "/usr/share/graphite-web/static"
CONF_DIR = "/etc/graphite"
DATABASES = {"default": {"NAME": join(STORAGE_DIR, "graphite.db"), "ENGINE": "django.db.backends.sqlite3",
                         "USER": "", "PASSWORD": "", "HOST": "", "PORT": ""}}
SECRET_KEY = "cowguard-bench-not-secret"
ALLOWED_HOSTS = ["*"]
TIME_ZONE = "UTC"
LOG_ROTATION = False
LOG_RENDERING_PERFORMANCE = False
LOG_CACHE_PERFORMANCE = False
DEFAULT_XFILES_FACTOR = 0
FUNCTION_PLUGINS = []
CARBONLINK_HOSTS = []  # no carbon-cache: renders read whisper only (graphite returns no cached points)
REPLICATION_FACTOR = 0  # graphite refuses more replicas than carbon hosts
# the worker pool starts threads; one server with local whisper files has nothing to parallelise
USE_WORKER_POOL = False
