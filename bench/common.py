"""What every benchmark script (and tests/integration/conftest.py) shares: free ports, uWSGI
instances started and always killed, wrk runs and their parsing, /proc readers (smaps_rollup, stat,
meminfo), the host's foreign-CPU account, machine and version facts, the plugin snapshot.
Stdlib only.
"""
import atexit
import functools
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
UWSGI = shutil.which("uwsgi") or "/usr/bin/uwsgi"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
WRK_THREADS = 2
WRK_CONNECTIONS = 8
READY_TIMEOUT_S = 60


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ---------------------------------------------------------------- process bookkeeping

_LIVE = {}  # pid -> Popen of every uWSGI master started here (each leads its own process group)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    _LIVE.pop(proc.pid, None)


def spawn(cmd, **popen_kw):
    """A uWSGI master started in its own process group (so kill_group() reaches its workers too),
    killed with it on any exit of a script that called install_cleanup()."""
    proc = subprocess.Popen(cmd, start_new_session=True, **popen_kw)
    _LIVE[proc.pid] = proc
    return proc


def kill_group(proc):
    """SIGKILL to the process group spawn() started, then the master reaped."""
    _kill_group(proc)


def kill_all():
    for proc in list(_LIVE.values()):
        _kill_group(proc)


def _on_signal(signum, _frame):
    kill_all()
    raise SystemExit(128 + signum)


def install_cleanup():
    """Kill every uWSGI started here on any exit of the script (normal, exception, SIGTERM, SIGHUP).
    Scripts call it once; importing this module alone (the tests' conftest) changes no handler."""
    atexit.register(kill_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def wait_group_gone(pgid, timeout=10.0):
    """Wait until no process of group pgid is left (workers die after the master on SIGKILL)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


_PORTS_GIVEN = set()  # every port free_port() returned in this process


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on right now, never one this process was given before.

    The kernel hands a just-closed port out again: two calls before uWSGI binds the first one can
    return the same port (CI saw uWSGI's stats server collide with its own http socket)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def read_stats(where, timeout=10):
    """The JSON document of a stats server (a port on 127.0.0.1, or "host:port"), read to EOF:
    the server writes the whole document and closes the connection."""
    return json.loads(read_stats_bytes(where, timeout))


def read_stats_bytes(where, timeout=10):
    """read_stats()'s raw bytes."""
    host, port = ("127.0.0.1", where) if isinstance(where, int) else where.rsplit(":", 1)
    chunks = []
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- /proc readers

def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return sorted(int(x) for x in f.read().split())
    except OSError:
        pass
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if stat_fields(int(d))[1] == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return sorted(out)


def stat_fields(pid):
    """Fields of /proc/PID/stat after the comm: [state, ppid, ...]; index i is field i+3."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    rest = data[data.rindex(")") + 2:].split()
    return [rest[0]] + [int(x) for x in rest[1:]]


def minflt(pid):
    return stat_fields(pid)[7]  # field 10 (minflt)


def smaps_rollup(pid):
    """Every kB figure of /proc/PID/smaps_rollup, by name (Rss, Pss, Private_Dirty, ...)."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def rollup_kb(pid, *keys):
    """The sum of the named smaps_rollup figures, in kB."""
    vals = smaps_rollup(pid)
    return sum(vals.get(k, 0) for k in keys)


def smaps(pid):
    """Rss, Pss, shared and private (clean + dirty) of a process, in MB."""
    vals = smaps_rollup(pid)
    mb = 1024.0
    return {
        "rss": vals.get("Rss", 0) / mb,
        "pss": vals.get("Pss", 0) / mb,
        "shared": (vals.get("Shared_Clean", 0) + vals.get("Shared_Dirty", 0)) / mb,
        "private": (vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)) / mb,
    }


def sample_workers(pids):
    """smaps() of each pid still alive."""
    out = {}
    for p in pids:
        try:
            out[p] = smaps(p)
        except OSError:
            pass
    return out


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def cpu_jiffies(pid):
    f = stat_fields(pid)
    return f[11] + f[12]  # utime + stime (fields 14, 15)


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    return cpu_jiffies(pid) / CLK_TCK


