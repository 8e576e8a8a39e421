"""Threads started at import (issue 19): apps whose import starts threads that print, allocate,
make cycles and call gc while the master loads the app, freezes and forks. Every configuration
is started many times; a crash, a hang at startup or a stop slower than stock uWSGI's is a failure.

The crash this guards against: uWSGI's python plugin replaces sys.stdout/sys.stderr while the
apps load, and CPython 3.11's print() holds a borrowed reference to sys.stdout, so a thread inside
print() wrote to a freed stream and the master died (stock uWSGI too: see README, "Threads started
at import"). cowguard keeps the original streams alive.
"""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import APPS

NOISE = APPS / "threads_at_import"
# The issue's scenario is started 20 times; the rest of the matrix COWGUARD_THREAD_STARTS times.
STARTS = int(os.environ.get("COWGUARD_THREAD_STARTS", "3"))
ISSUE_STARTS = max(STARTS, 20)
STOCK_STARTS = 3
STOP_TIMEOUT = 60
STOCK_STOP_TIMEOUT = 20  # stock uWSGI's own hangs at stop (no-enable-threads) need not be waited out
CRASH = re.compile(r"Segmentation Fault|Fatal Python error|Aborted|got signal|AddressSanitizer|runtime error")
ISSUE = ["--enable-threads", "--single-interpreter", "--py-call-uwsgi-fork-hooks"]
APP = ["--wsgi-file", str(APPS / "threads_app.py")]
SUB = ["--mount", f"/={APPS / 'threads_app.py'}", "--mount", f"/b={APPS / 'second_app.py'}"]

# With threads enabled, py-call-uwsgi-fork-hooks is part of every configuration: without it a
# worker forked while an import-time thread holds the GIL waits for it for ever, stock uWSGI
# included (test_warns_without_fork_hooks).
HOOKS = ["--py-call-uwsgi-fork-hooks"]

# name: (uWSGI arguments, master, workers, starts)
MATRIX = {
    "issue-1-worker": (ISSUE + APP + ["--workers", "1"], True, 1, ISSUE_STARTS),
    "issue-10-workers": (ISSUE + APP + ["--workers", "10"], True, 10, ISSUE_STARTS),
    "enable-threads": (["--enable-threads"] + HOOKS + APP + ["--workers", "2"], True, 2, STARTS),
    "no-enable-threads": (APP + ["--workers", "2"], True, 2, STARTS),
    "threads-4": (["--threads", "4", "--single-interpreter"] + HOOKS + APP + ["--workers", "2"], True, 2, STARTS),
    # Sub-interpreters cannot have the fork hooks (test_fork_hooks_with_sub_interpreters_refused),
    # so threads stay off here: the forking thread holds the GIL (a known failure: KNOWN).
    "sub-interpreters": (SUB + ["--workers", "2"], True, 2, STARTS),
    "lazy-apps-10-workers": (ISSUE + ["--lazy-apps"] + APP + ["--workers", "10"], True, 10, STARTS),
    "no-master": (["--enable-threads"] + HOOKS + APP + ["--workers", "1"], False, 1, STARTS),
    "no-master-threads-4": (["--threads", "4"] + HOOKS + APP + ["--workers", "1"], False, 1, STARTS),
}


def readable(log, chars=6000):
    """The log's end without the noise threads' tick lines, for a failure message."""
    return "\n".join(l for l in log.splitlines() if not l.startswith("[noise] tick"))[-chars:]


def describe_hang(inst):
    """Appends to the log what each process still running at the stop's deadline is doing: every
    thread's state, kernel wait channel and signal masks from /proc, native stacks and the SIGINT
    handler when gdb is installed (a fresh system's `make test` has none), and for a worker
    whether a second SIGINT ends it (it did, in every hang of stock uWSGI: the first was lost)."""
    import shutil
    import signal
    master = inst.proc.pid
    pids = subprocess.run(["pgrep", "-g", str(master)], capture_output=True, text=True).stdout.split()
    with open(inst.log_path, "a") as log:
        for pid in pids:
            log.write(f"\n*** process {pid} still running at the stop's deadline ***\n")
            for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
                try:
                    status = (task / "status").read_text().splitlines()
                    fields = [l.replace("\t", " ") for l in status
                              if l.startswith(("State", "PPid", "SigPnd", "ShdPnd", "SigBlk", "SigCgt"))]
                    log.write(f"thread {task.name} ({(task / 'comm').read_text().strip()}): "
                              f"wchan={(task / 'wchan').read_text()} {'; '.join(fields)}\n")
                except OSError:
                    pass  # the thread ended meanwhile
            if shutil.which("gdb"):
                log.write(subprocess.run(
                    ["gdb", "-q", "-batch", "-p", pid, "-ex", "thread apply all bt 25",
                     "-ex", "set $act = (char*) malloc(256)", "-ex", "call (int) sigaction(2, 0, $act)",
                     "-ex", "info symbol *(void**) $act"],
                    capture_output=True, text=True, timeout=60).stdout + "\n")
        for pid in pids:
            if int(pid) == master:
                continue
            try:
                os.kill(int(pid), signal.SIGINT)
            except OSError:
                continue
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and \
                    "zombie" not in Path(f"/proc/{pid}/status").read_text():
                time.sleep(0.1)
            ended = not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
            log.write(f"*** a second SIGINT to {pid}: {'ended it' if ended else 'did not end it within 5 s'} ***\n")


