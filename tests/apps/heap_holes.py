"""App for cowguard-fill-holes' malloc part: at import it makes holes in glibc malloc's heap (keeps
400 bytes objects of 3000 bytes, over pymalloc's 512, and frees every other one: 200 free chunks
between live ones) and records where the freed ones were. A request allocates 200 objects of the
same size and says how many landed where a freed one had been.

/   {"pid": ..., "reused": N}
"""
import json
import os

SIZE = 3000
_blocks = [bytes(SIZE) for _ in range(400)]
FREED = frozenset(id(b) for b in _blocks[1::2])
del _blocks[1::2]


def application(env, start_response):
    fresh = [bytes(SIZE) for _ in range(200)]
    body = json.dumps({"pid": os.getpid(), "reused": sum(id(b) in FREED for b in fresh)}).encode()
    del fresh
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
