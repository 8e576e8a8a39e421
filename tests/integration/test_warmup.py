"""Issue #6, the warmup part: cowguard-warmup callables run in the master after the apps load and
before the collection and freeze (in each worker with lazy-apps); cowguard-warmup-errors;
cowguard:django_warmup; cowguard-trim.

Apps: tests/apps/warmup_target.py (callables that append to $WARMUP_OUT, a 50,000-list CACHE),
warmup_trim.py (frees ~100 MB of malloc heap at import), warmup_django.py (the benchmark's Django
project loaded plainly, querying its database at import) and bench/apps/djangoproj/wsgi.py.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, private_kb

DJANGO = ROOT / "bench" / "apps" / "djangoproj"


def out_env(tmp_path):
    # In a directory of its own: uWSGI runs in tmp_path, which is on sys.path, and a file created
    # there changes the directory's mtime, so the worker's next import refreshes importlib's
    # cached listing of it, freeing two frozen objects (a set and its listing) in every worker.
    d = tmp_path / "out"
    d.mkdir(exist_ok=True)
    out = d / "warmup.out"
    return out, {"WARMUP_OUT": str(out)}


def master_pid_from_log(log):
    m = re.search(r"spawned uWSGI master process \(pid: (\d+)\)", log)
    assert m, log
    return int(m.group(1))


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


# ---- once, in the master, before the freeze ------------------------------------------------------

def test_warmup_runs_once_in_the_master_before_the_freeze(uwsgi, tmp_path):
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 2, "--module", "warmup_target", "--cowguard-warmup", "warmup_target:warm"],
              env=env).wait_ready()
    states = u.every_worker("/", 2)
    log = u.log()
    master = master_pid_from_log(log)
    assert master == u.proc.pid
    assert lines(out) == [str(master)], "exactly one run, in the master"
    for s in states.values():
        assert s["cache"] == 50_000, "the workers inherit the cache the master built"
    # Order: the warmup ran, then the master collected and froze.
    m = re.search(r"\[cowguard\] warmup: 1 callable ran in [\d.]+ ms in the master, pid (\d+)\n", log)
    assert m and int(m.group(1)) == master, log
    froze = log.find("[cowguard] master: froze")
    assert 0 <= m.start() < froze, log

    # The cache is frozen: the same app without the warmup freezes at least 50,000 fewer objects.
    (tmp_path / "cold").mkdir()
    cold_out, cold_env = out_env(tmp_path / "cold")
    v = uwsgi(["--workers", 1, "--module", "warmup_target"], env=cold_env).wait_ready()
    cold = v.get_json("/")
    warm = next(iter(states.values()))
    print(f"\nfreeze count with the warmup {warm['frozen']}, without {cold['frozen']}")
    assert cold["cache"] is None and not cold_out.exists()
    assert warm["frozen"] - cold["frozen"] >= 50_000, (warm, cold)  # 50,000 lists and CACHE itself
    m = re.search(r"\[cowguard\] master: froze (\d+) objects", log)
    if "immortalized" in log:
        # 3.12+: a collection moves the immortal objects it meets to the permanent generation, so
        # the worker's freeze count can only grow past the master's.
        assert int(m.group(1)) <= warm["frozen"], "the worker still has every object the master froze"
    else:
        assert int(m.group(1)) == warm["frozen"], "the worker still has every object the master froze"


def test_workers_use_the_warm_cache_without_copying_it(uwsgi, tmp_path):
    """Look-ups in the cache the master built copy next to nothing into the worker; the same app
    filling its cache on the first request (no warmup) makes the worker hold all of it privately.
    (Look-ups only: in CPython 3.11 even reading an object writes its reference count, so a
    request walking all 50,000 lists would copy their pages, frozen or not.)"""
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 1, "--module", "warmup_target", "--cowguard-warmup", "warmup_target:warm"],
              env=env).wait_ready()
    pid = u.get_json("/")["pid"]
    before = private_kb(pid)
    s = u.get_json("/touch")
    warm_growth = private_kb(pid) - before
    assert s["pid"] == pid and s["cache"] == 50_000

    cold_dir = tmp_path / "cold"
    cold_dir.mkdir()
    v = uwsgi(["--workers", 1, "--module", "warmup_target"], env=out_env(cold_dir)[1]).wait_ready()
    cpid = v.get_json("/")["pid"]
    before = private_kb(cpid)
    assert v.get_json("/touch")["cache"] == 50_000
    cold_growth = private_kb(cpid) - before
    print(f"\nworker private growth on /touch: warm cache {warm_growth} kB, lazily built cache {cold_growth} kB")
    assert warm_growth < 512, warm_growth
    assert cold_growth > 3000, cold_growth  # 50,000 lists, their item arrays and ints: ~6 MB


def test_several_warmups_run_in_order(uwsgi, tmp_path):
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 1, "--module", "warmup_target", "--cowguard-warmup", "warmup_target:step_a",
               "--cowguard-warmup", "warmup_target:Steps.b"], env=env).wait_ready()
    u.get("/")
    assert out.read_text() == "a\nb\n"
    assert re.search(r"\[cowguard\] warmup: 2 callables ran in [\d.]+ ms in the master", u.log()), u.log()


# ---- errors --------------------------------------------------------------------------------------

def assert_refused(u, *needles):
    rc = u.wait_exit(30)
    log = u.log()
    assert rc != 0, log
    for n in needles:
        assert n in log, (n, log)
    assert "spawned uWSGI worker" not in log, log
    return log


def test_raising_warmup_is_fatal_by_default(uwsgi, tmp_path):
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 1, "--module", "warmup_target", "--cowguard-warmup", "warmup_target:boom",
               "--cowguard-warmup", "warmup_target:step_a"], env=env)
    log = assert_refused(u, "Traceback (most recent call last):", "RuntimeError: warmup_target.boom fails on purpose",
                         "[cowguard] cowguard-warmup: warmup_target:boom raised (traceback above); stopping as "
                         "cowguard-warmup-errors = fatal asks")
    assert log.index("Traceback") < log.index("[cowguard] cowguard-warmup: warmup_target:boom raised")
    assert not out.exists(), "stops at the first failure"


def test_raising_warmup_with_errors_log_starts_and_serves(uwsgi, tmp_path):
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 1, "--module", "warmup_target", "--cowguard-warmup", "warmup_target:boom",
               "--cowguard-warmup", "warmup_target:step_a", "--cowguard-warmup-errors", "log"], env=env).wait_ready()
    assert u.get_json("/")["cache"] is None
    log = u.log()
    assert "RuntimeError: warmup_target.boom fails on purpose" in log
    assert ("[cowguard] cowguard-warmup: warmup_target:boom raised (traceback above); going on as "
            "cowguard-warmup-errors = log asks") in log
    assert "[cowguard] master: froze" in log
    assert out.read_text() == "a\n", "the next callables still run"


@pytest.mark.parametrize("spec,error", [
    ("nosuchmod:fn", "ModuleNotFoundError: No module named 'nosuchmod'"),
    ("warmup_target:nosuchfn", "AttributeError: module 'warmup_target' has no attribute 'nosuchfn'"),
])
def test_missing_module_or_callable_is_an_error_like_a_raise(uwsgi, tmp_path, spec, error):
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 1, "--module", "warmup_target", "--cowguard-warmup", spec], env=env)
    # The error (no traceback lines: the failure is in the import machinery or in getattr from C,
    # with no Python frame of the app's own to show).
    assert_refused(u, error,
                   f"[cowguard] cowguard-warmup: {spec} raised (traceback above); stopping as "
                   f"cowguard-warmup-errors = fatal asks")
    v = uwsgi(["--workers", 1, "--module", "warmup_target", "--cowguard-warmup", spec,
               "--cowguard-warmup-errors", "log"], env=env).wait_ready()
    v.get("/")
    assert f"[cowguard] cowguard-warmup: {spec} raised (traceback above); going on" in v.log()


@pytest.mark.parametrize("spec", ["nocolon", "a:b:c", "mod:", ":fn", "mod:1fn"])
def test_bad_spec_refuses_to_start(uwsgi, tmp_path, spec):
    u = uwsgi(["--workers", 1, "--module", "warmup_target", "--cowguard-warmup", spec], env=out_env(tmp_path)[1])
    log = assert_refused(u, f"[cowguard] cowguard-warmup: '{spec}' is not valid; accepts module:callable "
                            f"(a dotted module path, a colon, a callable name)")
    assert "Traceback" not in log and "[cowguard] warmup:" not in log


# ---- lazy-apps -------------------------------------------------------------------------------------

def test_lazy_apps_warm_up_in_each_worker(uwsgi, tmp_path):
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 2, "--lazy-apps", "--module", "warmup_target", "--cowguard-warmup",
               "warmup_target:warm"], env=env).wait_ready()
    states = u.every_worker("/", 2)
    workers = u.worker_pids()
    assert sorted(int(l) for l in lines(out)) == sorted(states) == workers, (lines(out), workers)
    assert str(u.proc.pid) not in lines(out), "not in the master"
    for s in states.values():
        assert s["cache"] == 50_000
    log = u.log()
    for wid in (1, 2):
        assert re.search(rf"\[cowguard\] warmup: 1 callable ran in [\d.]+ ms in worker {wid} \(lazy-apps: each "
                         rf"worker warms up its own app; nothing is shared\)", log), log


def test_lazy_apps_fatal_warmup_stops_the_instance(uwsgi, tmp_path):
    """With lazy-apps a worker's failing warmup stops the whole instance (like need-app) rather
    than respawning workers that fail forever."""
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 2, "--lazy-apps", "--module", "warmup_target", "--cowguard-warmup",
               "warmup_target:boom"], env=env)
    u.wait_exit(30)
    log = u.log()
    assert "RuntimeError: warmup_target.boom fails on purpose" in log
    assert "[cowguard] cowguard-warmup: warmup_target:boom raised (traceback above); stopping as " \
           "cowguard-warmup-errors = fatal asks" in log
    assert log.count("spawned uWSGI worker") <= 2, "no respawns"


def test_lazy_apps_fatal_warmup_exits_non_zero(uwsgi, tmp_path):
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 1, "--lazy-apps", "--module", "warmup_target", "--cowguard-warmup",
               "warmup_target:boom"], env=env)
    assert u.wait_exit(30) == 22, u.log()  # as need-app with lazy-apps


# ---- Django -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def django_db(tmp_path_factory):
    """The benchmark's SQLite database, built by its make_db.py the way bench/run.py runs it, into
    a directory of this test run (COWGUARD_BENCH_CACHE) rather than the shared cache."""
    cache = tmp_path_factory.mktemp("django-cache")
    env = dict(os.environ, COWGUARD_BENCH_CACHE=str(cache))
    r = subprocess.run(["/usr/bin/python3", str(DJANGO / "make_db.py")], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr or r.stdout
    db = Path(r.stdout.strip())
    assert db.is_file() and db.parent == cache
    return {"COWGUARD_BENCH_CACHE": str(cache)}, db


def open_files(pid, prefix):
    """The process's fds whose target starts with `prefix` (the database, its -journal/-wal)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(prefix)):
            found.append((int(fd), target))
    return found


