"""Issue #17: cowguard's figures in a fleet's tools, checked against the real receivers.

- Prometheus: uWSGI serves GET /metrics on cowguard-prometheus; Debian's `prometheus` server, started
  here on loopback with a generated config (scrape interval 1 s, storage under tmp_path), scrapes it;
  its HTTP query API must return each worker's uss, pss, shared and faults with the values the stats
  document shows; `promtool check metrics` accepts the exposition; an Emperor's three vassals are
  told apart by their instance_name label.
- Graphite: Debian's carbon-cache (graphite-carbon), started here in the foreground on loopback ports
  with its own storage directory, receives uWSGI's carbon pusher (`--plugin carbon --carbon ...
  --carbon-use-metrics --enable-metrics`); cowguard's metrics must land in whisper files (read with
  python3-whisper) holding the stats document's values.

Nothing is skipped: a missing package fails the test with a message naming it (`make deps`
installs them). Every server started here is killed in a finalizer.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import APPS, PLUGIN, free_port, read_stats

try:
    import whisper
except ImportError:  # reported by the carbon test itself
    whisper = None

STATS_INTERVAL = "3"  # cowguard-stats-interval: a round's figures stay put for 3 s (see same_round)
MEMORY_SERIES = {  # Prometheus family -> where the stats document has the same figure (per worker)
    "cowguard_process_uss_bytes": lambda w: w["uss"],
    "cowguard_process_pss_bytes": lambda w: w["pss"],
    "cowguard_process_shared_bytes": lambda w: w["cowguard"]["shared"],
    "cowguard_process_minor_faults_total": lambda w: w["cowguard"]["minflt"],
    "cowguard_process_major_faults_total": lambda w: w["cowguard"]["majflt"],
}


def require(binary, package):
    path = shutil.which(binary)
    if not path:
        pytest.fail(f"{binary} not found: install Debian's package {package} (`make deps` does)")
    return path


def kill_group(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
    try:  # children left by a dead leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_port(port, proc, what, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{Path(log).read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} not listening on {port} after {timeout}s:\n{Path(log).read_text(errors='replace')[-3000:]}")


def http_raw(port, request, timeout=10):
    """The raw answer to `request` (bytes) on a fresh connection, read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def scrape(port):
    head, _, body = http_raw(port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    return head.decode(), body.decode()


def sample_values(body, family):
    """{worker id: value} of `family`'s kind="worker" samples in an exposition."""
    out = {}
    for line in body.splitlines():
        if line.startswith(family + "{") and 'kind="worker"' in line:
            labels, value = line[len(family) + 1:].rsplit("} ", 1)
            wid = labels.split('worker="', 1)[1].split('"', 1)[0]
            out[wid] = float(value)
    return out


# ---- the servers ---------------------------------------------------------------------------------

class Prometheus:
    """Debian's prometheus server on 127.0.0.1, scraping `targets` every second."""

    def __init__(self, tmp_path, targets):
        binary = require("prometheus", "prometheus")
        self.port = free_port()
        self.dir = tmp_path / f"prometheus-{self.port}"
        self.dir.mkdir()
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: cowguard\n    static_configs:\n      - targets: ["
            + ", ".join(f"'{t}'" for t in targets) + "]\n")
        self.log_path = self.dir / "prometheus.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.dir))
        wait_port(self.port, self.proc, "prometheus", self.log_path)
        # Listening is not ready: the query API answers 503 until the TSDB is open.
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:  # urllib's HTTPError (503) included
                pass
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log_path.read_text(errors="replace")
            time.sleep(0.2)

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql):
        return self.api("query", query=promql)["result"]

    def targets_text(self):
        return json.dumps(self.api("targets")["activeTargets"], indent=1)[:3000]

    def kill(self):
        kill_group(self.proc)
        self.log.close()


