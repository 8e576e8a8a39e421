"""Issue #9: bad configuration. Every cowguard option (the list and what each accepts come from the
plugin itself: `uwsgi --plugin python3 --plugin cowguard --help`) given empty, negative, huge,
non-numeric and duplicated values; the plugin loaded twice; uWSGI without its master; cowguard
options without the plugin.

Each value either works as its help text documents (uWSGI starts; a duplicated single-valued
option logs "[cowguard] <option> given N times; using the last value '<last>' over ..." and the
last value is the effective one in the stats document) or stops uWSGI at startup with exactly one
line "[cowguard] <option>: '<value>' is not valid; accepts <help text>". Whether a value is valid is
decided here from the help text alone (an independent reading of the documentation), never from the
plugin's code.

Fast on purpose: each uWSGI runs until it exits or has spawned its worker, then is stopped; the runs
of one option go four at a time.
"""
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import APPS, PLUGIN, STOCK_THRESHOLD, free_port

EMPTY, NEGATIVE, HUGE, NON_NUMERIC = "", "-1", "99999999999999999999999", "abc"
BAD_KINDS = {"empty": EMPTY, "negative": NEGATIVE, "huge": HUGE, "non-numeric": NON_NUMERIC}
BOOLS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def help_options():
    """{option: accepts} as the plugin lists them in uWSGI's --help."""
    out = subprocess.run(["uwsgi", "--plugin", "python3", "--plugin", str(PLUGIN), "--help"],
                         capture_output=True, text=True, timeout=30).stdout
    found = dict(re.findall(r"^\s+--(cowguard[\w-]*)\s+(.+?)\s*$", out, re.M))
    assert "cowguard" in found and "cowguard-gc" in found, out[-2000:]
    return found


OPTIONS = help_options()


# ---- what the help text says each option accepts ----------------------------------------------

def digits(t, top):
    return t.isdigit() and len(t) <= 20 and int(t) <= top


def documented_valid(option, value):
    """Whether `value` is valid for `option` according to its help text (values are trimmed and
    case-insensitive, as the README's option table says)."""
    accepts = OPTIONS[option]
    t = value.strip().lower()
    if accepts == "true or false":
        return t in BOOLS
    if accepts.startswith("young, between, off or T0[,T1[,T2]]") or accepts.startswith("T0[,T1[,T2]] (integers"):
        parts = [p.strip() for p in t.split(",")]
        words = ("young", "between", "off") if accepts.startswith("young") else ()
        return t in words or (1 <= len(parts) <= 3 and all(digits(p, 1_000_000_000) for p in parts))
    if accepts == "block, warn or allow":
        return t in ("block", "warn", "allow")
    if accepts.startswith("seconds, a number from 0.1 to 3600"):
        return bool(re.fullmatch(r"\d+(\.\d+)?", t)) and len(t) <= 16 and 0.1 <= float(t) <= 3600
    if accepts.startswith("megabytes, an integer"):
        return digits(t, 1 << 30)
    if accepts.startswith("module:callable"):
        ident = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
        return bool(re.fullmatch(ident + ":" + ident, value.strip()))
    if accepts == "fatal or log":
        return t in ("fatal", "log")
    if accepts == "true, false or auto":
        return t in BOOLS or t == "auto"
    if accepts.startswith("a directory path") or accepts.startswith("a request file path"):
        return bool(value.strip())
    if accepts == "an integer from 1 to 1000":
        return digits(t, 1000) and int(t) >= 1
    if accepts.startswith("an integer from 0 to 1000"):
        return digits(t, 1000)
    if accepts.startswith("a uWSGI signal number"):
        return digits(t, 255) and int(t) >= 1
    if accepts.startswith("host:port (TCP"):
        v = value.strip()
        if any(ord(c) < 0x20 or ord(c) == 0x7f for c in v):
            return False
        if ":" not in v:
            return 0 < len(v.encode()) <= 107
        host, port = v.rsplit(":", 1)
        host_ok = (re.fullmatch(r"[A-Za-z0-9._-]*", host) is not None
                   or re.fullmatch(r"\[[0-9A-Fa-f:.]+\]", host) is not None)
        return host_ok and digits(port, 65535) and int(port) >= 1
    if accepts.startswith("a name of 1 to 128 characters"):
        v = value.strip()
        return 1 <= len(v) <= 128 and not any(ord(c) < 0x20 or ord(c) == 0x7f for c in v)
    raise AssertionError(f"help text of {option} not understood: {accepts!r}")


