"""Issue #7: every example config in configs/ starts and serves; the Emperor runs vassals with
different cowguard settings, reloads a touched vassal, and lists them in its stats."""
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, PLUGIN, STOCK_THRESHOLD, read_stats

CONFIGS = ROOT / "configs"
YOUNG = [10000, 20, 100]



def wait_http(port, path="/", timeout=60, proc=None, log=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text() if log else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.read()
        except OSError as e:
            last = e
            time.sleep(0.2)
    raise AssertionError(f"port {port} never answered {path}: {last}\n{log.read_text() if log else ''}")


def port_of(ini, key="http-socket"):
    for line in Path(ini).read_text().splitlines():
        if line.split("=", 1)[0].strip() == key:
            return int(line.split(":")[-1])
    raise AssertionError(f"no {key} in {ini}")


class Started:
    def __init__(self, args, log, cwd):
        self.log = log
        self.proc = subprocess.Popen(["uwsgi"] + [str(a) for a in args], stdout=open(log, "wb"),
                                     stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)

    def stop(self):
        import os
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def start(tmp_path):
    started = []

    def run(args, cwd=None):
        s = Started(args, tmp_path / f"log-{len(started)}.txt", cwd or tmp_path)
        started.append(s)
        return s

    yield run
    for s in started:
        s.stop()


@pytest.fixture
def configs_copy(tmp_path):
    """configs/ copied beside links to build/ and bench/, so its relative paths (%d../build)
    resolve as in the repository while the test edits its copy."""
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copytree(CONFIGS, root / "configs")
    (root / "build").mkdir()
    shutil.copy(PLUGIN, root / "build" / "cowguard_plugin.so")
    (root / "bench").symlink_to(ROOT / "bench")
    return root / "configs"


def test_every_config_is_exercised():
    """A new config must get a test here."""
    known = {"demo.ini", "django.ini", "emperor.ini", "vassals-common.ini",
             "vassals/app-default.ini", "vassals/batch-gc-off.ini", "vassals/legacy-off.ini"}
    found = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.ini")}
    assert found == known


def test_demo_ini_serves_with_cowguard(start, configs_copy):
    ini = configs_copy / "demo.ini"
    s = start(["--ini", ini])
    port = port_of(ini)
    doc = json.loads(wait_http(port, "/gc", proc=s.proc, log=s.log))
    assert doc["isenabled"] is True and doc["threshold"] == YOUNG and doc["freeze_count"] > 100000
    stats = read_stats(f"127.0.0.1:{port_of(ini, 'stats')}")
    assert stats["cowguard"]["frozen_objects"] > 100000
    assert all("uss" in w for w in stats["workers"])


def test_django_ini_serves_with_warmup(start, configs_copy):
    subprocess.run(["/usr/bin/python3", str(ROOT / "bench/apps/djangoproj/make_db.py")], check=True,
                   capture_output=True, timeout=300)
    ini = configs_copy / "django.ini"
    s = start(["--ini", ini])
    body = wait_http(port_of(ini), "/", proc=s.proc, log=s.log)
    assert body
    log = s.log.read_text()
    assert "[cowguard] warmup: 1 callable ran in" in log
    assert "[cowguard] master: froze" in log


def test_plugins_line_finds_an_installed_plugin(start, tmp_path):
    """`plugins = python3,cowguard` with the plugin in a plugin directory, as after make install
    (here a directory of our own: `make install PLUGIN_DIR=...` puts it there)."""
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    r = subprocess.run(["make", "-s", "install", f"PLUGIN_DIR={plugdir}", f"BUILD={PLUGIN.parent}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (plugdir / "cowguard_plugin.so").exists()
    ini = tmp_path / "installed.ini"
    port = 19000 + (hash(str(tmp_path)) % 500)
    ini.write_text(f"""[uwsgi]
plugins-dir = {plugdir}
plugins = python3,cowguard
master = true
workers = 1
http-socket = 127.0.0.1:{port}
wsgi-file = {CONFIGS / 'apps' / 'gcinfo.py'}
""")
    s = start(["--ini", ini])
    doc = json.loads(wait_http(port, "/gc", proc=s.proc, log=s.log))
    assert doc["frozen"] > 50000 and doc["threshold"] == YOUNG


def vassal_gc(ini):
    return json.loads(wait_http(port_of(ini), "/gc"))


def test_emperor_runs_vassals_with_their_own_settings(start, configs_copy):
    emperor = configs_copy / "emperor.ini"
    vassals = configs_copy / "vassals"
    s = start(["--ini", emperor])
    for ini in vassals.glob("*.ini"):
        wait_http(port_of(ini), "/gc", proc=s.proc, log=s.log)

    # From inside each vassal's workers.
    default = vassal_gc(vassals / "app-default.ini")
    assert default["enabled"] is True and default["threshold"] == YOUNG and default["frozen"] > 50000
    off = vassal_gc(vassals / "batch-gc-off.ini")
    assert off["enabled"] is False and off["threshold"][0] == 0 and off["frozen"] > 50000
    legacy = vassal_gc(vassals / "legacy-off.ini")
    assert legacy["frozen"] == 0 and legacy["enabled"] is True and legacy["threshold"] == STOCK_THRESHOLD

    # vassal-set and vassals-include reached every vassal.
    st = read_stats(f"127.0.0.1:{port_of(vassals / 'app-default.ini', 'stats')}")
    assert st["cowguard"]["options"]["cowguard-stats-interval"] == "2"  # vassal-set
    raw = socket.create_connection(("127.0.0.1", port_of(vassals / "batch-gc-off.ini", "stats")))
    data = b""
    while chunk := raw.recv(65536):
        data += chunk
    raw.close()
    assert b"\n" not in data.strip(), "stats-minified from vassals-include"
    assert "cowguard" not in read_stats(f"127.0.0.1:{port_of(vassals / 'legacy-off.ini', 'stats')}")

    # The Emperor's stats list the vassals as uwsgitop expects (id, pid per vassal).
    es = read_stats(f"127.0.0.1:{port_of(emperor, 'emperor-stats')}")
    assert "emperor" in es and "emperor_tyrant" in es
    names = {v["id"] for v in es["vassals"]}
    assert names == {"app-default.ini", "batch-gc-off.ini", "legacy-off.ini"}
    assert all(isinstance(v["pid"], int) and v["pid"] > 0 for v in es["vassals"])

    # Touching a vassal's ini with a changed setting reloads it with that setting.
    ini = vassals / "batch-gc-off.ini"
    ini.write_text(ini.read_text().replace("cowguard-gc = off", "cowguard-gc = 5000,10,10"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            doc = vassal_gc(ini)
            if doc["threshold"] == [5000, 10, 10]:
                break
        except (OSError, AssertionError):
            pass
        time.sleep(0.5)
    else:
        raise AssertionError(f"vassal not reloaded with the new setting:\n{s.log.read_text()}")
    assert doc["enabled"] is True and doc["frozen"] > 50000