def test_django_warmup_on_the_benchmark_project(uwsgi, django_db):
    env, db = django_db
    u = uwsgi(["--workers", 2, "--wsgi-file", DJANGO / "wsgi.py", "--cowguard-warmup", "cowguard:django_warmup"],
              env=env).wait_ready(60)
    page = u.get("/").decode()
    assert "<html" in page.lower() and "SKU-" in page, page[:500]
    log = u.log()
    m = re.search(r"\[cowguard\] warmup: 1 callable ran in ([\d.]+) ms in the master", log)
    assert m, log
    assert m.start() < log.index("[cowguard] master: froze")
    assert open_files(u.proc.pid, db) == [], "the master holds the database open"
    print(f"\ndjango_warmup on bench/apps/djangoproj/wsgi.py: {m.group(1)} ms")


def test_django_warmup_closes_the_connection_the_app_opened(uwsgi, django_db, tmp_path):
    """warmup_django.py queries the database at import and leaves the connection open; without the
    warmup that connection (one SQLite file descriptor) crosses the fork into every worker, with
    it the master holds none and each worker opens its own."""
    env, db = django_db
    cold = uwsgi(["--workers", 1, "--module", "warmup_django"], env=env).wait_ready(60)
    # A served request: the app is loaded (the socket is bound before it is) and the worker is
    # past its start (stock uWSGI 2.0.21 can miss a SIGTERM sent right after a worker spawns).
    assert "SKU-" in cold.get("/").decode()
    assert open_files(cold.proc.pid, db), "control: the app's connection is open in the master"
    cold.kill()

    u = uwsgi(["--workers", 2, "--module", "warmup_django", "--cowguard-warmup", "cowguard:django_warmup"],
              env=env).wait_ready(60)
    u.every_worker("/gc", 2)  # both workers up (a JSON view of the project that opens no connection)
    assert open_files(u.proc.pid, db) == []
    for w in u.worker_pids():
        assert open_files(w, db) == [], "no connection was inherited"
    assert "SKU-" in u.get("/").decode()
    assert open_files(u.proc.pid, db) == []
    assert "[cowguard] warmup: 1 callable ran in" in u.log()


