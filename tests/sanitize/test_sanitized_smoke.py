"""Issue #9: an integration smoke of uWSGI with the AddressSanitizer + UndefinedBehaviorSanitizer
build of cowguard (cmake -DCOWGUARD_SANITIZE=ON; `make test-sanitize` builds it and sets
COWGUARD_PLUGIN to it).

uwsgi itself is not instrumented, so the ASan runtime has to come first: LD_PRELOAD holds gcc's
libasan.so and libubsan.so. Options, and why:
  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1   a long-running server with an embedded Python
      holds memory on purpose until exit (and workers end with _exit under fast exit): LeakSanitizer
      would only report noise here. The unit tests run with detect_leaks=1.
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
Nothing else was needed: CPython's pymalloc is not instrumented (libpython is the distribution's),
so its reads of arena headers raise no false positives, and PYTHONMALLOC=malloc or
allocator_may_return_null=1 made no difference to the reports (there were none either way).

Any "ERROR: AddressSanitizer", "runtime error:" (UBSan) or sanitizer SUMMARY line in a log fails
the test; so does a worker dying (halt_on_error makes a report fatal).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import integration

APPS = integration.APPS
PLUGIN = integration.PLUGIN
sys.path.insert(0, str(APPS))
from fault_client import children, policy_thresholds, read_stats, reload_and_wait  # noqa: E402

REPORT_MARKERS = ["ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "SUMMARY: AddressSanitizer",
                  "SUMMARY: UndefinedBehaviorSanitizer", "AddressSanitizer:DEADLYSIGNAL"]


def runtime(name):
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    assert os.path.isabs(path) and os.path.exists(path), f"{name} not found (gcc -print-file-name={name})"
    return path


SAN_ENV = {
    "LD_PRELOAD": f"{runtime('libasan.so')} {runtime('libubsan.so')}",
    "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


def test_plugin_is_the_sanitized_build():
    needed = subprocess.run(["readelf", "-d", str(PLUGIN)], capture_output=True, text=True).stdout
    assert "libasan.so" in needed and "libubsan.so" in needed, \
        f"{PLUGIN} is not the ASan+UBSan build (COWGUARD_PLUGIN should point at build/sanitize/):\n{needed}"


def check_clean(u):
    log = u.log()
    reports = [line for line in log.splitlines() if any(m in line for m in REPORT_MARKERS)]
    assert not reports, "sanitizer report(s):\n" + log[-20000:]
    for bad in ("DAMN", "MISTERIOUSLY", "Traceback", "is not valid"):
        assert bad not in log, f"{bad!r} in the log:\n{log[-6000:]}"
    return log


def start(uwsgi, args, workers=2, stats_addr=None):
    args = ["--workers", workers, "--module", "fault_app", "--add-header", "Connection: close"] + args
    u = uwsgi([str(a) for a in args], env=SAN_ENV).wait_ready(timeout=60)
    u.wait_log("spawned uWSGI worker", timeout=60)
    with open(f"/proc/{u.proc.pid}/maps") as f:
        maps = f.read()
    assert "libasan.so" in maps and "libubsan.so" in maps, "the sanitizer runtimes are not loaded"
    return u


def poll_stats(addr, n=10, http=False):
    """n documents from the stats server (TCP port or unix path), each valid JSON with cowguard's key."""
    for _ in range(n):
        if isinstance(addr, int) and not http:
            raw = read_stats(addr)
        else:
            unix = not isinstance(addr, int)
            with socket.socket(socket.AF_UNIX if unix else socket.AF_INET) as s:
                s.settimeout(5)
                s.connect(str(addr) if unix else ("127.0.0.1", addr))
                if http:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                raw = b""
                while chunk := s.recv(65536):
                    raw += chunk
        if http:
            head, _, raw = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200"), head
        doc = json.loads(raw)
        assert "cowguard" in doc and doc["workers"], doc.keys()
        time.sleep(0.05)
    return doc