class CarbonCache:
    """Debian's carbon-cache in the foreground on loopback ports, its storage under tmp_path, keeping
    every metric at 1 s resolution."""

    def __init__(self, tmp_path):
        binary = require("carbon-cache", "graphite-carbon")
        self.dir = tmp_path / "carbon"
        for sub in ("conf", "whisper", "log", "lists"):
            (self.dir / sub).mkdir(parents=True)
        self.line_port, pickle_port, query_port = free_port(), free_port(), free_port()
        # Keys as Debian's /etc/carbon/carbon.conf spells them; creates unthrottled (the default 50 a
        # minute would hold back uWSGI's ~100 metrics), every point flushed at once.
        (self.dir / "conf" / "carbon.conf").write_text(f"""[cache]
STORAGE_DIR = {self.dir}/
LOCAL_DATA_DIR = {self.dir}/whisper/
WHITELISTS_DIR = {self.dir}/lists/
CONF_DIR = {self.dir}/conf/
LOG_DIR = {self.dir}/log/
PID_DIR = {self.dir}/
DATABASE = whisper
ENABLE_LOGROTATION = False
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 10000
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {self.line_port}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle_port}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query_port}
USE_FLOW_CONTROL = True
LOG_UPDATES = False
LOG_CREATES = False
CACHE_WRITE_STRATEGY = sorted
WHISPER_AUTOFLUSH = True
WHISPER_FALLOCATE_CREATE = False
""")
        (self.dir / "conf" / "storage-schemas.conf").write_text("[everything]\npattern = .*\nretentions = 1s:30m\n")
        self.log_path = self.dir / "carbon-cache.out"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config={self.dir / 'conf' / 'carbon.conf'}", f"--logdir={self.dir / 'log'}",
             f"--pidfile={self.dir / 'carbon-cache.pid'}", "--nodaemon", "start"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.dir))
        wait_port(self.line_port, self.proc, "carbon-cache", self.log_path)

    def whisper_file(self, metric):
        return self.dir / "whisper" / (metric.replace(".", "/") + ".wsp")

    def kill(self):
        kill_group(self.proc)
        self.log.close()


@pytest.fixture
def servers(request):
    """Factory: servers(cls, *args) -> a started server, killed at teardown whatever happened."""
    def start(cls, *args):
        s = cls(*args)
        request.addfinalizer(s.kill)
        return s
    return start


def start_uwsgi(uwsgi, workers=2, extra=()):
    stats, prom = free_port(), free_port()
    u = uwsgi(["--workers", workers, "--wsgi-file", APPS / "stats_app.py", "--stats", f"127.0.0.1:{stats}",
               "--cowguard-stats-interval", STATS_INTERVAL, "--cowguard-prometheus", f"127.0.0.1:{prom}"]
              + list(extra)).wait_ready()
    u.stats, u.prom = stats, prom
    return u


