"""Measurement only (issue 18: where a fresh worker's first request spends its time): wraps the WSGI
file PROF_APP and, in each worker (not the master, so a master replay is not counted), records its
first PROF_N requests (default 3): minor faults (/proc/self/stat), thread CPU time and wall time, one
JSON line per request in PROF_OUT-<pid>.jsonl; with PROF_CPROFILE=1 also a cProfile of each (by own
time, then cumulative) in PROF_OUT-<pid>-<n>.txt. Requests a worker's own replay serves
(cowguard-warmup-worker-rounds) are counted too.

  PROF_APP=$PWD/bench/apps/graphite/wsgi.py PROF_CPROFILE=1 PROF_OUT=/tmp/prof \
    uwsgi --master --workers 1 --plugin python3 --plugin build/cowguard_plugin.so \
          --http-socket 127.0.0.1:8000 --wsgi-file bench/apps/profile_first.py \
          --cowguard-warmup-requests bench/wrk/graphite_warmup.txt
"""
import cProfile, io, os, pstats, sys, time, importlib.util, json
_spec = importlib.util.spec_from_file_location("target_wsgi", os.environ["PROF_APP"])
_mod = importlib.util.module_from_spec(_spec)
sys.path.insert(0, os.path.dirname(os.environ["PROF_APP"]))
_spec.loader.exec_module(_mod)
_app = _mod.application
_N = int(os.environ.get("PROF_N", "3"))
_OUT = os.environ.get("PROF_OUT", "/tmp/cowguard-profile-first")
_MASTER = os.getpid()
_count = {}

def _minflt():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])

def application(environ, start_response):
    pid = os.getpid()
    n = _count.get(pid, 0)
    _count[pid] = n + 1
    if pid == _MASTER or n >= _N or environ.get("PATH_INFO") == "/gc":
        return _app(environ, start_response)
    f0, c0, w0 = _minflt(), time.thread_time(), time.perf_counter()
    prof = cProfile.Profile() if os.environ.get("PROF_CPROFILE") == "1" else None
    if prof: prof.enable()
    body = list(_app(environ, start_response))
    if prof: prof.disable()
    f1, c1, w1 = _minflt(), time.thread_time(), time.perf_counter()
    rec = {"pid": pid, "n": n, "path": environ.get("PATH_INFO"), "minflt": f1 - f0, "cpu_ms": (c1 - c0) * 1000, "wall_ms": (w1 - w0) * 1000}
    with open(f"{_OUT}-{pid}.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        s.write("\n---- cumulative\n")
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(40)
        with open(f"{_OUT}-{pid}-{n}.txt", "w") as f:
            f.write(s.getvalue())
    return body
