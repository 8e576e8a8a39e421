"""An app whose frozen heap (200k small objects built at import, in the master) is written to on
request: /touch?pct=P increments a counter in the first P% of the objects, which copies their
pages into the worker. / only answers. Both return {"pid", "touched"}.
"""
import json
import os
from urllib.parse import parse_qs


class Item:
    __slots__ = ("n", "name")

    def __init__(self, i):
        self.n = 0
        self.name = i


ITEMS = [Item(i) for i in range(200000)]


def application(env, start_response):
    touched = 0
    if env.get("PATH_INFO") == "/touch":
        pct = int(parse_qs(env.get("QUERY_STRING", "")).get("pct", ["50"])[0])
        touched = len(ITEMS) * pct // 100
        for item in ITEMS[:touched]:
            item.n += 1
    body = json.dumps({"pid": os.getpid(), "touched": touched}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