def sampled_doc(u, workers, timeout=30):
    """The stats document once every worker is sampled and has published its slot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            d = read_stats(u.stats)
        except (OSError, ValueError):  # the stats socket is not bound yet
            time.sleep(0.2)
            continue
        if len(d["workers"]) == workers and all("uss" in w and "gc" in w.get("cowguard", {}) for w in d["workers"]):
            return d
        time.sleep(0.2)
    raise AssertionError(f"workers not sampled in {timeout}s:\n{u.log()}")


# ---- the exposition itself -----------------------------------------------------------------------

def test_exposition_passes_promtool_and_errors_are_http(uwsgi, tmp_path):
    promtool = require("promtool", "prometheus")
    u = start_uwsgi(uwsgi, extra=["--cowguard-instance-name", 'odd "name" \\ here', "--mules", "1"])
    d = sampled_doc(u, 2)
    head, body = scrape(u.prom)
    assert "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n" in head
    assert f"\r\nContent-Length: {len(body.encode())}\r\n" in head
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), (check.stdout, check.stderr)
    # The label as given, escaped; the workers and the mule as kind/worker.
    assert 'instance_name="odd \\"name\\" \\\\ here"' in body
    assert set(sample_values(body, "cowguard_process_uss_bytes")) == {"1", "2"}
    assert 'cowguard_process_uss_bytes{instance_name="odd \\"name\\" \\\\ here",kind="mule",worker="1"}' in body
    assert set(sample_values(body, "cowguard_worker_requests_total")) == {"1", "2"}
    assert f'version="{d["cowguard"]["version"]}"' in body
    # Anything but GET/HEAD /metrics is a clear HTTP error, and the server goes on serving.
    assert http_raw(u.prom, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 Not Found\r\n")
    answer = http_raw(u.prom, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"\r\nAllow: GET, HEAD\r\n" in answer
    assert http_raw(u.prom, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert http_raw(u.prom, b"HEAD /metrics HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\n")
    # An idle client holds nothing up: a scrape beside it is served at once.
    with socket.create_connection(("127.0.0.1", u.prom)) as idle:
        idle.sendall(b"GET /metrics HTTP/1.1\r\n")
        t0 = time.monotonic()
        scrape(u.prom)
        # Served while the idle client still holds its place (it is dropped at 4 s, socket-timeout).
        assert time.monotonic() - t0 < 3.0
    assert "cowguard_worker_requests_total" in scrape(u.prom)[1]


def test_unix_socket(uwsgi, tmp_path):
    path = Path(f"/tmp/cowguard-fleet-{os.getpid()}-{time.monotonic_ns()}.sock")
    try:
        u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "stats_app.py", "--cowguard-prometheus", str(path)]).wait_ready()
        u.wait_log("prometheus: GET /metrics on")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b'\ncowguard_info{instance_name="uwsgi"' in data
    finally:
        path.unlink(missing_ok=True)


def test_graceful_reload_binds_again(uwsgi):
    u = start_uwsgi(uwsgi, workers=1)
    sampled_doc(u, 1)
    assert "cowguard_process_uss_bytes" in scrape(u.prom)[1]
    u.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while u.log().count("[cowguard] prometheus: GET /metrics on") < 2:
        assert time.monotonic() < deadline and u.proc.poll() is None, u.log()
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while True:  # the new master's first sampling round
        body = scrape(u.prom)[1]
        if 'cowguard_process_uss_bytes{instance_name="uwsgi",kind="worker",worker="1"}' in body:
            break
        assert time.monotonic() < deadline, body[-2000:]
        time.sleep(0.2)
    assert "cannot listen" not in u.log()


def test_taken_port_stops_uwsgi_with_one_line(uwsgi):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "stats_app.py", "--cowguard-prometheus", f"127.0.0.1:{port}"])
        assert u.wait_exit(30) == 1
    lines = [line for line in u.log().splitlines() if line.startswith("[cowguard]")]
    assert lines == [f"[cowguard] cowguard-prometheus: cannot listen on 127.0.0.1:{port}: Address already in use"], u.log()


def test_without_master_stops_with_one_line(tmp_path):
    port = free_port()
    r = subprocess.run(["uwsgi", "--plugin", "python3", "--plugin", str(PLUGIN), "--http-socket",
                        f"127.0.0.1:{free_port()}", "--wsgi-file", str(APPS / "stats_app.py"),
                        "--cowguard-prometheus", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 1
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("[cowguard]")]
    assert lines == ["[cowguard] cowguard-prometheus: needs the master (master = true): its thread serves the "
                     "figures the master samples"], r.stdout + r.stderr


# ---- a real Prometheus ---------------------------------------------------------------------------

def same_round(prom, u, workers, timeout=90):
    """Prometheus' latest scrape and a stats document taken from the same sampling round: the series
    of MEMORY_SERIES for every worker, and the document. A round's figures are one snapshot, served
    whole by both endpoints, so within one round they must be equal to the byte: that is the
    tolerance (none), and a sampler interval of 3 s with a 1 s scrape makes a shared round common.
    Rounds are told apart by cowguard_sampler_rounds_total and the document's sampler.rounds."""
    names = "|".join(MEMORY_SERIES)
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        series = prom.query(f'{{__name__=~"{names}|cowguard_sampler_rounds_total",job="cowguard"}}')
        d = read_stats(u.stats)
        rounds = [float(s["value"][1]) for s in series if s["metric"]["__name__"] == "cowguard_sampler_rounds_total"]
        by_name = {}
        for s in series:
            if s["metric"].get("kind") == "worker":
                by_name.setdefault(s["metric"]["__name__"], {})[s["metric"]["worker"]] = s
        seen = (rounds, d["cowguard"]["sampler"]["rounds"], sorted((k, sorted(v)) for k, v in by_name.items()))
        complete = (len(by_name) == len(MEMORY_SERIES) and all(len(v) == workers for v in by_name.values())
                    and all("uss" in w for w in d["workers"]))
        if complete and rounds == [float(d["cowguard"]["sampler"]["rounds"])]:
            return by_name, d
        time.sleep(0.3)
    raise AssertionError(f"no scrape and document of one round in {timeout}s: {seen}\n{prom.targets_text()}")