# ---- trim ---------------------------------------------------------------------------------------

def test_trim_gives_freed_heap_back_before_the_fork(uwsgi):
    u = uwsgi(["--workers", 1, "--module", "warmup_trim", "--cowguard-trim", "true"]).wait_ready()
    assert "pid" in u.get_json("/")
    log = u.log()
    m = re.search(r"\[cowguard\] cowguard-trim: malloc_trim\(0\) in the master: rss ([\d.]+) MB -> ([\d.]+) MB", log)
    assert m, log
    before, after = float(m.group(1)), float(m.group(2))
    print(f"\ncowguard-trim: rss {before} MB -> {after} MB")
    assert before - after > 50, "the ~100 MB freed at import goes back to the kernel"
    # After the freeze (the same step), before the holes are filled (filling would take the free
    # chunks malloc_trim gives back) and so before the startup line that reports the fill.
    assert m.start() < log.index("[cowguard] master: froze")
    v = uwsgi(["--workers", 1, "--module", "warmup_trim"]).wait_ready()
    v.get("/")
    assert "cowguard-trim" not in v.log(), "off by default"


# ---- django_warmup on a project with a broken catalog (issue 18) ---------------------------------

I18NPROJ = ROOT / "tests" / "apps" / "i18nproj"
PLURAL_HEADER = "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=%s;\n"


