"""Mule for the fast-exit tests: its own uwsgi.atexit and atexit handler, pid in $EXIT_OUT/mule.pid.

Forked from the master, the mule also inherits the app's handlers (exit_handlers.py).
"""
import atexit
import os
import time

import uwsgi

OUT = os.environ["EXIT_OUT"]


def record(tag, _os=os, _out=OUT):
    fd = _os.open(_os.path.join(_out, f"{_os.getpid()}.log"), _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND, 0o644)
    try:
        _os.write(fd, (tag + "\n").encode())
    finally:
        _os.close(fd)


atexit.register(lambda: record("mule-atexit"))
uwsgi.atexit = lambda: record("mule-uwsgi.atexit")

with open(os.path.join(OUT, "mule.pid.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.rename(os.path.join(OUT, "mule.pid.tmp"), os.path.join(OUT, "mule.pid"))

while True:
    time.sleep(1)