def host_busy_jiffies():
    """(process time, interrupt time) of the whole host from /proc/stat's cpu line."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    # user nice system idle iowait irq softirq steal. irq/softirq (mostly loopback TCP for the load
    # itself) is not in any process's utime/stime, so it is kept apart rather than called foreign;
    # steal (the hypervisor running something else) is capacity lost, so it counts as foreign.
    return v[0] + v[1] + v[2] + v[7], v[5] + v[6]


class CpuAccount:
    """How much CPU went to something other than this benchmark (uWSGI group, wrk, this runner)
    while a load ran: other engineers' builds and tests on the same 2 cores skew req/s."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.t0 = time.monotonic()
        self.host0, self.irq0 = host_busy_jiffies()
        self.ours0 = self._ours()
        self.self0 = self._self()

    def _ours(self):
        total = 0
        for p in self.pids:
            try:
                total += cpu_jiffies(p)
            except (OSError, IndexError):
                pass
        return total

    @staticmethod
    def _self():
        import resource

        a = resource.getrusage(resource.RUSAGE_SELF)
        b = resource.getrusage(resource.RUSAGE_CHILDREN)  # includes wrk once reaped
        return (a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime) * CLK_TCK

    def finish(self):
        wall = time.monotonic() - self.t0
        host, irq = host_busy_jiffies()
        host -= self.host0
        irq -= self.irq0
        group = self._ours() - self.ours0
        ours = group + (self._self() - self.self0)
        cap = wall * CLK_TCK * (os.cpu_count() or 1)
        return {
            "host_busy_pct": round(100.0 * (host + irq) / cap, 1) if cap else None,
            "irq_pct": round(100.0 * irq / cap, 1) if cap else None,
            "foreign_cpu_pct": round(max(0.0, 100.0 * (host - ours) / cap), 1) if cap else None,
            "group_cpu_s": group / CLK_TCK,
        }


def cpu_ms_per_request(account, wrk):
    """uWSGI's CPU (a CpuAccount.finish() result) per request wrk got answered, in ms."""
    return 1000.0 * account["group_cpu_s"] / wrk["requests"] if wrk["requests"] else None


def group_pss_mb(pids):
    """Summed PSS of the processes still alive among pids (zombies and gone ones count 0)."""
    total = 0.0
    for p in pids:
        try:
            total += smaps(p)["pss"]
        except OSError:
            pass
    return total


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# ---------------------------------------------------------------- uWSGI

class Uwsgi:
    """One uWSGI instance in its own process group, killed with its group by kill() or on any exit of
    the script. `cmd` must contain `--http-socket 127.0.0.1:<port>` (the same `port`); `env` is
    added to this process's environment (None values remove a variable). start() waits until /gc
    answers and `workers` workers exist."""

    def __init__(self, cmd, port, workers, logpath, env=None, name=""):
        self.cmd = list(cmd)
        self.port = port
        self.workers = workers
        self.logpath = logpath
        self.name = name
        self.env_extra = dict(env or {})
        self.env = dict(os.environ)
        for k, v in self.env_extra.items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v
        self.proc = None
        self.logf = None

    def start(self):
        self.logf = open(self.logpath, "ab")
        shown = " ".join("%s=%s" % kv for kv in self.env_extra.items() if kv[1] is not None)
        self.logf.write(("$ %s%s\n" % (shown + " " if shown else "", " ".join(self.cmd))).encode())
        self.logf.flush()
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO))
        _LIVE[self.proc.pid] = self.proc
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("uWSGI exited with status %s during startup (see %s)"
                                   % (self.proc.returncode, self.logpath))
            try:
                body = self.get("/gc", timeout=2)
                if len(self.worker_pids()) >= self.workers:
                    return body
            except OSError as e:
                last_err = e
            time.sleep(0.1)
        raise RuntimeError("uWSGI not ready after %ss (%s; see %s)" % (READY_TIMEOUT_S, last_err, self.logpath))

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def get(self, path, timeout=5):
        with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
            if r.status != 200:
                raise OSError("HTTP %s" % r.status)
            return r.read()

    def worker_pids(self):
        return children(self.pid)

    def forget(self):
        """The master exited by itself (a stop phase): no group to kill any more."""
        _LIVE.pop(self.proc.pid, None)

    def kill(self):
        if self.proc is not None:
            _kill_group(self.proc)
            wait_group_gone(self.proc.pid)
        if self.logf:
            self.logf.close()
            self.logf = None


