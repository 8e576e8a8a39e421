"""App for the fast-exit tests (issue #4): exit handlers that leave a trace per process.

Every handler appends one line to $EXIT_OUT/<pid>.log, so a test can read, per worker or mule,
which handlers ran and in which order. Registered at import, i.e. in the master before the fork:
every worker (and mule) inherits them.

- uwsgi.atexit            -> "uwsgi.atexit"
- atexit handlers          -> "atexit-first", "atexit-broken" (then raises), "atexit-last";
                             CPython runs them last-registered-first.
- handlers print "exit-print ... pid=N" to stdout without flushing: only the exit path's flush
  gets it into the log.
- SENTINEL.__del__ appends "del" to $EXIT_OUT/<pid>.del: only an interpreter teardown
  (Py_Finalize clearing the module) runs it. It captures os in default arguments, since
  builtins may already be gone when the teardown reaches it.
- /sleep keeps the worker busy for 10 s (after writing $EXIT_OUT/<pid>.busy).
"""
import atexit
import json
import os
import time

import uwsgi

OUT = os.environ["EXIT_OUT"]


def record(tag, suffix="log", _os=os, _out=OUT):
    fd = _os.open(_os.path.join(_out, f"{_os.getpid()}.{suffix}"), _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND, 0o644)
    try:
        _os.write(fd, (tag + "\n").encode())
    finally:
        _os.close(fd)


def on_uwsgi_atexit():
    record("uwsgi.atexit")
    print(f"exit-print uwsgi.atexit pid={os.getpid()}")


def first():
    record("atexit-first")
    print(f"exit-print atexit-first pid={os.getpid()}")


def broken():
    record("atexit-broken")
    raise RuntimeError(f"exit-boom pid={os.getpid()}")


def last():
    record("atexit-last")


atexit.register(first)
atexit.register(broken)
atexit.register(last)
uwsgi.atexit = on_uwsgi_atexit


class Sentinel:
    def __del__(self, _record=record):
        _record("del", "del")


SENTINEL = Sentinel()


def application(env, start_response):
    if env.get("PATH_INFO") == "/sleep":  # keeps the worker busy
        record("sleeping", "busy")
        time.sleep(10)
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
