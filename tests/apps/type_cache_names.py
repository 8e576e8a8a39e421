"""App for cowguard-fill-holes' type cache part (issue #14): at import it looks an attribute up
under 400 names built at run time (not interned, as Django's getattr(node, "as_" + vendor)), so
CPython's type attribute cache holds the only reference to each, and keeps only their addresses.
A request reads each address: a name still alive in the worker has reference count 1, type str
and its own text there; one the master freed before the fork has pymalloc's free-list pointer (or
NULL) in its first word, or another object.

/   {"pid": ..., "alive": N, "of": 400}
"""
import ctypes
import json
import os
import sys


class Probe:
    pass


NAMES = 400
TEXT_OFFSET = sys.getsizeof("") - 1  # a compact ASCII str's text follows its header
PROBES = []  # (address, text)
for i in range(NAMES):
    name = "".join(["as_cowguard_probe_", str(i)])
    getattr(Probe, name, None)  # a miss is cached too: the entry keeps the name
    PROBES.append((id(name), name.encode()))
del name


def alive(probe):
    address, text = probe
    return (ctypes.c_uint32.from_address(address).value == 1
            and ctypes.c_void_p.from_address(address + 8).value == id(str)
            and ctypes.string_at(address + TEXT_OFFSET, len(text)) == text)


def application(env, start_response):
    body = json.dumps({"pid": os.getpid(), "alive": sum(map(alive, PROBES)), "of": NAMES}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