def write_mo(path, messages):
    """A GNU gettext catalog (.mo) of `messages` (msgid -> msgstr; "" is the header), laid out as
    Python's Tools/i18n/msgfmt.py writes it: header, key table, value table, keys, values."""
    import array
    import struct
    keys = sorted(messages)
    entries, ids, strs = [], b"", b""
    for k in keys:
        kb, vb = k.encode(), messages[k].encode()
        entries.append((len(ids), len(kb), len(strs), len(vb)))
        ids += kb + b"\0"
        strs += vb + b"\0"
    keystart = 7 * 4 + 16 * len(keys)
    valuestart = keystart + len(ids)
    table = [x for o1, l1, _, _ in entries for x in (l1, o1 + keystart)]
    table += [x for _, _, o2, l2 in entries for x in (l2, o2 + valuestart)]
    header = struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + len(keys) * 8, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.array("i", table).tobytes() + ids + strs)


def i18n_locale(tmp_path):
    """LOCALE_PATHS for i18nproj: fr's catalog has a Plural-Forms header Python's gettext rejects
    (as some real projects ship), de's is sound; it's is broken too, but the project does not list
    it in LANGUAGES."""
    loc = tmp_path / "locale"
    write_mo(loc / "fr" / "LC_MESSAGES" / "django.mo", {"": PLURAL_HEADER % "EXPRESSION", "Hello": "Bonjour"})
    write_mo(loc / "de" / "LC_MESSAGES" / "django.mo", {"": PLURAL_HEADER % "(n != 1)", "Hello": "Hallo"})
    write_mo(loc / "it" / "LC_MESSAGES" / "django.mo", {"": PLURAL_HEADER % "EXPRESSION", "Hello": "Ciao"})
    return {"I18NPROJ_LOCALE": str(loc)}