def start_and_stop(uwsgi, args, master, workers, cowguard=True, extra_env=None):
    """One life: up with every worker spawned and answering, a few requests, a graceful stop.
    Returns (exit status, seconds the stop took, log)."""
    stop_timeout = STOP_TIMEOUT if cowguard else STOCK_STOP_TIMEOUT
    env = {"PYTHONPATH": f"{NOISE}:{APPS}", "NOISE_SECONDS": "3", **(extra_env or {})}
    inst = uwsgi(args, master=master, cowguard=cowguard, env=env)
    inst.wait_ready(timeout=60)
    deadline = time.monotonic() + 90
    answered = False
    while time.monotonic() < deadline and not answered:
        log = inst.log()
        if CRASH.search(log) or inst.proc.poll() is not None:
            break
        if log.count("spawned uWSGI worker") >= workers or not master:
            try:
                inst.get_json("/", timeout=5)
                answered = True
            except OSError:
                pass
        time.sleep(0.1)
    if not answered and inst.proc.poll() is None and not CRASH.search(inst.log()):
        raise AssertionError(f"no answer 90 s after the start (hang at startup?):\n{readable(inst.log())}")
    if answered:
        # While the import-time threads still run (in the master, or in lazy-apps workers).
        for _ in range(4 * workers):
            inst.get_json("/", timeout=30)
    t0 = time.monotonic()
    try:
        status = inst.stop(timeout=stop_timeout)
    except AssertionError:  # still running: a hang at stop (stock uWSGI has some, see the matrix)
        if cowguard:
            describe_hang(inst)
        inst.kill()
        status = "hung"
    return status, time.monotonic() - t0, inst.log()


# uWSGI 2.0.27 and later enable threads whatever the configuration says (enable-threads is a stub
# there): "no-enable-threads" is then enable-threads without py-call-uwsgi-fork-hooks, which
# hangs stock uWSGI too (test_warns_without_fork_hooks).
THREADS_ALWAYS_ON = "true by default" in subprocess.run(["uwsgi", "--help"], capture_output=True,
                                                        text=True).stdout.split("--enable-threads", 1)[-1].split("\n")[0]


# Open, sub-interpreters with threads off (uWSGI < 2.0.27): (1) a master thread waiting for the GIL
# at the fork leaves a GIL drop request in the worker, whose first import then waits for ever for
# a switch to a thread that does not exist (gdb: uwsgi_python_reset_random_seed -> drop_gil's cond
# wait; stock uWSGI hung in 1 of 2 starts the same way); cowguard repairs it with
# PyOS_AfterFork_Child only with one interpreter (that call deletes sub-interpreters) and warns
# (test_warns_...). (2) sitecustomize runs again in each sub-interpreter the python plugin
# creates, its thread prints, and the plugin replaces that interpreter's sys.stdout inside
# mount_app: the 3.11 print() crash of the main interpreter, where no hook can keep the stream.
KNOWN = {"sub-interpreters": "open: a stale GIL drop request hangs a worker, and a print() in a sub-interpreter's "
                             "import-time thread crashed the master in 1 of 8 (stock hung in 1 of 2)"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN[n], strict=False))
                                  if n in KNOWN else n for n in MATRIX])
