// uWSGI glue for the warmup (cowguard-warmup callables, cowguard-warmup-requests replay,
// cowguard-warmup-after), run by cowguard_post_app before the freeze: in the master, or in each
// worker with lazy-apps. The request files are read and checked at init, before any app loads.
#include <Python.h>

extern "C" {
#include <uwsgi.h>
}

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cowguard/gc_control.h"
#include "cowguard/glue.h"
#include "cowguard/options.h"
#include "cowguard/warmup.h"
#include "cowguard/warmup_requests.h"

extern struct uwsgi_server uwsgi;

namespace cowguard::glue {

namespace {

const std::vector<warmup::RequestFile>& request_files() { return context().warmup_files; }

size_t request_count() {
    size_t n = 0;
    for (const auto& f : request_files()) n += f.requests.size();
    return n;
}

const char* plural(size_t n) { return n == 1 ? "" : "s"; }

// "in the master, pid N" or "in worker N (lazy-apps: each worker <does> its own app; ...)".
std::string where_it_runs(bool in_worker, const char* does) {
    if (!in_worker) return "in the master, pid " + std::to_string(getpid());
    return "in worker " + std::to_string(uwsgi.mywid) + " (lazy-apps: each worker " + does +
           " its own app; nothing is shared)";
}

// cowguard-warmup-errors = fatal: the instance stops. With lazy-apps, like need-app, the whole
// instance stops (status 22) rather than respawning workers that fail forever; the master acts
// on the flag in its next cycle.
// The line says why, naming the option; in the master it is glue::fail's one line.
[[noreturn]] __attribute__((format(printf, 2, 3))) void stop_startup(bool in_worker, const char* fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (!in_worker) fail(line);
    log_line("%s", line);
    if (WorkerSlot* instance = context().instance_slot()) instance->stop_instance.store(1);
    exit(UWSGI_FAILED_APP_CODE);
}

bool run_callables(const std::vector<std::string>& callables, const char* option, bool in_worker) {
    const Settings& s = context().settings;
    bool fatal = s.warmup_errors == WarmupErrors::Fatal;
    warmup::RunOutcome r = warmup::run(callables, fatal);
    context().warmup_ms += r.ms;
    if (r.ok) {
        if (option == std::string("cowguard-warmup"))
            log_line("warmup: %zu callable%s ran in %.1f ms %s", callables.size(), plural(callables.size()), r.ms,
                     where_it_runs(in_worker, "warms up").c_str());
        else
            log_line("%s: %zu callable%s ran in %.1f ms", option, callables.size(), plural(callables.size()), r.ms);
        return true;
    }
    if (fatal)
        stop_startup(in_worker, "%s: %s raised (traceback above); stopping as cowguard-warmup-errors = fatal asks",
                     option, r.failed.c_str());
    log_line("%s: %s raised (traceback above); going on as cowguard-warmup-errors = log asks", option, r.failed.c_str());
    return false;
}

// The app a request reaches: with manage-script-name the python app whose mountpoint is the
// longest prefix of its path (whole segments), else (or when none matches) uWSGI's default app,
// else the first python app. nullptr: no python app is loaded. `by_mountpoint`: the first case.
struct uwsgi_app* app_for(const std::string& path, int python_modifier, bool& by_mountpoint) {
    struct uwsgi_worker& w = uwsgi.workers[uwsgi.mywid];
    auto usable = [&](int i) {
        return i >= 0 && i < w.apps_cnt && w.apps[i].modifier1 == python_modifier && w.apps[i].callable &&
               w.apps[i].interpreter;
    };
    by_mountpoint = false;
    if (uwsgi.manage_script_name) {
        int best = -1;
        for (int i = 0; i < w.apps_cnt; i++) {
            if (!usable(i) || w.apps[i].mountpoint_len == 0) continue;
            std::string m(w.apps[i].mountpoint, w.apps[i].mountpoint_len);
            bool prefix = path.compare(0, m.size(), m) == 0 &&
                          (path.size() == m.size() || path[m.size()] == '/' || m.back() == '/');
            if (prefix && (best < 0 || m.size() > w.apps[best].mountpoint_len)) best = i;
        }
        by_mountpoint = best >= 0;
        if (best >= 0) return &w.apps[best];
    }
    if (usable(uwsgi.default_app)) return &w.apps[uwsgi.default_app];
    for (int i = 0; i < w.apps_cnt; i++)
        if (usable(i)) return &w.apps[i];
    return nullptr;
}

// The requests of each app, files and order kept.
struct AppRequests {
    struct uwsgi_app* app;
    bool by_mountpoint;  // SCRIPT_NAME is the app's mountpoint
    std::vector<warmup::RequestFile> files;
    size_t count = 0;
};

std::vector<AppRequests> route_requests(int python_modifier) {
    std::vector<AppRequests> groups;
    for (const auto& f : request_files()) {
        for (const auto& r : f.requests) {
            bool by_mountpoint;
            struct uwsgi_app* app = app_for(r.path, python_modifier, by_mountpoint);
            if (!app) return {};
            AppRequests* g = nullptr;
            for (auto& x : groups) g = x.app == app && x.by_mountpoint == by_mountpoint ? &x : g;
            if (!g) {
                groups.push_back({app, by_mountpoint, {}, 0});
                g = &groups.back();
            }
            if (g->files.empty() || g->files.back().path != f.path) g->files.push_back({f.path, {}});
            g->files.back().requests.push_back(r);
            g->count++;
        }
    }
    return groups;
}

// The server's part of every replayed environ, from the objects the python plugin made for the
// app (so wsgi.errors, uwsgi.version, ... are the ones its requests get) and the first socket.
PyObject* base_environ(struct uwsgi_app* app, bool by_mountpoint) {
    PyObject* d = PyDict_New();
    if (!d) return nullptr;
    auto put = [d](const char* k, PyObject* v, bool steal) {
        if (!v) return;
        PyDict_SetItemString(d, k, v);
        if (steal) Py_DECREF(v);
    };
    auto [name, port] = warmup::server_address(uwsgi.sockets && uwsgi.sockets->name ? uwsgi.sockets->name : "");
    std::string host = port == "80" ? name : (name.find(':') != std::string::npos ? "[" + name + "]" : name) + ":" + port;
    put("SCRIPT_NAME", PyUnicode_FromStringAndSize(app->mountpoint, by_mountpoint ? app->mountpoint_len : 0), true);
    put("SERVER_NAME", PyUnicode_FromString(name.c_str()), true);
    put("SERVER_PORT", PyUnicode_FromString(port.c_str()), true);
    put("HTTP_HOST", PyUnicode_FromString(host.c_str()), true);
    put("REMOTE_ADDR", PyUnicode_FromString("127.0.0.1"), true);
    put("REMOTE_PORT", PyUnicode_FromString("0"), true);
    put("wsgi.url_scheme", PyUnicode_FromString("http"), true);
    put("wsgi.version", static_cast<PyObject*>(app->gateway_version), false);
    put("wsgi.errors", static_cast<PyObject*>(app->error), false);
    put("wsgi.multithread", PyBool_FromLong(uwsgi.threads > 1), true);
    put("wsgi.multiprocess", PyBool_FromLong(uwsgi.numproc > 1), true);
    put("wsgi.run_once", PyBool_FromLong(0), true);
    put("uwsgi.version", static_cast<PyObject*>(app->uwsgi_version), false);
    put("uwsgi.node", static_cast<PyObject*>(app->uwsgi_node), false);
    if (uwsgi.cores > 1) put("uwsgi.core", PyLong_FromLong(0), true);
    return d;
}

// Replays each app's requests in the app's own interpreter (a sub-interpreter when uWSGI loads
// several apps without single-interpreter), where its connections and threads live.
// `fresh_worker`: a worker after its fork (cowguard-warmup-worker-rounds): what it opens is its
// own and stays open, and nothing it meets stops uWSGI (the master's replay of the same requests
// already ran under cowguard-warmup-errors).
void replay_requests(const std::vector<AppRequests>& groups, bool in_worker, bool fresh_worker = false) {
    const Settings& s = context().settings;
    bool fatal = s.warmup_errors == WarmupErrors::Fatal && !fresh_worker;
    int rounds = fresh_worker ? s.warmup_worker_rounds : s.warmup_rounds;
    std::string where = fresh_worker ? "in worker " + std::to_string(uwsgi.mywid) + " (pid " +
                                           std::to_string(getpid()) + "), after its fork, before its first request"
                                     : where_it_runs(in_worker, "replays for");
    const char* going_on = fresh_worker ? "going on: a worker's replay never stops uWSGI"
                                        : "going on as cowguard-warmup-errors = log asks";
    auto ull = [](uint64_t v) { return static_cast<unsigned long long>(v); };
    warmup::ReplayOutcome total;
    int closed_django = 0;
    for (const AppRequests& g : groups) {
        log_line("warmup replay: %zu request%s x %d round%s to app %d (mountpoint '%.*s'%s) %s", g.count,
                 plural(g.count), rounds, plural(static_cast<size_t>(rounds)),
                 static_cast<int>(g.app - uwsgi.workers[uwsgi.mywid].apps), g.app->mountpoint_len, g.app->mountpoint,
                 uwsgi.manage_script_name && !g.by_mountpoint ? ", the default app: no mountpoint matches" : "",
                 where.c_str());
        gc::InterpreterScope app_interpreter(static_cast<PyThreadState*>(g.app->interpreter));
        PyObject* base = base_environ(g.app, g.by_mountpoint);
        warmup::ReplayOutcome r;
        if (base) {
            r = warmup::replay(static_cast<PyObject*>(g.app->callable), base, g.files, rounds);
            Py_DECREF(base);
        } else {
            r.ok = false;
            PyErr_Print();
        }
        // Django's connections opened by the replay must not cross the fork.
        int closed = r.ok && !fresh_worker ? warmup::close_django_connections() : 0;
        total.ms += r.ms;
        if (!r.ok || closed < 0) {
            const char* what = r.ok ? "closing Django's database connections raised" : "the replay could not run";
            if (fatal)
                stop_startup(in_worker,
                             "cowguard-warmup-requests: %s (traceback above); stopping as cowguard-warmup-errors = "
                             "fatal asks", what);
            log_line("cowguard-warmup-requests: %s (traceback above); %s", what, going_on);
            continue;
        }
        closed_django += closed;
        for (int i = 0; i < 5; i++) total.answers[i] += r.answers[i];
        total.other += r.other;
        total.raised += r.raised;
    }
    if (!fresh_worker) context().warmup_ms += total.ms;  // the master's warmup figure
    std::string extra;
    if (total.answers[0]) extra += ", 1xx " + std::to_string(total.answers[0]);
    if (total.other) extra += ", other " + std::to_string(total.other);
    std::string who = fresh_worker ? " in worker " + std::to_string(uwsgi.mywid) : "";
    log_line("warmup replay: done%s in %.1f ms: 2xx %llu, 3xx %llu, 4xx %llu, 5xx %llu%s, raised %llu%s", who.c_str(),
             total.ms,
             ull(total.answers[1]), ull(total.answers[2]), ull(total.answers[3]), ull(total.answers[4]),
             extra.c_str(), ull(total.raised),
             closed_django ? "; Django's database connections closed (connections.close_all())" : "");
    if (total.raised && fatal) {
        stop_startup(in_worker,
                     "cowguard-warmup-requests: the app raised on %llu request%s (named above); stopping as "
                     "cowguard-warmup-errors = fatal asks", ull(total.raised), plural(total.raised));
    }
}

}  // namespace

void warmup_load_requests() {
    const Settings& s = context().settings;
    std::vector<warmup::RequestFile>& files = context().warmup_files;
    files.clear();
    if (s.warmup_worker_rounds > 0 && s.warmup_requests.empty())
        fail("cowguard-warmup-worker-rounds: replays the cowguard-warmup-requests files in each worker, and none is "
             "given: add cowguard-warmup-requests or set 0");
    for (const std::string& path : s.warmup_requests) {
        std::ifstream in(path, std::ios::binary);
        if (!in) fail("cowguard-warmup-requests: " + printable(path) + ": cannot read: " + strerror(errno));
        std::ostringstream text;
        text << in.rdbuf();
        if (in.bad()) fail("cowguard-warmup-requests: " + printable(path) + ": cannot read: " + strerror(errno));
        std::vector<warmup::Request> requests =
            value_or_fail(warmup::parse_requests(text.str()), "cowguard-warmup-requests: " + printable(path) + ":");
        log_line("cowguard-warmup-requests: %s: %zu request%s to replay%s", printable(path).c_str(), requests.size(),
                 plural(requests.size()), s.warmup_dry_run ? " (dry run: listed, not replayed)" : "");
        if (s.warmup_dry_run)
            for (const auto& req : requests)
                log_line("dry run: %s:%d: %s", printable(path).c_str(), req.line,
                         printable(warmup::format_request(req)).c_str());
        files.push_back({path, std::move(requests)});
    }
}

void warmup_run() {
    const Settings& s = context().settings;
    bool in_worker = uwsgi.mywid > 0;
    PyThreadState* main = context().main_thread;
    if (!s.warmup.empty()) {
        gc::InterpreterScope main_interpreter(main);
        run_callables(s.warmup, "cowguard-warmup", in_worker);
    }
    std::vector<AppRequests> groups;
    if (!request_files().empty() && s.warmup_dry_run) {
        log_line("cowguard-warmup-dry-run = true: %zu request%s listed at startup, none replayed", request_count(),
                 plural(request_count()));
    } else if (request_count() > 0) {
        groups = route_requests(context().python.modifier);
        if (groups.empty())
            log_line("cowguard-warmup-requests: no WSGI app loaded %s: nothing replayed",
                     where_it_runs(in_worker, "replays for").c_str());
        else
            replay_requests(groups, in_worker);
    }
    if (!s.warmup_after.empty()) {
        // In the interpreter of the first app the replay served, else the main one.
        gc::InterpreterScope first_app_interpreter(
            groups.empty() ? main : static_cast<PyThreadState*>(groups.front().app->interpreter));
        run_callables(s.warmup_after, "cowguard-warmup-after", in_worker);
    }
}

void warmup_worker_replay() {
    const Settings& s = context().settings;
    if (s.warmup_worker_rounds == 0 || s.warmup_dry_run || request_count() == 0) return;
    if (uwsgi.lazy || uwsgi.lazy_apps) return;  // warmup_run replays in each worker already
    gc::GilScope gil;
    std::vector<AppRequests> groups = route_requests(context().python.modifier);
    if (!groups.empty()) replay_requests(groups, true, true);
}

}  // namespace cowguard::glue