def get_status(u, path, headers=None):
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{u.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_django_warmup_skips_a_broken_catalog_and_starts(uwsgi, tmp_path):
    """The default cowguard-warmup-errors = fatal: a catalog gettext rejects is a skipped language,
    named once, not a failed startup; a language the project does not list is never loaded."""
    u = uwsgi(["--workers", 1, "--wsgi-file", I18NPROJ / "wsgi.py", "--cowguard-warmup", "cowguard:django_warmup"],
              env=i18n_locale(tmp_path)).wait_ready(60)
    assert get_status(u, "/", {"Accept-Language": "de"}) == (200, "<html><body><p>Hallo</p><p>language=de</p></body></html>\n")
    # Control: the catalog is really broken; a request in French fails as it would without cowguard.
    assert get_status(u, "/", {"Accept-Language": "fr"})[0] == 500
    log = u.log()
    skip_fr = "[cowguard] django_warmup: skipped language fr: ValueError: invalid token in plural form: EXPRESSION\n"
    assert log.count(skip_fr) == 1, log
    skip_tpl = ("[cowguard] django_warmup: skipped template pages/broken.html: TemplateSyntaxError: "
                "'no_such_tag_library' is not a registered tag library.")
    assert log.count(skip_tpl) == 1, log
    summary = re.search(r"\[cowguard\] django_warmup: warmed (\d+) URL patterns, (\d+) templates, "
                        r"2 languages \(en de\); skipped 1 template \(pages/broken\.html\), 1 language \(fr\)\n", log)
    assert summary, log
    assert int(summary.group(1)) == 5, "every pattern of i18nsite/urls.py"
    assert int(summary.group(2)) == 3, "index.html, site/base.html, site/page.html; no django.contrib template"
    assert "language it" not in log and "(en de it)" not in log
    assert summary.start() < log.index("[cowguard] warmup: 1 callable ran in") < log.index("[cowguard] master: froze")


def test_django_warmup_names_a_failing_url_pattern_once(uwsgi, tmp_path):
    env = dict(i18n_locale(tmp_path), I18NPROJ_LEGACY_URLS="1")
    u = uwsgi(["--workers", 1, "--wsgi-file", I18NPROJ / "wsgi.py", "--cowguard-warmup", "cowguard:django_warmup"],
              env=env).wait_ready(60)
    assert get_status(u, "/hello/x/", {"Accept-Language": "de"}) == (200, "Hallo x")
    log = u.log()
    error = "ModuleNotFoundError: No module named 'pages.removed_urls'"
    assert log.count(f"[cowguard] django_warmup: skipped URL pattern 'legacy/': {error}\n") == 1, log
    assert log.count(f"[cowguard] django_warmup: skipped reverse() of URL names: {error}\n") == 1, log
    assert re.search(r"django_warmup: warmed 5 URL patterns, 3 templates, 2 languages \(en de\); skipped "
                     r"1 URL pattern \('legacy/'\), 1 template \(pages/broken\.html\), 1 language \(fr\), "
                     r"reverse\(\) of URL names\n", log), log


def test_django_warmup_without_i18n_loads_no_catalog(uwsgi, tmp_path):
    env = dict(i18n_locale(tmp_path), I18NPROJ_USE_I18N="0")
    u = uwsgi(["--workers", 1, "--wsgi-file", I18NPROJ / "wsgi.py", "--cowguard-warmup", "cowguard:django_warmup"],
              env=env).wait_ready(60)
    assert get_status(u, "/hello/x/", {"Accept-Language": "fr"}) == (200, "Hello x")
    log = u.log()
    assert "django_warmup: warmed 5 URL patterns, 3 templates, 0 languages (USE_I18N = False); skipped 1 template" in log
    assert "skipped language" not in log


def test_django_warmup_on_a_project_without_django_settings_is_fatal(uwsgi, tmp_path):
    """The one fatal case: the project cannot be set up (here: no DJANGO_SETTINGS_MODULE at all)."""
    out, env = out_env(tmp_path)
    u = uwsgi(["--workers", 1, "--module", "warmup_target", "--cowguard-warmup", "cowguard:django_warmup"], env=env)
    assert_refused(u, "django.core.exceptions.ImproperlyConfigured: Requested setting INSTALLED_APPS",
                   "[cowguard] cowguard-warmup: cowguard:django_warmup raised (traceback above); stopping as "
                   "cowguard-warmup-errors = fatal asks")
