"""Fixtures for integration tests: real uWSGI processes with the built cowguard plugin.

Every instance runs in its own process group and is killed at teardown, whatever happened.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"
PLUGIN = Path(os.environ.get("COWGUARD_PLUGIN", ROOT / "build" / "cowguard_plugin.so"))
sys.path.append(str(ROOT / "bench"))
from common import free_port, read_stats, smaps_rollup  # noqa: E402,F401  (bench/common.py, shared with the benchmarks)
# CPython's own default GC thresholds in the Python uWSGI's python3 plugin embeds (what a worker has
# with cowguard off): 700,10,10 up to 3.12; 3.13 raised generation 0's to 2000.
EMBEDDED_PYTHON = subprocess.run([ROOT / "tools" / "uwsgi-python-config", "--python"], capture_output=True,
                                 text=True, check=True).stdout.strip()
STOCK_THRESHOLD = json.loads(subprocess.run(
    [EMBEDDED_PYTHON, "-I", "-c", "import gc, json; print(json.dumps(gc.get_threshold()))"],
    capture_output=True, text=True, check=True).stdout)


class Uwsgi:
    """One uWSGI master started with the given arguments; log in self.log_path."""

    def __init__(self, tmp_path, args, cowguard=True, http=True, env=None, cwd=None, master=True):
        self.tmp = tmp_path
        self.port = free_port() if http else None
        self.log_path = tmp_path / f"uwsgi-{time.monotonic_ns()}.log"
        cmd = ["uwsgi"] + (["--master"] if master else []) + ["--plugin", "python3"]
        if cowguard:
            cmd += ["--plugin", str(PLUGIN)]
        if http:
            cmd += ["--http-socket", f"127.0.0.1:{self.port}"]
        cmd += ["--die-on-term", "--pythonpath", str(APPS)] + [str(a) for a in args]
        self.cmd = cmd
        self.log_file = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=full_env,
                                     cwd=str(cwd or tmp_path), start_new_session=True)

    # ---- lifecycle ---------------------------------------------------------------------------
    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"uWSGI exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"uWSGI not ready after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"uWSGI still running after {timeout}s:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Graceful stop of the whole instance; returns the master's exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        # stray workers of a dead master
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log_file.close()

    # ---- talking to it -----------------------------------------------------------------------
    def get(self, path="/", timeout=30):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return r.read()

    def get_json(self, path="/", timeout=30):
        return json.loads(self.get(path, timeout))

    def log(self):
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in log after {timeout}s:\n{self.log()}")

    def worker_pids(self):
        """Pids of the master's direct children (workers, mules, spooler)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return sorted(int(p) for p in out.stdout.split())

    def wait_idle(self, timeout=30):
        """Until every thread of the master's children sleeps in a system call other than a write,
        twice 20 ms apart: a worker whose client has its response is still in the request until
        uwsgi_close_request returns (its log line, cowguard-gc = between's collection), and uWSGI's
        python plugin, and cowguard for parity, run no Python exit path in a worker stopped then."""
        writes = {"1", "20", "44", "46"}  # x86_64: write, writev, sendto, sendmsg

        def sleeping(pid):
            for task in Path(f"/proc/{pid}/task").iterdir():
                stat = (task / "stat").read_text()
                call = (task / "syscall").read_text().split()[0]
                if stat[stat.rindex(")") + 2] != "S" or call in ("running", "-1") or call in writes:
                    return False
            return True

        deadline, calm = time.monotonic() + timeout, 0
        while calm < 2:
            assert time.monotonic() < deadline, f"workers not idle after {timeout} s:\n{self.log()}"
            try:
                calm = calm + 1 if all(sleeping(pid) for pid in self.worker_pids()) else 0
            except (FileNotFoundError, ProcessLookupError):
                calm = 0  # a child came or went
            time.sleep(0.02)

    def stop_idle(self, sig=signal.SIGTERM, timeout=30):
        """stop() once the workers are idle (wait_idle): for tests that assert what exiting workers do."""
        self.wait_idle(timeout)
        return self.stop(sig, timeout)

    def every_worker(self, path, workers, timeout=30, concurrency=8, on_answer=None):
        """Asks `path` (a JSON endpoint returning {"pid": ...}) until each of `workers` pids answered;
        returns each pid's first answer. `on_answer(doc)` sees every answer, in order."""
        import concurrent.futures
        seen = {}
        deadline = time.monotonic() + timeout
        with concurrent.futures.ThreadPoolExecutor(concurrency) as ex:
            while len(seen) < workers:
                if time.monotonic() > deadline:
                    raise AssertionError(f"only {len(seen)} of {workers} workers answered:\n{self.log()}")
                for doc in ex.map(lambda _: self.get_json(path), range(concurrency)):
                    if on_answer:
                        on_answer(doc)
                    seen.setdefault(doc["pid"], doc)
        return seen


@pytest.fixture
def uwsgi(tmp_path):
    """Factory: uwsgi(args, cowguard=True, ...) -> started (not yet ready) instance."""
    instances = []

    def start(args, **kw):
        inst = Uwsgi(tmp_path, args, **kw)
        instances.append(inst)
        return inst

    yield start
    for inst in instances:
        inst.kill()


def private_kb(pid):
    r = smaps_rollup(pid)
    return r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)


def wait_for(predicate, timeout, what, log=lambda: ""):
    """predicate()'s first true value, asked every 50 ms; after `timeout` seconds an AssertionError
    naming `what`, with log() (the instance's log, say) below it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s\n{log()}")
