"""bench/cow_diff.py's app: the bench's Django project (djangoproj/wsgi.py) plus /locate, which
takes [[mapping, [address, ...]], ...] (one list per changed page) and answers, per page, the type
of the object most of its changed words sit in ("no object" when none): every GC-tracked object
(gc.unfreeze() first: needs --cowguard-guard allow, and it writes GC headers, so it runs after the
pages were compared), the code objects of functions and the untracked referents of all; and the
address of each object found ("objects") and the names of the types ("types", by address), for
cow_diff.py to read what the master held there.
/trim calls malloc_trim(0) and answers private kB before and after."""
import bisect
import gc
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "djangoproj"))
spec = importlib.util.spec_from_file_location("djwsgi", str(HERE / "djangoproj" / "wsgi.py"))
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
app = m.application

def locate(addrs):
    gc.unfreeze()
    objs = gc.get_objects()
    seen = set(); spans = []
    def add(o, hdr):
        if id(o) in seen: return
        seen.add(id(o))
        try: sz = sys.getsizeof(o)
        except Exception: sz = 16
        spans.append((id(o) - hdr, id(o) + sz - hdr, type(o).__name__, o))
    for o in objs:
        add(o, 16)
        if type(o).__name__ == "function":
            add(o.__code__, 0)
        for r in gc.get_referents(o):
            if not gc.is_tracked(r): add(r, 0)
    spans.sort(key=lambda s: s[0])
    starts = [s[0] for s in spans]
    pages = {}; offsets = {}; objects = {}
    for name, group in addrs:
        kinds = {}
        for a in group:
            i = bisect.bisect_right(starts, a) - 1
            if i >= 0 and spans[i][0] <= a < spans[i][1]:
                s = spans[i]; off = a - s[0]
                kind = s[2]
                objects.setdefault(id(s[3]), kind)
                offsets["%s+%d" % (kind, off if kind != "code" else min(off, 200))] = offsets.get("%s+%d" % (kind, off if kind != "code" else min(off, 200)), 0) + 1
            else:
                kind = "no object"
            kinds[kind] = kinds.get(kind, 0) + 1
        top = max(kinds, key=kinds.get) if kinds else "none"
        key = name + ": " + top
        pages[key] = pages.get(key, 0) + 1
    # static types (int, str, code...) are not GC-tracked: taken from the objects' own types too
    types = {id(t): t.__name__ for t in [o for o in objs if isinstance(o, type)] + [type(s[3]) for s in spans]}
    return {"pages": pages, "offsets": offsets, "objects": objects, "types": types}

def application(environ, start_response):
    if environ["PATH_INFO"] == "/locate":
        addrs = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        body = json.dumps(locate(addrs)).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return app(environ, start_response)

import ctypes, os as _os
_libc = ctypes.CDLL(None)
def _private_kb():
    t = 0
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith(("Private_Clean", "Private_Dirty")): t += int(line.split()[1])
    return t
_app2 = application
def application(environ, start_response):
    if environ["PATH_INFO"] == "/trim":
        b = _private_kb(); _libc.malloc_trim(0); a = _private_kb()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"pid": _os.getpid(), "before_kb": b, "after_kb": a}).encode()]
    return _app2(environ, start_response)
