"""App for cowguard-trim (issue #6): at import it fills about 100 MB of malloc's heap with
1,000-byte buffers (above pymalloc's 512-byte limit, so malloc's), keeps one buffer allocated
after them and frees the rest: free memory inside the heap that glibc does not give back on its
own (only free space at the top is trimmed automatically), which malloc_trim(0) does.

/   {"pid": ...}
"""
import json
import os

_junk = [bytes(1000) for _ in range(100_000)]
KEEP = bytes(1000)  # above the freed buffers: the heap's top cannot shrink past it
del _junk


def application(env, start_response):
    data = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