# ---- running uWSGI until it exits or has started ------------------------------------------------

class Run:
    def __init__(self, started, status, log):
        self.started, self.status, self.log = started, status, log

    def cowguard_lines(self):
        return [line for line in self.log.splitlines() if line.startswith("[cowguard]")]


def get(port, path="/", timeout=10):
    """Body of GET path, retried until the worker answers (or the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                raw = b""
                while chunk := s.recv(65536):
                    raw += chunk
            head, _, body = raw.partition(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"):
                return body
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no answer on {path}"
        time.sleep(0.1)


def run(tmp_path, args, master=True, plugin=True, plugin_twice=False, ini=None, during=None, timeout=40):
    """Starts uWSGI (1 worker, tests/apps/fault_app.py); once its worker is spawned and has answered
    a request, calls during(port, log_path) and stops it with SIGTERM. Returns a Run.

    The request first: a SIGTERM that reaches the master while its new worker is still setting
    itself up is lost by that worker (stock uWSGI too), and the master then waits out its 60 s
    worker mercy."""
    port = free_port()
    cmd = ["uwsgi"] + (["--master"] if master else []) + ["--plugin", "python3"]
    if plugin:
        cmd += ["--plugin", str(PLUGIN)] * (2 if plugin_twice else 1)
    if ini:
        cmd += ["--ini", str(ini)]
    cmd += ["--http-socket", f"127.0.0.1:{port}", "--die-on-term", "--workers", "1", "--pythonpath", str(APPS),
            "--module", "fault_app"] + [str(a) for a in args]
    log_path = tmp_path / f"uwsgi-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=str(tmp_path),
                                start_new_session=True)
    started = False
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            text = log_path.read_text(errors="replace")
            if re.search(r"spawned uWSGI worker 1 ", text):
                started = True
                break
            time.sleep(0.05)
        if started:
            get(port)
            if during:
                during(port, log_path)
            proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return Run(started, status, log_path.read_text(errors="replace"))


def stats_options(port, log_path, timeout=20):
    """The effective options as cowguard's stats document shows them."""
    deadline = time.monotonic() + timeout
    while "[cowguard] stats server on" not in log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))["cowguard"]["options"]


def assert_refused(r, option, value):
    expected = f"[cowguard] {option}: '{value}' is not valid; accepts {OPTIONS[option]}"
    refusals = [line for line in r.log.splitlines() if "is not valid" in line]
    assert not r.started and r.status != 0, r.log[-3000:]
    assert refusals == [expected], (refusals, expected)
    assert r.cowguard_lines() == [expected], r.cowguard_lines()


def assert_works(r):
    assert r.started, r.log[-3000:]
    assert r.status == 0, r.log[-3000:]
    assert "is not valid" not in r.log and "Traceback" not in r.log, r.log[-3000:]


# ---- every option, every kind of bad value --------------------------------------------------------

