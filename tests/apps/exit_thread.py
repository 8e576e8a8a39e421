"""App for the fast-exit tests: non-daemon threads still running when the worker exits.

Run with --enable-threads. Every line goes to $EXIT_OUT/<pid>.log (see exit_handlers.py).

- /timed starts a non-daemon thread that ends after 1 s, recording "thread-done". CPython's
  exit waits for it (threading._shutdown) before the atexit handler, which records whether it
  saw the thread's result ("atexit: timed thread done" or "... not done").
- /until-uwsgi-atexit starts a non-daemon thread that runs until uwsgi.atexit sets an event: the
  usual way to stop a background thread in a uWSGI app, since the python plugin calls uwsgi.atexit
  before Py_Finalize waits for the threads.
"""
import atexit
import json
import os
import threading
import time

import uwsgi

OUT = os.environ["EXIT_OUT"]
STOP = threading.Event()
DONE = threading.Event()


def record(tag, _os=os, _out=OUT):
    fd = _os.open(_os.path.join(_out, f"{_os.getpid()}.log"), _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND, 0o644)
    try:
        _os.write(fd, (tag + "\n").encode())
    finally:
        _os.close(fd)


def timed():
    time.sleep(1)
    DONE.set()
    record("thread-done")


def until_stopped():
    while not STOP.wait(0.05):
        pass
    record("thread-stopped")


def on_uwsgi_atexit():
    STOP.set()
    record("uwsgi.atexit")


def on_atexit():
    record("atexit: timed thread " + ("done" if DONE.is_set() else "not done"))


atexit.register(on_atexit)
uwsgi.atexit = on_uwsgi_atexit


def application(env, start_response):
    path = env.get("PATH_INFO", "/")
    if path == "/timed":
        threading.Thread(target=timed, name="timed").start()
    elif path == "/until-uwsgi-atexit":
        threading.Thread(target=until_stopped, name="until-uwsgi-atexit").start()
    body = json.dumps({"pid": os.getpid(), "threads": threading.active_count()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
