"""Issue #2: freeze at master preload, worker GC policy, the guard - asked of the workers themselves."""
import re
import subprocess

import pytest

from conftest import APPS, PLUGIN, STOCK_THRESHOLD

YOUNG = [10000, 20, 100]


def test_defaults_freeze_and_between_policy_in_every_worker(uwsgi):
    u = uwsgi(["--workers", 3, "--wsgi-file", APPS / "gcstate.py"]).wait_ready()
    states = u.every_worker("/", 3)
    for s in states.values():
        assert s["enabled_at_import"] is False, "the GC must be off while the app loads"
        assert s["frozen"] > 20000, s
        assert s["enabled"] is True
        assert s["threshold"] == YOUNG
    m = re.search(r"\[cowguard\] master: froze (\d+) objects in ([\d.]+) ms", u.log())
    assert m and int(m.group(1)) > 20000, u.log()
    assert ("workers: gc between (thresholds 10000,20,100 in requests, after requests at 700,10,10), "
            "guard block, fast exit on") in u.log()


@pytest.mark.parametrize("value,enabled,threshold", [
    ("off", False, [0, 10, 10]),
    ("young", True, YOUNG),
    ("between", True, YOUNG),
    ("1000,15,30", True, [1000, 15, 30]),
    ("2000", True, [2000, 10, 10]),
])
def test_worker_policy(uwsgi, value, enabled, threshold):
    u = uwsgi(["--workers", 2, "--wsgi-file", APPS / "gcstate.py", "--cowguard-gc", value]).wait_ready()
    for s in u.every_worker("/", 2).values():
        assert s["enabled"] is enabled
        assert s["threshold"] == threshold
        assert s["frozen"] > 20000


def test_guard_blocks_and_names_call_sites(uwsgi):
    u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py"]).wait_ready()
    s = u.get_json("/enable")
    assert s["frozen"] > 20000, "gc.unfreeze() must have been blocked"
    s = u.get_json("/enable")
    log = u.log()
    gclib = str(APPS / "gclib.py")
    assert f"blocked gc.enable() called from {gclib}:4" in log  # at import, in the master
    assert f"blocked gc.enable() called from {gclib}:8" in log
    assert f"blocked gc.unfreeze() called from {gclib}:9" in log
    assert log.count(f"{gclib}:9") == 1, "logged once per call site"


def test_guard_warn_lets_calls_through(uwsgi):
    u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py", "--cowguard-guard", "warn"]).wait_ready()
    s = u.get_json("/enable")
    assert s["frozen"] == 0, "warn lets gc.unfreeze() through"
    assert f"allowed gc.unfreeze() called from {APPS / 'gclib.py'}:9" in u.log()


def test_set_threshold_blocked_only_under_gc_off(uwsgi):
    u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py", "--cowguard-gc", "off"]).wait_ready()
    assert u.get_json("/set-threshold")["threshold"][0] == 0
    assert "blocked gc.set_threshold()" in u.log()
    v = uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py"]).wait_ready()
    assert v.get_json("/set-threshold")["threshold"] == [700, 10, 10]


def test_native_reenable_is_caught_after_the_request(uwsgi):
    u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py", "--cowguard-gc", "off"]).wait_ready()
    s = u.get_json("/native")
    assert s["enabled"] is True, "inside the request the native call took effect"
    s = u.get_json("/")
    assert s["enabled"] is False, "after the request cowguard switched it off again"
    assert "switched back on without gc.enable()" in u.log()


def test_sub_interpreter_is_frozen_too(uwsgi):
    u = uwsgi(["--workers", 1, "--mount", "/=gcstate.py", "--mount", f"/second={APPS / 'second_app.py'}",
               "--chdir", APPS, "--manage-script-name"]).wait_ready()
    main = u.get_json("/")
    second = u.get_json("/second/")
    assert second["pid"] == main["pid"] and second["sys_id"] != main["sys_id"], "two interpreters, one worker"
    assert second["enabled_at_import"] is False, "GC off while the sub-interpreter's app loads"
    assert second["frozen"] > 10000 and second["enabled"] is True and second["threshold"] == YOUNG
    assert main["frozen"] > 20000
    assert re.search(r"master: froze \d+ objects in [\d.]+ ms \(2 interpreters", u.log()), u.log()


def test_lazy_apps_freeze_in_each_worker(uwsgi):
    u = uwsgi(["--workers", 2, "--lazy-apps", "--wsgi-file", APPS / "gcstate.py"]).wait_ready()
    for s in u.every_worker("/", 2).values():
        assert s["enabled_at_import"] is False
        assert s["frozen"] > 20000 and s["enabled"] is True
    assert "lazy-apps: every worker loads its own app, so no app memory is shared" in u.log()


def test_mule_gets_the_worker_policy(uwsgi, tmp_path):
    out = tmp_path / "mule.json"
    uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py", f"--mule={APPS / 'mule_state.py'}",
           "--env", f"MULE_OUT={out}", "--cowguard-gc", "1234,5,6"]).wait_ready()
    import json
    import time
    deadline = time.monotonic() + 15
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    s = json.loads(out.read_text())
    assert s["frozen"] > 20000 and s["enabled"] is True and s["threshold"] == [1234, 5, 6]


def test_respawned_worker_has_the_same_state(uwsgi):
    u = uwsgi(["--workers", 1, "--max-requests", 3, "--min-worker-lifetime", 0, "--wsgi-file", APPS / "gcstate.py"]).wait_ready()
    pids = set()
    for _ in range(12):
        s = u.get_json("/")
        pids.add(s["pid"])
        assert s["frozen"] > 20000 and s["enabled"] is True and s["threshold"] == YOUNG
    assert len(pids) >= 3, "max-requests respawned the worker"