def test_prometheus_scrapes_the_stats_documents_values(uwsgi, servers, tmp_path):
    u = start_uwsgi(uwsgi, extra=["--cowguard-instance-name", "shop"])
    sampled_doc(u, 2)
    u.get("/containers")  # some figures move: faults, private memory
    prom = servers(Prometheus, tmp_path, [f"127.0.0.1:{u.prom}"])
    by_name, d = same_round(prom, u, 2)
    docs = {str(w["id"]): w for w in d["workers"]}
    for name, get in MEMORY_SERIES.items():
        for wid, s in by_name[name].items():
            labels = s["metric"]
            assert labels["instance_name"] == "shop" and labels["instance"] == f"127.0.0.1:{u.prom}", labels
            assert float(s["value"][1]) == get(docs[wid]), (name, wid, s, docs[wid])
    assert float(by_name["cowguard_process_uss_bytes"]["1"]["value"][1]) > 0
    # The scrape itself is healthy in Prometheus' eyes.
    up = prom.query('up{job="cowguard"}')
    assert [float(s["value"][1]) for s in up] == [1.0], prom.targets_text()
    assert all(t["lastError"] == "" for t in prom.api("targets")["activeTargets"]), prom.targets_text()


def test_emperor_vassals_labelled_by_name(servers, tmp_path):
    vassals = tmp_path / "vassals"
    vassals.mkdir()
    ports = {}
    for name in ("alpha", "beta", "gamma"):
        ports[name] = free_port()
        (vassals / f"{name}.ini").write_text(
            f"[uwsgi]\nmaster = true\nplugins = python3,{PLUGIN}\nhttp-socket = 127.0.0.1:{free_port()}\n"
            f"pythonpath = {APPS}\nwsgi-file = {APPS / 'stats_app.py'}\nworkers = 2\n"
            f"cowguard-prometheus = 127.0.0.1:{ports[name]}\n")
    log_path = tmp_path / "emperor.log"
    with open(log_path, "wb") as log:
        emperor = subprocess.Popen(["uwsgi", "--emperor", str(vassals), "--die-on-term"], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=str(tmp_path))
    try:
        for name, port in ports.items():
            wait_port(port, emperor, f"vassal {name}", log_path)
        prom = servers(Prometheus, tmp_path, [f"127.0.0.1:{p}" for p in ports.values()])
        deadline = time.monotonic() + 90
        names = {}
        while time.monotonic() < deadline:
            series = prom.query('cowguard_process_pss_bytes{kind="worker"}')
            names = {}
            for s in series:
                names.setdefault(s["metric"]["instance"], set()).add((s["metric"]["instance_name"], s["metric"]["worker"]))
            if len(names) == 3 and all(len(v) == 2 for v in names.values()):
                break
            time.sleep(0.5)
        want = {f"127.0.0.1:{port}": {(name, "1"), (name, "2")} for name, port in ports.items()}
        assert names == want, (names, prom.targets_text(), log_path.read_text(errors="replace")[-3000:])
        # One PromQL line tells the vassals apart: private memory summed per vassal.
        per_vassal = prom.query('sum by (instance_name) (cowguard_process_uss_bytes{kind="worker"})')
        assert {s["metric"]["instance_name"] for s in per_vassal} == set(ports)
        assert all(float(s["value"][1]) > 0 for s in per_vassal)
    finally:
        kill_group(emperor)


