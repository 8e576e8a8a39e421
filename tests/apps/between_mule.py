"""A mule that makes reference cycles at a steady pace (about 2000 tracked objects a second, never
10000 between two ticks of cowguard-gc = between) and writes its GC state to $MULE_OUT twice a second."""
import gc
import json
import os
import time

import cowguard


class Node:
    __slots__ = ("peer", "payload")

    def __init__(self):
        self.peer = None
        self.payload = bytearray(512)


out = os.environ["MULE_OUT"]
last_write = 0.0
while True:
    for _ in range(20):
        a, b = Node(), Node()
        a.peer, b.peer = b, a
    time.sleep(0.02)
    if time.monotonic() - last_write > 0.5:
        last_write = time.monotonic()
        with open(out + ".tmp", "w") as f:
            json.dump({"pid": os.getpid(), "count": gc.get_count(), "threshold": gc.get_threshold(),
                       "gc": cowguard.stats()["gc"]}, f)
        os.rename(out + ".tmp", out)
