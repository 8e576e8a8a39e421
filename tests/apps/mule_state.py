"""A mule that writes its GC state to $MULE_OUT, then waits."""
import gc
import json
import os
import time

with open(os.environ["MULE_OUT"] + ".tmp", "w") as f:
    json.dump({"pid": os.getpid(), "enabled": gc.isenabled(), "threshold": list(gc.get_threshold()),
               "frozen": gc.get_freeze_count()}, f)
os.rename(os.environ["MULE_OUT"] + ".tmp", os.environ["MULE_OUT"])
while True:
    time.sleep(1)