def extra_values(option):
    """Boundary values worth a run besides the four bad kinds, per documented type."""
    accepts = OPTIONS[option]
    if accepts.startswith("young, between, off"):
        return ["1000000000", "1000000001", "700,10,10", " 700 , 10 ", "1,2,3,4", "young,1", "OFF", " Between "]
    if accepts.startswith("T0[,T1[,T2]] (integers"):
        return ["0", "1000000000", "1000000001", " 700 , 10 ", "1,2,3,4", "between", "700,"]
    if accepts.startswith("seconds"):
        return ["3600", "3600.1", "0.1", "0.09", "1e1", ".5"]
    if accepts.startswith("megabytes"):
        return ["0", "1073741824", "1073741825", "+5"]
    if accepts.startswith("a uWSGI signal"):
        return ["0", "1", "255", "256"]
    if accepts == "true or false":
        return ["TRUE", " no ", "2"]
    if accepts == "true, false or auto":
        # Not "true": on a Python without immortal objects it refuses (test_immortal.py).
        return [" AUTO ", "Off", "2", "sometimes"]
    if accepts.startswith("module:callable"):
        return ["os:getpid", "json.decoder:JSONDecoder", "os:", ":getpid", "os:getpid:x", "1os:getpid"]
    if accepts.startswith("a directory path"):
        return ["reports", " "]
    if accepts.startswith("host:port (TCP"):
        return ["metrics.sock", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:", "host name:80", "[::1:80",
                "/" + "a" * 107]
    if accepts.startswith("a name of 1 to 128"):
        return ["x" * 128, "x" * 129, " shop "]
    if accepts.startswith("a request file path"):
        return ["requests.txt", " requests.txt ", " "]
    if accepts == "an integer from 1 to 1000":
        return ["0", "1", "1000", "1001", "+5"]
    if accepts.startswith("an integer from 0 to 1000"):
        return ["0", " 0 ", "1", "1000", "1001", "+5"]
    return [OPTIONS[option].split(",")[0].split(" ")[0].upper()]  # e.g. "BLOCK", "FATAL"


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_bad_value_refused_or_working(tmp_path, option):
    (tmp_path / "reports").mkdir()
    (tmp_path / "requests.txt").write_text("# fault_app answers any path\n/\n")
    values = list(BAD_KINDS.values()) + extra_values(option)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        runs = dict(zip(values, ex.map(lambda v: run(tmp_path, [f"--{option}", v]), values)))
    for value, r in runs.items():
        if not documented_valid(option, value):
            assert_refused(r, option, value)
        elif OPTIONS[option].startswith("a directory path") and not (tmp_path / value.strip()).is_dir():
            # A well-formed path that is no directory: uWSGI stops with its own clear line, checked
            # after the privilege drop and before any app loads.
            line = (f"[cowguard] cowguard-cow-report: '{value.strip()}' is not a directory (a symlink is refused "
                    f"too); create it first")
            assert not r.started and r.status != 0, r.log[-3000:]
            assert [x for x in r.log.splitlines() if "cow-report" in x] == [line], r.cowguard_lines()
            assert r.cowguard_lines()[-1] == line, r.cowguard_lines()
            assert "WSGI app 0" not in r.log, r.log[-3000:]
        elif OPTIONS[option].startswith("a request file path") and not (tmp_path / value.strip()).is_file():
            # A well-formed path to no file: one line of its own, before any app loads.
            line = (f"[cowguard] cowguard-warmup-requests: {value.strip()}: cannot read: No such file or "
                    f"directory")
            assert not r.started and r.status != 0, r.log[-3000:]
            assert r.cowguard_lines() == [line], r.cowguard_lines()
            assert "WSGI app 0" not in r.log, r.log[-3000:]
        elif option == "cowguard-warmup-worker-rounds" and int(value) > 0:
            # Valid, but it replays the request files and none is given: one line of its own.
            line = ("[cowguard] cowguard-warmup-worker-rounds: replays the cowguard-warmup-requests files in each "
                    "worker, and none is given: add cowguard-warmup-requests or set 0")
            assert not r.started and r.status != 0, r.log[-3000:]
            assert r.cowguard_lines() == [line], r.cowguard_lines()
        else:
            assert_works(r)
    assert all(v in runs for v in BAD_KINDS.values())


# ---- duplicated options -----------------------------------------------------------------------------

# option -> (first, last, effective value of `last` as the stats document writes it). The last value
# differs from the first, and keeps cowguard active and its stats server on.
DUPLICATES = {
    "cowguard": ("false", "true", "true"),
    "cowguard-freeze": ("false", "true", "true"),
    "cowguard-collect-before-freeze": ("false", "true", "true"),
    "cowguard-immortalize": ("true", "false", "false"),
    "cowguard-fill-holes": ("false", "true", "true"),
    "cowguard-gc": ("off", "700, 10,10", "700,10,10"),
    "cowguard-gc-between": ("100", "2000, 5", "2000,5,10"),
    "cowguard-guard": ("warn", "allow", "allow"),
    "cowguard-fast-exit": ("false", "true", "true"),
    "cowguard-stats": ("false", "true", "true"),
    "cowguard-stats-interval": ("2", "0.5", "0.5"),
    "cowguard-reload-on-uss": ("100", "0", "0"),
    "cowguard-reload-on-pss": ("0", "4096", "4096"),
    "cowguard-evil-reload-on-uss": ("0", "8192", "8192"),
    "cowguard-evil-reload-on-pss": ("8192", "0", "0"),
    "cowguard-warmup-errors": ("fatal", "log", "log"),
    "cowguard-warmup-rounds": ("3", "2", "2"),
    "cowguard-warmup-worker-rounds": ("3", "0", "0"),
    "cowguard-warmup-dry-run": ("false", "true", "true"),
    "cowguard-trim": ("false", "true", "true"),
    "cowguard-cow-report": ("reports", "reports2", "reports2"),
    "cowguard-cow-report-signal": ("98", "97", "97"),
    "cowguard-prometheus": ("first.sock", "last.sock", "last.sock"),
    "cowguard-instance-name": ("first", "last", "last"),
}


def test_duplicates_cover_every_single_valued_option():
    assert set(DUPLICATES) | {"cowguard-warmup", "cowguard-warmup-requests", "cowguard-warmup-after"} == set(OPTIONS)


@pytest.mark.parametrize("option", sorted(DUPLICATES))
def test_duplicated_option_last_value_wins(tmp_path, option):
    first, last, effective = DUPLICATES[option]
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports2").mkdir()
    seen = {}
    sp = free_port()
    r = run(tmp_path, [f"--{option}", first, f"--{option}", last, "--stats", f"127.0.0.1:{sp}"],
            during=lambda port, log: seen.update(stats_options(sp, log)))
    assert_works(r)
    note = f"[cowguard] {option} given 2 times; using the last value '{last}' over '{first}'"
    assert r.cowguard_lines().count(note) == 1, r.cowguard_lines()
    assert seen[option] == effective, seen


def test_three_values_and_the_ini_file(tmp_path):
    """Values from an ini file and the command line are one list, in order: the last one wins and the
    note counts them all."""
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\ncowguard-gc = off\ncowguard-gc = 500\n")
    sp = free_port()
    seen = {}
    r = run(tmp_path, ["--cowguard-gc", "600,5", "--stats", f"127.0.0.1:{sp}"], ini=ini,
            during=lambda port, log: seen.update(stats_options(sp, log)))
    assert_works(r)
    notes = [line for line in r.cowguard_lines() if "given" in line]
    assert notes == ["[cowguard] cowguard-gc given 3 times; using the last value '600,5' over 'off', '500'"], notes
    assert seen["cowguard-gc"] == "600,5"
    assert "workers: gc thresholds 600,5" in r.log


def test_bad_first_value_is_not_hidden_by_a_later_one(tmp_path):
    r = run(tmp_path, ["--cowguard-gc", "yung", "--cowguard-gc", "young"])
    assert_refused(r, "cowguard-gc", "yung")


def test_warmup_is_a_list_not_a_duplicate(tmp_path):
    r = run(tmp_path, ["--cowguard-warmup", "os:getpid", "--cowguard-warmup", "os:getcwd"])
    assert_works(r)
    assert not [line for line in r.cowguard_lines() if "given" in line], r.cowguard_lines()
    assert "[cowguard] warmup: 2 callables ran" in r.log, r.cowguard_lines()


def test_refusal_stays_on_one_line(tmp_path):
    r = run(tmp_path, ["--cowguard-gc", "young\nevil"])
    assert not r.started and r.status != 0
    whole = [line for line in r.cowguard_lines() if line.startswith("[cowguard] cowguard-gc: '") and
             line.endswith("is not valid; accepts " + OPTIONS["cowguard-gc"])]
    assert len(whole) == 1, r.cowguard_lines()


def test_duplicate_note_stays_on_one_line(tmp_path):
    r = run(tmp_path, ["--cowguard-gc", "off", "--cowguard-gc", "young\n"])
    assert_works(r)
    whole = [line for line in r.cowguard_lines() if line.startswith("[cowguard] cowguard-gc given 2 times") and
             line.endswith("over 'off'")]
    assert len(whole) == 1, r.cowguard_lines()


# ---- loading and mode oddities ------------------------------------------------------------------------

def test_plugin_loaded_twice_works_once(tmp_path):
    """uWSGI ignores a second load of a plugin with the same name, silently: cowguard sets up once
    (one freeze, one hook in the after-request chain, options stored once)."""
    sp = free_port()
    seen = {}
    r = run(tmp_path, ["--cowguard-gc", "off", "--stats", f"127.0.0.1:{sp}"], plugin_twice=True,
            during=lambda port, log: seen.update(stats_options(sp, log)))
    assert_works(r)
    assert r.log.count("[cowguard] master: froze") == 1, r.cowguard_lines()
    assert r.log.count('added "cowguard_after_request') == 1
    assert "given" not in r.log and seen["cowguard-gc"] == "off"


def test_without_master_the_single_worker_gets_the_policy(tmp_path):
    """No master: uWSGI's only process loads the app and serves; cowguard freezes there and applies
    its policy in it (the worker is the process itself), and says that the memory limits need the
    master (nobody samples)."""
    seen = {}

    def during(port, log):
        seen.update(json.loads(get(port, "/gc")))

    r = run(tmp_path, ["--cowguard-reload-on-uss", "100"], master=False, during=during)
    stock = run(tmp_path, [], master=False, plugin=False)
    # without a master the single process ends with uWSGI's end code (30) on SIGTERM, stock alike
    assert r.started and r.status == stock.status, (r.status, stock.status, r.log[-3000:])
    assert "is not valid" not in r.log and "Traceback" not in r.log
    assert "(and the only)" in r.log
    assert "[cowguard] cowguard-reload-on-* limits need the master (master = true): the master samples the workers" \
        in r.cowguard_lines()
    assert r.log.count("[cowguard] no master, before the workers start: froze") == 1
    assert "[cowguard] master:" not in r.log
    gc = seen["gc"]
    assert gc["enabled"] and gc["frozen"] > 0 and gc["threshold"] != STOCK_THRESHOLD, seen


def test_cowguard_option_without_the_plugin_on_the_command_line(tmp_path):
    r = run(tmp_path, ["--cowguard-gc", "off"], plugin=False)
    assert not r.started and r.status == 1
    assert "unrecognized option '--cowguard-gc'" in r.log, r.log


def test_cowguard_option_without_the_plugin_in_an_ini_file(tmp_path):
    """uWSGI ignores unknown ini keys unless --strict: without the plugin, a cowguard option in an ini
    is silently dropped (what README's troubleshooting should warn about); --strict refuses it."""
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\ncowguard-gc = off\n")
    r = run(tmp_path, [], plugin=False, ini=ini)
    assert r.started and r.status == 0 and not r.cowguard_lines(), r.log[-2000:]
    strict = run(tmp_path, ["--strict"], plugin=False, ini=ini)
    assert not strict.started and strict.status != 0
    assert "[strict-mode] unknown config directive: cowguard-gc" in strict.log, strict.log[-2000:]