def poll_metrics(port, n=10):
    """n scrapes of the Prometheus endpoint plus a 404 and a 405, each a whole HTTP/1.1 answer."""
    def ask(request):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data
    for _ in range(n):
        answer = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"\ncowguard_process_uss_bytes{" in answer, answer[:300]
        time.sleep(0.05)
    assert ask(b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert ask(b"PUT /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")


def test_young_block_stats_report_reload(uwsgi, tmp_path):
    """The default policy (young, guard block) with a warmup and a replay, trim, a mule, max-requests recycling,
    the TCP stats server and the Prometheus endpoint polled, copy-on-write reports (through the module, on the trigger file and at
    exit), a SIGKILLed worker, a graceful reload and a stop."""
    reports = tmp_path / "cow"
    reports.mkdir()
    replay = tmp_path / "warm.txt"
    replay.write_text("# fault_app's pages\n/\nHEAD /gc X-A: \"b c\"\n/containers?n=1000\n")
    sp = integration.free_port()
    pp = integration.free_port()
    u = start(uwsgi, ["--mule", "--stats", f"127.0.0.1:{sp}", "--cowguard-stats-interval", "0.2",
                      "--cowguard-prometheus", f"127.0.0.1:{pp}", "--cowguard-cow-report", reports, "--cowguard-warmup", "os:getpid", "--cowguard-trim", "true",
                      "--cowguard-warmup-requests", replay, "--cowguard-warmup-rounds", 2,
                      "--max-requests", 40, "--min-worker-lifetime", 0, "--forkbomb-delay", 0])
    thresholds = policy_thresholds(u.log())
    seen = u.every_worker("/gc", 2, timeout=60)
    for doc in seen.values():
        assert doc["gc"]["threshold"][:len(thresholds)] == thresholds and doc["gc"]["frozen"] > 0, doc
    for path in ["/", "/containers?n=30000", "/enable", "/cowstats", "/report"] * 4:
        u.get(path, timeout=60)
    assert "[cowguard] blocked gc.enable()" in u.log()
    for _ in range(100):  # past max-requests: workers are recycled (fast exit, cow report at exit)
        u.get("/")
    poll_stats(sp, 10)
    poll_metrics(pp, 10)
    (reports / "trigger").touch()
    u.wait_log("copy-on-write report on signal", timeout=30)

    t0 = len(children(u.proc.pid))
    victim = [p for p in children(u.proc.pid)][0]
    os.kill(victim, signal.SIGKILL)
    u.wait_log("Respawned uWSGI", timeout=30)
    reload_and_wait(u, workers=t0)
    u.every_worker("/gc", 2, timeout=60)
    poll_stats(sp, 5)
    poll_metrics(pp, 5)  # bound again by the new master
    assert u.stop() == 0
    log = check_clean(u)
    assert log.count("[cowguard] master: froze") == 2
    assert log.count("warmup replay: done in") == 2, "at the start and after the reload"
    assert list(reports.glob("cow-*.json")), "no copy-on-write report written"
    assert "recycling" not in log  # no memory limit: recycles are uWSGI's max-requests


def test_off_warn_lazy_apps_http_stats(uwsgi, tmp_path):
    """gc off with guard warn under lazy-apps (each worker loads, replays and freezes its own app), stats over
    HTTP, the after-request GC state check under gc=off, a graceful reload and a stop."""
    sp = integration.free_port()
    replay = tmp_path / "warm.txt"
    replay.write_text("/\n/gc\n")
    u = start(uwsgi, ["--lazy-apps", "--cowguard-gc", "off", "--cowguard-guard", "warn",
                      "--stats", f"127.0.0.1:{sp}", "--stats-http", "--cowguard-stats-interval", "0.2",
                      "--cowguard-warmup-requests", replay])
    seen = u.every_worker("/gc", 2, timeout=60)
    for doc in seen.values():
        assert not doc["gc"]["enabled"] and doc["gc"]["frozen"] > 0, doc
    for path in ["/", "/containers?n=20000", "/enable", "/gc", "/cowstats"] * 3:
        u.get(path, timeout=60)
    poll_stats(sp, 10, http=True)
    reload_and_wait(u, 2)
    u.every_worker("/gc", 2, timeout=60)
    assert u.stop() == 0
    check_clean(u)


def test_thresholds_allow_no_fast_exit_unix_stats(uwsgi, tmp_path):
    """Explicit thresholds with guard allow and fast exit off (CPython's own finalization runs in
    every worker), stats on a unix socket, one stop."""
    sock = tmp_path / "stats.sock"
    u = start(uwsgi, ["--cowguard-gc", "700,10,10", "--cowguard-guard", "allow", "--cowguard-fast-exit", "false",
                      "--stats", sock, "--cowguard-stats-interval", "0.2"])
    seen = u.every_worker("/gc", 2, timeout=60)
    for doc in seen.values():
        assert doc["gc"]["threshold"] == [700, 10, 10], doc
    for path in ["/", "/containers?n=20000", "/enable", "/report"] * 3:
        u.get(path, timeout=60)
    poll_stats(sock, 10)
    assert u.stop() == 0
    check_clean(u)


def test_refused_option_exits_cleanly(uwsgi):
    """The error path at init (build_settings refuses a value; exit(1) before Python starts)."""
    u = uwsgi(["--module", "fault_app", "--cowguard-stats-interval", "0.01"], env=SAN_ENV)
    assert u.wait_exit(60) == 1
    log = u.log()
    assert "[cowguard] cowguard-stats-interval: '0.01' is not valid" in log, log
    assert not [line for line in log.splitlines() if any(m in line for m in REPORT_MARKERS)], log


def load_integration_test(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        f"cowguard_integration_{name}", APPS.parent / "integration" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


THREADS = load_integration_test("test_threads")


# Issue 19's matrix under the sanitizers: the configurations where cowguard swaps thread states
# (threads = 4, sub-interpreters) or runs its hooks while import-time threads run.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=THREADS.KNOWN[n], strict=False)) if n in THREADS.KNOWN else n
    for n in ["issue-10-workers", "threads-4", "sub-interpreters", "lazy-apps-10-workers", "no-master-threads-4"]])
def test_threads_started_at_import_sanitized(uwsgi, name):
    args, master, workers, _ = THREADS.MATRIX[name]
    if name == "sub-interpreters" and THREADS.THREADS_ALWAYS_ON:
        pytest.skip("this uWSGI always enables threads: see test_threads")
    for i in range(3):
        status, _, log = THREADS.start_and_stop(uwsgi, args, master, workers, extra_env=SAN_ENV)
        reports = [line for line in log.splitlines() if any(m in line for m in REPORT_MARKERS)]
        assert not reports, f"start {i + 1}: sanitizer report:\n{log[-20000:]}"
        # A hang at stop fails, as in test_threads (its description is in the log).
        assert status != "hung", f"start {i + 1}: stop hung:\n{THREADS.readable(log, 12000)}"
        # Without a master uWSGI ends a SIGTERMed worker with 30 (stock the same: test_threads).
        assert status == (0 if master else 30), f"start {i + 1}: status {status}:\n{THREADS.readable(log)}"