# ---------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(out):
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s(?:\.0+)?%%\s+(\S+)" % pct, out, re.M)
        res["p%s_ms" % pct] = _ms(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    return res


def wrk_cmd(url, seconds, script=None, connections=WRK_CONNECTIONS):
    # --timeout: a cold worker's first requests (a Django project loading its views) can take seconds on a
    # busy host; wrk's default 2 s would count them as errors instead of requests
    cmd = [WRK, "-t%d" % WRK_THREADS, "-c%d" % connections, "-d%ds" % seconds, "--timeout", "10s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    return cmd + [url]


def run_wrk(url, seconds, script=None, connections=WRK_CONNECTIONS, on_tick=None):
    """Run wrk for `seconds`; call on_tick(t) about every second meanwhile. Returns parsed output."""
    proc = subprocess.Popen(wrk_cmd(url, seconds, script, connections), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    t0 = time.monotonic()
    next_tick = t0 + 1.0
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now - t0 > seconds + 20:
                raise RuntimeError("wrk did not finish within %ss" % (seconds + 20))
            if on_tick and now >= next_tick:
                on_tick(now - t0)
                next_tick += 1.0
            time.sleep(min(0.05, max(0.0, next_tick - time.monotonic())))
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res = parse_wrk(out)
    if res["rps"] is None:
        raise RuntimeError("could not parse wrk output: %r" % out[-500:])
    return res

# ---------------------------------------------------------------- environment

def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"cpu_model": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "hostname": platform.node()}


@functools.lru_cache(maxsize=None)
def embedded_python():
    """The Python uWSGI's python3 plugin embeds, found the way the build finds it."""
    try:
        out = subprocess.run([str(REPO / "tools" / "uwsgi-python-config"), "--python"], capture_output=True,
                             text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return out or "/usr/bin/python3"


def versions():
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None

    py_bin = embedded_python()
    py = run([py_bin, "-c", "import sys; print(sys.version.split()[0])"])
    dj = run([py_bin, "-c", "import django; print(django.get_version())"])
    graphite = run(["dpkg-query", "-W", "-f=${Version}", "graphite-web"])
    debian = None
    try:
        with open("/etc/os-release") as f:
            debian = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line).get(
                "PRETTY_NAME", "").strip('"') or None
    except OSError:
        pass
    wrk_v = run([WRK, "-v"]) or ""
    return {
        "debian": debian,
        "graphite_web": graphite or None,
        "uwsgi": run([UWSGI, "--version"]),
        "python": py,
        "python_note": f"the python3 plugin embeds the libpython of {py_bin}",
        "django": dj,
        "kernel": platform.release(),
        "wrk": wrk_v.splitlines()[0] if wrk_v else None,
        "repo_commit": run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }


def plugin_status():
    p = os.environ.get("COWGUARD_PLUGIN", "").strip()
    if not p:
        hint = REPO / "build" / "cowguard_plugin.so"
        return None, ("COWGUARD_PLUGIN is not set (run `make bench-quick` / `make bench`, or set "
                      "COWGUARD_PLUGIN=%s%s)" % (hint, "" if hint.exists() else " after `make build`"))
    if not os.path.isabs(p):
        p = os.path.abspath(p)
    if not os.path.isfile(p):
        return None, "COWGUARD_PLUGIN=%s does not exist" % p
    return p, None


def default_plugin():
    """COWGUARD_PLUGIN, or the plugin `make build` writes (the one-question scripts' default)."""
    return os.environ.get("COWGUARD_PLUGIN", str(REPO / "build" / "cowguard_plugin.so"))


def snapshot_plugin(path):
    """Copy the plugin to a private temp dir and return (copy, info): other builds may rewrite
    build/cowguard_plugin.so while the benchmark runs, and every configuration must load the same
    binary. Waits (up to 60 s) for a complete ELF file whose size and mtime are stable for 1 s."""
    import hashlib
    import tempfile

    deadline = time.monotonic() + 60
    while True:
        try:
            st1 = os.stat(path)
            with open(path, "rb") as f:
                magic = f.read(4)
            time.sleep(1.0)
            st2 = os.stat(path)
            if magic == b"\x7fELF" and (st1.st_size, st1.st_mtime_ns) == (st2.st_size, st2.st_mtime_ns) \
                    and st1.st_size > 0:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("%s is not a complete, stable ELF file" % path)
    tmpdir = tempfile.mkdtemp(prefix="cowguard-bench-plugin-")
    atexit.register(shutil.rmtree, tmpdir, True)
    copy = os.path.join(tmpdir, "cowguard_plugin.so")
    shutil.copy2(path, copy)
    with open(copy, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return copy, {"path": path, "sha256": digest, "size": st2.st_size,
                  "mtime": datetime.fromtimestamp(st2.st_mtime).astimezone().isoformat(timespec="seconds")}

