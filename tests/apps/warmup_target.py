"""Warmup callables for the cowguard-warmup tests (issue #6), and the app that reports what the
worker sees.

warm()          appends this process's pid to $WARMUP_OUT and builds CACHE, 50,000 one-item lists
step_a(), Steps.b()   append "a" / "b" to $WARMUP_OUT (order; Steps.b: a dotted callable path)
boom()          raises RuntimeError

/        {"pid", "frozen": gc.get_freeze_count(), "cache": len(CACHE) or null}
/touch   read-only look-ups in CACHE (20 items and its length; with no warmup, builds it first,
         as an app that fills its cache lazily on the first request would), then as /
"""
import gc
import json
import os

CACHE = None
CACHE_SIZE = 50_000


def _append(text):
    with open(os.environ["WARMUP_OUT"], "a") as f:
        f.write(text + "\n")


def _build():
    return [[i] for i in range(CACHE_SIZE)]


def warm():
    global CACHE
    _append(str(os.getpid()))
    CACHE = _build()


def step_a():
    _append("a")


class Steps:
    @staticmethod
    def b():
        _append("b")


def boom():
    raise RuntimeError("warmup_target.boom fails on purpose")


def application(env, start_response):
    global CACHE
    body = {"pid": os.getpid()}
    if env.get("PATH_INFO", "/") == "/touch":
        if CACHE is None:
            CACHE = _build()
        body["sum"] = len(CACHE) + sum(CACHE[i][0] for i in range(0, CACHE_SIZE, CACHE_SIZE // 20))
    body["frozen"] = gc.get_freeze_count()
    body["cache"] = None if CACHE is None else len(CACHE)
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