# ---- a real carbon-cache -------------------------------------------------------------------------

def test_carbon_receives_cowguards_metrics(uwsgi, servers, tmp_path):
    if whisper is None:
        pytest.fail("the whisper module is missing: install Debian's package python3-whisper (`make deps` does)")
    if not Path("/usr/lib/uwsgi/plugins/carbon_plugin.so").exists():
        pytest.fail("uWSGI's carbon plugin is missing (/usr/lib/uwsgi/plugins/carbon_plugin.so, Debian's uwsgi-core)")
    carbon = servers(CarbonCache, tmp_path)
    u = start_uwsgi(uwsgi, extra=["--plugin", "carbon", "--enable-metrics", "--carbon", f"127.0.0.1:{carbon.line_port}",
                                  "--carbon-freq", "1", "--carbon-use-metrics", "--carbon-id", "fleet",
                                  "--carbon-hostname-dots", "_"])
    sampled_doc(u, 2)
    host = socket.gethostname().replace(".", "_")
    # uWSGI's metric name -> the stats document's figure; carbon's path is uwsgi.<host>.<carbon-id>.<name>.
    wanted = {}
    for wid in (1, 2):
        wanted[f"worker.{wid}.uss_size"] = (wid, lambda w: w["uss"])
        wanted[f"worker.{wid}.pss_size"] = (wid, lambda w: w["pss"])
        wanted[f"worker.{wid}.shared_size"] = (wid, lambda w: w["cowguard"]["shared"])
        wanted[f"worker.{wid}.minor_faults"] = (wid, lambda w: w["cowguard"]["minflt"])
        wanted[f"worker.{wid}.major_faults"] = (wid, lambda w: w["cowguard"]["majflt"])
    # The figures move at most once every 3 s (the sampler's round) and uWSGI pushes every second:
    # the newest point in each file equals the document's figure once a push of the current round
    # has landed. Polled until every file agrees, or the deadline.
    deadline = time.monotonic() + 90
    pending = dict(wanted)
    last = {}
    while pending and time.monotonic() < deadline:
        d = read_stats(u.stats)
        docs = {w["id"]: w for w in d["workers"]}
        for metric, (wid, get) in list(pending.items()):
            path = carbon.whisper_file(f"uwsgi.{host}.fleet.{metric}")
            if not path.exists():
                last[metric] = "no file yet"
                continue
            (_, _, _), values = whisper.fetch(str(path), int(time.time()) - 120)
            points = [v for v in values if v is not None]
            last[metric] = (points[-1:] or [None])[0], get(docs[wid])
            # Zero only where zero is the figure's usual value (an idle worker's major faults).
            if points and points[-1] == get(docs[wid]) and (points[-1] > 0 or metric.endswith("major_faults")):
                del pending[metric]
        time.sleep(0.5)
    assert not pending, (last, sorted(str(p.relative_to(carbon.dir)) for p in (carbon.dir / "whisper").rglob("*.wsp"))[:40],
                         carbon.log_path.read_text(errors="replace")[-2000:], u.log()[-2000:])
    # The instance-wide figure too.
    assert carbon.whisper_file(f"uwsgi.{host}.fleet.cowguard.pss_total").exists()