def test_threads_started_at_import(uwsgi, name):
    args, master, workers, starts = MATRIX[name]
    if name in ("no-enable-threads", "sub-interpreters") and THREADS_ALWAYS_ON:
        pytest.skip("this uWSGI always enables threads: the configuration is enable-threads without fork hooks")
    # Without a master uWSGI ends a SIGTERMed single worker with 30 (stock the same, seen here).
    stock_stops, stock_statuses, stock_hangs = [], {0} if master else {0, 30}, 0
    for _ in range(STOCK_STARTS):
        try:
            status, took, log = start_and_stop(uwsgi, args, master, workers, cowguard=False)
        except AssertionError:
            continue  # stock uWSGI hung at startup: cowguard may not
        stock_hangs += status == "hung"
        if not CRASH.search(log) and status != "hung":
            stock_stops.append(took)
            stock_statuses.add(status)
    # uWSGI itself sometimes takes seconds to stop 10 workers: cowguard may not be slower than that.
    stop_bound = (max(stock_stops) if stock_stops else 10.0) * 1.5 + 5
    took_max = 0.0
    for i in range(starts):
        status, took, log = start_and_stop(uwsgi, args, master, workers)
        crash = CRASH.search(log)
        assert not crash, f"start {i + 1}/{starts}: {crash}:\n{readable(log)}"
        assert "froze" in log
        # A stop that a worker still starting used to lose (uWSGI's own: see hold_stop_signals in
        # plugin/cowguard.cc) is a failure now; describe_hang() wrote what each process was doing.
        assert status != "hung", f"start {i + 1}/{starts}: stop hung (stock: {stock_hangs} of {STOCK_STARTS}):\n{readable(log, 12000)}"
        assert status in stock_statuses, f"start {i + 1}/{starts}: status {status} (stock: {stock_statuses}):\n{readable(log)}"
        assert took <= stop_bound, f"start {i + 1}: stop took {took:.1f} s, stock at most {stop_bound:.1f} s:\n{readable(log)}"
        took_max = max(took_max, took)
    print(f"\n[threads] {name}: stock hung at stop in {stock_hangs} of {STOCK_STARTS} starts; cowguard in 0 of "
          f"{starts}, its slowest stop {took_max:.1f} s (bound {stop_bound:.1f} s)")


def test_warns_without_fork_hooks(uwsgi):
    """enable-threads without py-call-uwsgi-fork-hooks, with threads alive in the master at the
    fork: workers may wait for the GIL for ever (stock uWSGI hung in 3 of 3 starts here); cowguard
    cannot undo it from a plugin, and says so, with the remedy, before the first fork."""
    inst = uwsgi(["--enable-threads"] + APP + ["--workers", "2"],
                 env={"PYTHONPATH": f"{NOISE}:{APPS}", "NOISE_SECONDS": "3"})
    inst.wait_log("without py-call-uwsgi-fork-hooks", timeout=60)
    assert re.search(r"\[cowguard\] \d+ Python threads run in the master before the fork", inst.log())
    assert "Set py-call-uwsgi-fork-hooks = true" in inst.log()


def test_no_warning_with_fork_hooks_or_without_threads(uwsgi):
    for args in (["--enable-threads"] + HOOKS + APP, ["--enable-threads", "--wsgi-file", str(APPS / "second_app.py")]):
        inst = uwsgi(args + ["--workers", "1"],
                     env={"PYTHONPATH": f"{NOISE}:{APPS}" if HOOKS[0] in args else str(APPS), "NOISE_SECONDS": "1"})
        inst.wait_ready(timeout=60)
        inst.wait_log("spawned uWSGI worker 1", timeout=60)
        inst.get_json("/")
        assert "without py-call-uwsgi-fork-hooks" not in inst.log()
        inst.stop()


@pytest.mark.parametrize("hook", ["--py-call-uwsgi-fork-hooks", "--py-call-osafterfork"])
def test_fork_hooks_with_sub_interpreters_refused(uwsgi, hook):
    """CPython's PyOS_AfterFork_Child, which both options call in every worker, deletes the
    sub-interpreters the mounted apps live in: stock uWSGI crashed mounting them (6 of 6 starts
    with the fork hooks), and no worker could serve them. The master stops before the fork with
    one line naming the option and what works instead."""
    inst = uwsgi(["--enable-threads", hook] + SUB + ["--workers", "2"], env={"PYTHONPATH": str(APPS)})
    assert inst.wait_exit(timeout=60) == 1
    lines = [l for l in inst.log().splitlines() if l.startswith(f"[cowguard] {hook[2:]}:")]
    assert len(lines) == 1, inst.log()
    assert "deletes every sub-interpreter" in lines[0] and "set single-interpreter = true" in lines[0]
    assert "spawned uWSGI worker" not in inst.log()


def test_warns_with_sub_interpreters_and_threads_off(uwsgi):
    """Import-time threads, sub-interpreters, threads off (uWSGI < 2.0.27): the one hazard above
    that cowguard cannot repair without deleting the sub-interpreters; it says so before the fork."""
    if THREADS_ALWAYS_ON:
        pytest.skip("this uWSGI always enables threads")
    # Quiet threads: a print() there can crash the master (the second open failure above).
    inst = uwsgi(SUB + ["--workers", "1"], env={"PYTHONPATH": f"{NOISE}:{APPS}", "NOISE_SECONDS": "30", "NOISE_QUIET": "1"})
    inst.wait_log("with sub-interpreters and threads not enabled", timeout=60)
    assert "Set single-interpreter = true" in inst.log()
