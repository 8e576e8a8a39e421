"""Issue 18, request replay: cowguard-warmup-requests files are read and checked at startup and
served by the master to its own app in-process, before the freeze (by each worker with
lazy-apps); -rounds, -after, -dry-run; cowguard-warmup-errors; Django's connections closed.

Apps: tests/apps/replay_app.py (records every request it serves in SEEN, which the workers
inherit), tests/apps/i18nproj (Django) and bench/apps/djangoproj (Django, SQLite).
"""
import json
import os
import re
import signal
import time

import pytest

from conftest import APPS, ROOT
from test_warmup import I18NPROJ, assert_refused, django_db, i18n_locale, open_files  # noqa: F401

REPLAY_APP = ["--module", "replay_app"]


def requests_file(tmp_path, text, name="warm.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def seen(u):
    return u.get_json("/seen")


def test_replay_in_the_master_before_the_freeze(uwsgi, tmp_path):
    f = requests_file(tmp_path, "# what a first visitor asks for\n"
                                "/a?x=1&y=%C3%A9\n"
                                "\n"
                                "HEAD /dir%20name/page Accept-Language: fr  User-Agent: \"Mozilla/5.0 (X11)\"\n"
                                "POST /form Content-Type: application/x-www-form-urlencoded Content-Length: 0\n")
    u = uwsgi(["--workers", 2] + REPLAY_APP + ["--cowguard-warmup-requests", f, "--cowguard-warmup-rounds", 2]).wait_ready()
    docs = u.every_worker("/seen", 2)
    log = u.log()
    master = u.proc.pid
    for doc in docs.values():
        assert doc["worker"] in (1, 2)
        assert len(doc["seen"]) == 6, "3 requests x 2 rounds, inherited from the master"
        assert doc["closed"] == 6 and doc["consumed"] == 6, "every body consumed, every iterable closed"
        assert {s["pid"] for s in doc["seen"]} == {master}
        assert {s["worker"] for s in doc["seen"]} == {0}, "uwsgi.worker_id() is 0 in the master"
    first = next(iter(docs.values()))["seen"]
    a, head, post = (s["environ"] for s in first[:3])
    port = str(u.port)
    assert a["REQUEST_METHOD"] == "GET" and a["PATH_INFO"] == "/a" and a["QUERY_STRING"] == "x=1&y=%C3%A9"
    assert a["REQUEST_URI"] == "/a?x=1&y=%C3%A9" and a["SCRIPT_NAME"] == ""
    assert (a["SERVER_NAME"], a["SERVER_PORT"], a["HTTP_HOST"]) == ("127.0.0.1", port, f"127.0.0.1:{port}")
    assert a["REMOTE_ADDR"] == "127.0.0.1" and a["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert a["wsgi.url_scheme"] == "http" and a["wsgi.version"] == "tuple" and a["wsgi.input"] == "BytesIO"
    assert a["wsgi.errors"] == "TextIOWrapper" and a["wsgi.run_once"] is False and a["wsgi.multiprocess"] is True
    assert a["uwsgi.version"] == "bytes" and a["uwsgi.node"] == "bytes"
    assert head["REQUEST_METHOD"] == "HEAD" and head["PATH_INFO"] == "/dir name/page"
    assert head["REQUEST_URI"] == "/dir%20name/page"
    assert head["HTTP_ACCEPT_LANGUAGE"] == "fr" and head["HTTP_USER_AGENT"] == "Mozilla/5.0 (X11)"
    assert post["REQUEST_METHOD"] == "POST" and post["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert post["CONTENT_LENGTH"] == "0" and "HTTP_CONTENT_TYPE" not in post and first[2]["input"] == ""
    # The same keys a real request through uWSGI's http-socket has (but no wsgi.file_wrapper).
    u.get("/real")
    real = []
    deadline = time.monotonic() + 20
    while not real:  # /seen is answered by either worker: ask until the one that served /real answers
        assert time.monotonic() < deadline, "no worker recorded /real"
        real = [s for s in seen(u)["seen"] if s["pid"] != master]
    missing = {k for k in real[0]["environ"] if not k.startswith("HTTP_")} - set(a) - {"wsgi.file_wrapper", "CONTENT_LENGTH", "CONTENT_TYPE"}
    assert not missing, missing

    count = log.index(f"[cowguard] cowguard-warmup-requests: {f}: 3 requests to replay\n")
    start = log.index(f"[cowguard] warmup replay: 3 requests x 2 rounds to app 0 (mountpoint '') in the master, pid {master}\n")
    done = re.search(r"\[cowguard\] warmup replay: done in [\d.]+ ms: 2xx 6, 3xx 0, 4xx 0, 5xx 0, raised 0\n", log)
    assert done, log
    assert count < log.index("WSGI app 0") < start < done.start() < log.index("[cowguard] master: froze")


def test_status_classes_and_a_raising_request_with_errors_log(uwsgi, tmp_path):
    f = requests_file(tmp_path, "/ok\n/status/302\n/status/404\n/status/503\n/status/199\n/status/abc\n/boom\n")
    u = uwsgi(["--workers", 1] + REPLAY_APP + ["--cowguard-warmup-requests", f, "--cowguard-warmup-rounds", 3,
                                               "--cowguard-warmup-errors", "log"]).wait_ready()
    assert len(seen(u)["seen"]) == 21
    log = u.log()
    assert re.search(r"warmup replay: done in [\d.]+ ms: 2xx 3, 3xx 3, 4xx 3, 5xx 3, 1xx 3, other 3, raised 3\n", log), log
    named = f"[cowguard] warmup replay: {f}:7 GET /boom raised RuntimeError: replay_app.boom fails on purpose (traceback above)\n"
    assert log.count(named) == 1, "named once, not once per round"
    assert log.count("Traceback (most recent call last):") == 1, "one traceback"
    assert log.count("RuntimeError: replay_app.boom fails on purpose\n") == 1, "its last line"
    assert "stopping" not in log


def test_error_answers_never_stop_startup(uwsgi, tmp_path):
    f = requests_file(tmp_path, "/status/500\n/status/404\n")
    u = uwsgi(["--workers", 1] + REPLAY_APP + ["--cowguard-warmup-requests", f]).wait_ready()
    assert len(seen(u)["seen"]) == 2
    assert re.search(r"done in [\d.]+ ms: 2xx 0, 3xx 0, 4xx 1, 5xx 1, raised 0\n", u.log())


def test_app_that_raises_stops_startup_under_errors_fatal(uwsgi, tmp_path):
    f = requests_file(tmp_path, "/ok\n/boom\n")
    u = uwsgi(["--workers", 1] + REPLAY_APP + ["--cowguard-warmup-requests", f])
    log = assert_refused(u, "RuntimeError: replay_app.boom fails on purpose",
                         f"[cowguard] warmup replay: {f}:2 GET /boom raised RuntimeError",
                         "[cowguard] cowguard-warmup-requests: the app raised on 1 request (named above); stopping as "
                         "cowguard-warmup-errors = fatal asks")
    assert "Traceback (most recent call last):" in log


def test_a_thread_the_replay_leaves_running_is_named(uwsgi, tmp_path):
    f = requests_file(tmp_path, "/thread\n/ok\n")
    u = uwsgi(["--workers", 1] + REPLAY_APP + ["--cowguard-warmup-requests", f]).wait_ready()
    assert len(seen(u)["seen"]) == 2
    assert ("[cowguard] warmup replay: 1 thread the app started still runs in the master (replay-sleeper); none of "
            "them exists in the workers\n") in u.log()


@pytest.mark.parametrize("text,line,error", [
    ("/ok\n# fine\nget /x\n", 3, "'get' is neither a method (upper-case letters) nor a target (starting with '/')"),
    ("/ok X-A: \"open\n", 1, "header X-A: the quoted value has no closing '\"'"),
    ("\n\nhttp://example.org/\n", 3, "'http://example.org/' is neither a method (upper-case letters) nor a target "
                                     "(starting with '/')"),
])
def test_malformed_line_stops_startup_with_one_line(uwsgi, tmp_path, text, line, error):
    f = requests_file(tmp_path, text)
    u = uwsgi(["--workers", 1] + REPLAY_APP + ["--cowguard-warmup-requests", f])
    log = assert_refused(u, f"[cowguard] cowguard-warmup-requests: {f}:{line}: {error}\n")
    assert log.count("[cowguard]") == 1, log
    assert "WSGI app 0" not in log, "checked before any app loads"


def test_unreadable_file_stops_startup(uwsgi, tmp_path):
    missing = tmp_path / "nope.txt"
    u = uwsgi(["--workers", 1] + REPLAY_APP + ["--cowguard-warmup-requests", missing])
    assert_refused(u, f"[cowguard] cowguard-warmup-requests: {missing}: cannot read: No such file or directory\n")


def test_several_files_and_the_after_hook(uwsgi, tmp_path):
    one = requests_file(tmp_path, "/one\n/two\n", "one.txt")
    two = requests_file(tmp_path, "# empty for now\n", "two.txt")
    three = requests_file(tmp_path, "/three\n", "three.txt")
    out = tmp_path / "after.out"
    u = uwsgi(["--workers", 1] + REPLAY_APP + ["--cowguard-warmup-requests", one, "--cowguard-warmup-requests", two,
                                               "--cowguard-warmup-requests", three,
                                               "--cowguard-warmup-after", "replay_app:after"],
              env={"REPLAY_AFTER_OUT": str(out)}).wait_ready()
    assert [s["environ"]["PATH_INFO"] for s in seen(u)["seen"]] == ["/one", "/two", "/three"]
    assert out.read_text() == f"after {u.proc.pid} 3\n", "once, in the master, after the 3 requests"
    log = u.log()
    for f, n in ((one, "2 requests"), (two, "0 requests"), (three, "1 request")):
        assert f"[cowguard] cowguard-warmup-requests: {f}: {n} to replay\n" in log
    done = log.index("[cowguard] warmup replay: done in")
    after = log.index("[cowguard] cowguard-warmup-after: 1 callable ran in")
    assert done < after < log.index("[cowguard] master: froze")


def test_dry_run_lists_and_replays_nothing(uwsgi, tmp_path):
    f = requests_file(tmp_path, "/a?x=1\n\nHEAD /b X-Y: \"two words\"\n")
    u = uwsgi(["--workers", 1] + REPLAY_APP + ["--cowguard-warmup-requests", f,
                                               "--cowguard-warmup-dry-run", "true"]).wait_ready()
    assert seen(u)["seen"] == []
    log = u.log()
    assert f"[cowguard] cowguard-warmup-requests: {f}: 2 requests to replay (dry run: listed, not replayed)\n" in log
    assert f"[cowguard] dry run: {f}:1: GET /a?x=1\n" in log
    assert f"[cowguard] dry run: {f}:3: HEAD /b X-Y: \"two words\"\n" in log
    assert "[cowguard] cowguard-warmup-dry-run = true: 2 requests listed at startup, none replayed\n" in log
    assert "warmup replay:" not in log


def test_lazy_apps_replay_in_each_worker(uwsgi, tmp_path):
    f = requests_file(tmp_path, "/a\n/b\n")
    u = uwsgi(["--workers", 2, "--lazy-apps"] + REPLAY_APP + ["--cowguard-warmup-requests", f]).wait_ready()
    docs = u.every_worker("/seen", 2)
    for pid, doc in docs.items():
        assert [(s["pid"], s["worker"]) for s in doc["seen"]] == [(pid, doc["worker"])] * 2, "its own replay"
    log = u.log()
    for wid in (1, 2):
        assert (f"[cowguard] warmup replay: 2 requests x 1 round to app 0 (mountpoint '') in worker {wid} (lazy-apps: "
                f"each worker replays for its own app; nothing is shared)\n") in log, log
    assert log.count("[cowguard] cowguard-warmup-requests: ") == 1, "read and checked once, at startup"


def worker_replay_line(wid, pid, count, rounds):
    return (f"[cowguard] warmup replay: {count} requests x {rounds} round{'s' if rounds > 1 else ''} to app 0 "
            f"(mountpoint '') in worker {wid} (pid {pid}), after its fork, before its first request\n")


def test_worker_rounds_replay_in_each_worker_before_it_serves_and_after_a_respawn(uwsgi, tmp_path):
    f = requests_file(tmp_path, "/a\n/b\n")
    u = uwsgi(["--workers", 2] + REPLAY_APP + ["--cowguard-warmup-requests", f,
                                               "--cowguard-warmup-worker-rounds", 2]).wait_ready()
    master = u.proc.pid
    docs = u.every_worker("/seen", 2)
    for pid, doc in docs.items():
        # /seen is not recorded: the first answer of each worker shows what ran before it served
        # anything: the master's replay (inherited), then its own, 2 requests x 2 rounds.
        assert [(s["pid"], s["worker"]) for s in doc["seen"]] == [(master, 0)] * 2 + [(pid, doc["worker"])] * 4
        assert doc["closed"] == 6 and doc["consumed"] == 6
    log = u.log()
    for pid, doc in docs.items():
        assert worker_replay_line(doc["worker"], pid, 2, 2) in log, log
    for doc in docs.values():
        assert re.search(rf"\[cowguard\] warmup replay: done in worker {doc['worker']} in [\d.]+ ms: 2xx 4, 3xx 0, "
                         rf"4xx 0, 5xx 0, raised 0\n", log), log
    # A respawned worker replays again before its first request.
    victim = next(iter(docs))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        fresh = [p for p in u.worker_pids() if p not in docs]
        if fresh:
            break
        assert time.monotonic() < deadline, u.log()
        time.sleep(0.1)
    new = {}
    deadline = time.monotonic() + 30
    while fresh[0] not in new:
        assert time.monotonic() < deadline, u.log()
        d = seen(u)
        new.setdefault(d["pid"], d)
    d = new[fresh[0]]
    assert [(s["pid"], s["worker"]) for s in d["seen"]] == [(master, 0)] * 2 + [(fresh[0], d["worker"])] * 4
    assert worker_replay_line(d["worker"], fresh[0], 2, 2) in u.log()


def test_worker_rounds_with_lazy_apps_replay_once(uwsgi, tmp_path):
    f = requests_file(tmp_path, "/a\n/b\n")
    u = uwsgi(["--workers", 1, "--lazy-apps"] + REPLAY_APP + ["--cowguard-warmup-requests", f,
                                                               "--cowguard-warmup-worker-rounds", 3]).wait_ready()
    doc = seen(u)
    assert [(s["pid"], s["worker"]) for s in doc["seen"]] == [(doc["pid"], 1)] * 2, "the lazy-apps replay only"
    assert "after its fork, before its first request" not in u.log()


def test_worker_rounds_without_a_request_file_stops_startup(uwsgi, tmp_path):
    u = uwsgi(["--workers", 1] + REPLAY_APP + ["--cowguard-warmup-worker-rounds", 1])
    assert u.wait_exit() != 0
    lines = [x for x in u.log().splitlines() if x.startswith("[cowguard]")]
    assert lines == ["[cowguard] cowguard-warmup-worker-rounds: replays the cowguard-warmup-requests files in each "
                     "worker, and none is given: add cowguard-warmup-requests or set 0"], lines


def test_mountpoints_and_sub_interpreters(uwsgi, tmp_path):
    """Two apps, each in its own interpreter: each request goes to the app its mountpoint selects
    (manage-script-name), in that app's interpreter; a path no mountpoint matches to the default."""
    f = requests_file(tmp_path, "/a/x\n/b/y?q=1\n/b\n/c/z\n")
    app = APPS / "replay_app.py"
    u = uwsgi(["--workers", 1, "--mount", f"/a={app}", "--mount", f"/b={app}", "--manage-script-name",
               "--cowguard-warmup-requests", f]).wait_ready()
    a = json.loads(u.get("/a/seen"))["seen"]
    b = json.loads(u.get("/b/seen"))["seen"]
    split = lambda docs: [(s["environ"]["SCRIPT_NAME"], s["environ"]["PATH_INFO"], s["environ"]["REQUEST_URI"]) for s in docs]
    assert split(a) == [("/a", "/x", "/a/x"), ("", "/c/z", "/c/z")], a
    assert split(b) == [("/b", "/y", "/b/y?q=1"), ("/b", "", "/b")], b
    log = u.log()
    assert "warmup replay: 1 request x 1 round to app 0 (mountpoint '/a') in the master" in log
    assert "warmup replay: 2 requests x 1 round to app 1 (mountpoint '/b') in the master" in log
    assert ("warmup replay: 1 request x 1 round to app 0 (mountpoint '/a', the default app: no mountpoint matches) "
            "in the master") in log
    assert re.search(r"WSGI app 1 \(mountpoint='/b'\) ready in \d+ seconds on interpreter (0x[0-9a-f]+)", log).group(1) != \
        re.search(r"WSGI app 0 \(mountpoint='/a'\) ready in \d+ seconds on interpreter (0x[0-9a-f]+)", log).group(1)


# ---- Django --------------------------------------------------------------------------------------

def test_replay_on_a_django_project(uwsgi, tmp_path):
    f = requests_file(tmp_path, "/ Accept-Language: de\n/hello/you/\n/site/\n/redirect/\n/nope/\n/boom/\n"
                                "/ Accept-Language: fr\n")
    out = tmp_path / "views.out"
    env = dict(i18n_locale(tmp_path), I18NPROJ_OUT=str(out))
    u = uwsgi(["--workers", 1, "--wsgi-file", I18NPROJ / "wsgi.py", "--cowguard-warmup-requests", f], env=env).wait_ready(60)
    u.get("/site/")
    views = out.read_text().splitlines()
    master = u.proc.pid
    assert views[:5] == [f"{master} 0 /", f"{master} 0 /hello/you/", f"{master} 0 /site/", f"{master} 0 /redirect/",
                         f"{master} 0 /boom/"], views
    assert views[5].endswith(" 1 /site/") and not views[5].startswith(str(master))
    # Django answers a view's exception and the broken French catalog with 500 itself: nothing raises.
    assert re.search(r"warmup replay: done in [\d.]+ ms: 2xx 3, 3xx 1, 4xx 1, 5xx 2, raised 0; Django's database "
                     r"connections closed \(connections.close_all\(\)\)\n", u.log()), u.log()


def test_replay_closes_django_connections_before_the_fork(uwsgi, django_db, tmp_path):
    env, db = django_db
    f = requests_file(tmp_path, "/\n/products/?page=2\n/product/1/\n/category/cat-00/\n")
    u = uwsgi(["--workers", 2, "--wsgi-file", ROOT / "bench" / "apps" / "djangoproj" / "wsgi.py",
               "--cowguard-warmup-requests", f], env=dict(env, DJANGOPROJ_WARM="0")).wait_ready(60)
    assert "SKU-" in u.get("/").decode()
    assert re.search(r"warmup replay: done in [\d.]+ ms: 2xx 4, 3xx 0, 4xx 0, 5xx 0, raised 0; Django's database "
                     r"connections closed", u.log()), u.log()
    assert open_files(u.proc.pid, db) == [], "the replay's SQLite connection does not cross the fork"