def test_master_switch_off_is_stock(uwsgi):
    u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py", "--cowguard", "false"]).wait_ready()
    s = u.get_json("/enable")
    assert s["enabled_at_import"] is True and s["frozen"] == 0 and s["threshold"] == STOCK_THRESHOLD
    assert "cowguard = false: loaded, changing nothing" in u.log()
    assert "blocked" not in u.log()


@pytest.mark.parametrize("option,value,accepts", [
    ("cowguard", "maybe", "true or false"),
    ("cowguard-gc", "sometimes", "young, between, off or T0[,T1[,T2]]"),
    ("cowguard-gc", "1,2,3,4", "young, between, off or T0[,T1[,T2]]"),
    ("cowguard-gc", "-5", "young, between, off or T0[,T1[,T2]]"),
    ("cowguard-gc", "10,", "young, between, off or T0[,T1[,T2]]"),
    ("cowguard-guard", "deny", "block, warn or allow"),
    ("cowguard-freeze", "", "true or false"),
    ("cowguard-fast-exit", "2", "true or false"),
    ("cowguard-collect-before-freeze", "nope", "true or false"),
])
def test_bad_values_refuse_to_start(uwsgi, option, value, accepts):
    u = uwsgi(["--workers", 1, "--wsgi-file", APPS / "gcstate.py", f"--{option}", value])
    assert u.wait_exit() != 0
    lines = [l for l in u.log().splitlines() if l.startswith("[cowguard]")]
    assert lines == [f"[cowguard] {option}: '{value}' is not valid; accepts " + lines[0].split("accepts ", 1)[1]], u.log()
    assert accepts in lines[0]
    assert "spawned uWSGI worker" not in u.log()


def test_refuses_without_python_plugin(tmp_path):
    r = subprocess.run(["uwsgi", "--plugin", str(PLUGIN), "--http-socket", "127.0.0.1:0", "--master"],
                       capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode != 0
    assert "[cowguard] needs uWSGI's python plugin, and none is loaded" in r.stdout + r.stderr


def _private_mb_after_load(u, workers, requests):
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda _: u.get("/"), range(requests)))
    from conftest import private_kb
    pids = [p for p in u.worker_pids()]
    assert len(pids) == workers
    return sum(private_kb(p) for p in pids) / len(pids) / 1024


def test_private_memory_side_by_side_with_stock(uwsgi):
    """The same GC-heavy app (bench/apps/gcheavy.py), workers and fixed load, with and without
    cowguard, in one test: average private memory per worker with cowguard <= 1/3 of stock's."""
    from conftest import ROOT
    args = ["--workers", 2, "--wsgi-file", ROOT / "bench" / "apps" / "gcheavy.py", "--disable-logging"]
    env = {"GCHEAVY_ROWS": "150000"}
    stock = uwsgi(args, cowguard=False, env=env).wait_ready(60)
    stock_mb = _private_mb_after_load(stock, 2, 300)
    stock.stop()
    cow = uwsgi(args, env=env).wait_ready(60)
    cow_mb = _private_mb_after_load(cow, 2, 300)
    print(f"\nprivate MB per worker after 300 requests: stock {stock_mb:.1f}, cowguard {cow_mb:.1f}, "
          f"ratio {cow_mb / stock_mb:.3f}")
    assert stock_mb > 20, "the load must make stock workers copy their heap"
    assert cow_mb <= stock_mb / 3


def test_uwsgi_build_plugin_builds_the_same_plugin(uwsgi, tmp_path):
    """`uwsgi --build-plugin /path/to/cowguard` (uWSGI's own builder), run from another directory
    as uWSGI's docs do it, makes a cowguard_plugin.so there that works."""
    from conftest import ROOT
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run(["uwsgi", "--build-plugin", str(ROOT)], cwd=elsewhere, capture_output=True, text=True,
                       timeout=600)
    built = elsewhere / "cowguard_plugin.so"
    assert r.returncode == 0 and built.exists(), r.stdout + r.stderr
    # Every source compiled in: the builder's command line names each file below plugin/.
    sources = sorted((ROOT / "plugin").glob("*/*.c*"))
    assert len(sources) > 20
    for source in sources:
        assert str(source) in r.stdout, (source, r.stdout[-3000:])
    v = uwsgi(["--plugin", built, "--workers", 1, "--wsgi-file", APPS / "gcstate.py"], cowguard=False).wait_ready()
    s = v.get_json("/")
    assert s["frozen"] > 20000 and s["threshold"] == YOUNG and s["enabled_at_import"] is False


def test_uwsgi_build_plugin_refuses_an_empty_source_list(tmp_path):
    """A copy of uwsgiplugin.py with no sources beside it fails the build (it used to "succeed"
    with a 14 KB plugin that had nothing compiled in)."""
    import shutil
    from conftest import ROOT
    src = tmp_path / "src"
    (src / "plugin").mkdir(parents=True)
    shutil.copy(ROOT / "uwsgiplugin.py", src)
    shutil.copytree(ROOT / "tools", src / "tools")
    r = subprocess.run(["uwsgi", "--build-plugin", str(src)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and not (tmp_path / "cowguard_plugin.so").exists(), r.stdout + r.stderr
    assert f"no sources in {src}/plugin" in r.stdout + r.stderr, r.stdout + r.stderr
