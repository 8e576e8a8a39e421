// cowguard: the uWSGI glue. The plugin struct, the options table, and one function per hook,
// each calling into a unit. Where each hook runs:
//   init            master, before Py_Initialize     settings, python plugin checks, slots, wrappers
//   post_init       master, after Py_Initialize      GC off + guard (gc_control)
//   cowguard_post_app  after every app is loaded     freeze (master; each worker with lazy-apps)
//   python pre/post_uwsgi_fork (wrapped)  around a worker's fork   the worker's stop signals held
//   python post_fork (wrapped)  worker, mule, spooler   worker GC policy, slot
//   python fixup (wrapped)      worker, handlers set     the worker's stop signals released
//   cowguard_after_request      worker, each request    counters; collection under gc=between, GC state check under gc=off
//   python atexit (wrapped)     worker, mule, spooler   fast exit
//   master_cleanup  master, before a reload's exec, at exit   the stats thread finishes its clients
// uWSGI calls a generic plugin's post_fork only in workers, and after_request only for the
// request's own plugin, so cowguard wraps the python plugin's hook pointers and registers
// exported symbols in uWSGI's call-post-app and after-request-hook lists.
#include <Python.h>

extern "C" {
#include <uwsgi.h>
}

#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "cowguard/fast_exit.h"
#include "cowguard/gc_control.h"
#include "cowguard/glue.h"
#include "cowguard/options.h"
#include "cowguard/procfs.h"
#include "cowguard/pymodule.h"
#include "cowguard/fill_holes.h"
#include "cowguard/immortalize.h"
#include "cowguard/python_version.h"

#include <malloc.h>

extern struct uwsgi_server uwsgi;

namespace cowguard::glue {

Context& context() {
    static Context c;
    return c;
}

void log_line(const char* fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    uwsgi_log("[cowguard] %s\n", buf);
}

[[noreturn]] void fail(const std::string& line) {
    uwsgi_log("[cowguard] %s\n", line.c_str());
    exit(1);
}

ProcessId current_process() {
    int spooler_index = -1;
    if (uwsgi.i_am_a_spooler) {
        int i = 0;
        for (struct uwsgi_spooler* s = uwsgi.spoolers; s; s = s->next, i++)
            if (s == uwsgi.i_am_a_spooler) spooler_index = i;
    }
    return identify(uwsgi.mywid, uwsgi.muleid, spooler_index);
}

}  // namespace cowguard::glue

namespace {

using namespace cowguard;
using glue::fail;
using glue::ok_or_fail;
using glue::value_or_fail;
using glue::log_line;

Context& g_ctx = glue::context();  // this file's name for the one context
PythonPlugin& g_python = g_ctx.python;  // and for the python plugin's hooks as they were

bool lazy_mode() { return uwsgi.lazy || uwsgi.lazy_apps; }

// ---- options ---------------------------------------------------------------------------------

void store_option(char* /*key*/, char* value, void* name) {
    // Every value is kept as written; build_settings validates all of them at init.
    g_ctx.raw_options[static_cast<const char*>(name)].emplace_back(value ? value : "");
}

std::vector<struct uwsgi_option> make_options_table() {
    std::vector<struct uwsgi_option> t;
    for (const std::string& n : option_names()) {
        struct uwsgi_option o = {};
        o.name = const_cast<char*>(n.c_str());
        o.type = required_argument;
        o.help = const_cast<char*>(option_accepts(n));
        o.func = store_option;
        o.data = const_cast<char*>(n.c_str());
        t.push_back(o);
    }
    t.push_back(uwsgi_option{});  // terminator
    return t;
}

std::vector<struct uwsgi_option> g_options_table = make_options_table();

// ---- the process's interpreters and slot -----------------------------------------------------

void collect_interpreters() {
    std::vector<PyThreadState*>& interps = g_ctx.interps;
    interps.clear();
    if (g_ctx.main_thread) interps.push_back(g_ctx.main_thread);
    auto add_from = [&interps](int wid) {
        struct uwsgi_worker& w = uwsgi.workers[wid];
        for (int i = 0; i < w.apps_cnt; i++) {
            struct uwsgi_app& app = w.apps[i];
            if (app.modifier1 != g_python.modifier || !app.interpreter) continue;
            auto* ts = static_cast<PyThreadState*>(app.interpreter);
            bool known = false;
            for (PyThreadState* t : interps) known = known || t == ts || t->interp == ts->interp;
            if (!known) interps.push_back(ts);
        }
    };
    add_from(0);
    if (uwsgi.mywid > 0) add_from(uwsgi.mywid);
}

// Which process this is and its slot, worked out afresh: at init (the master), after each fork,
// and once the apps are loaded (a lazy-apps worker, or worker 1 without a master).
void enter_process() {
    g_ctx.process = glue::current_process();
    g_ctx.slot = g_ctx.process.role == Role::Master ? nullptr : g_ctx.slot_of(g_ctx.process);
}

// ---- hooks -----------------------------------------------------------------------------------

void check_built_python() {
    // The plugin is compiled against one CPython; a python plugin built for another one would
    // put a different libpython's symbols first in the global scope.
    ok_or_fail(check_python_version(PY_MAJOR_VERSION, PY_MINOR_VERSION, Py_GetVersion()));
}

void find_python_plugin() {
    for (int i = 0; i < 256; i++) {
        struct uwsgi_plugin* p = uwsgi.p[i];
        if (p && p->name && strncmp(p->name, "python", 6) == 0) {
            g_python.plugin = p;
            g_python.modifier = i;
            return;
        }
    }
    fail("needs uWSGI's python plugin, and none is loaded: load it before cowguard (plugins = python3,cowguard)");
}

// cowguard-trim: hand the free pages at the top of the malloc heap and in its bins back to the
// kernel before the fork, so no worker inherits (and later copies) them.
void trim_heap() {
    auto before = read_mem(getpid());
    malloc_trim(0);
    auto after = read_mem(getpid());
    if (before && after)
        log_line("cowguard-trim: malloc_trim(0) in the master: rss %.1f MB -> %.1f MB", before->rss / 1048576.0,
                 after->rss / 1048576.0);
}

// uWSGI's own option, as given (ini or command line): true when present and not false.
bool uwsgi_option_on(const char* name) {
    for (int i = 0; i < uwsgi.exported_opts_cnt; i++) {
        struct uwsgi_opt* o = uwsgi.exported_opts[i];
        if (!o || !o->key || strcmp(o->key, name) != 0) continue;
        const char* v = o->value;
        return !v || !(strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "off") == 0);
    }
    return false;
}

int count_python_threads() {
    int n = 0;
    for (PyThreadState* t = PyInterpreterState_ThreadHead(PyInterpreterState_Main()); t; t = PyThreadState_Next(t)) n++;
    return n;
}

// Counts the master's Python threads right before the fork (reinit_python_after_fork reads the
// count in each child) and names the two hazards cowguard cannot repair.
// A thread started at import may hold the GIL, or a lock, when the master forks; the worker gets
// its state without the thread. With enable-threads the master lets go of the GIL before the fork
// (master_fixup), and without py-call-uwsgi-fork-hooks nothing takes it back first: a worker can
// wait for it for ever, in uWSGI's own code before any plugin runs (uWSGI issues #1149, #1369;
// stock uWSGI hung in 3 of 3 starts here). cowguard cannot undo that; it says so before the fork.
void count_threads_before_fork() {
    g_ctx.master_python_threads = count_python_threads();
    g_ctx.threads_counted_in = getpid();
    if (!uwsgi.has_threads && g_ctx.master_python_threads > 1 && g_ctx.interps.size() > 1) {
        log_line("%d Python threads run in the master before the fork (started at import), with sub-interpreters "
                 "and threads not enabled: a worker forked while one of them waits for the GIL waits for ever for a "
                 "switch to a thread that does not exist (stock uWSGI the same). cowguard repairs that with "
                 "PyOS_AfterFork_Child only with one interpreter, as it deletes sub-interpreters. Set "
                 "single-interpreter = true",
                 g_ctx.master_python_threads - 1);
        return;
    }
    if (!uwsgi.has_threads || g_ctx.master_python_threads <= 1 || uwsgi_option_on("py-call-uwsgi-fork-hooks")) return;
    log_line("%d Python threads run in the master before the fork (started at import) and threads are enabled "
             "without py-call-uwsgi-fork-hooks: a worker forked while one of them holds the GIL waits for it for "
             "ever (uWSGI issues #1149, #1369). Set py-call-uwsgi-fork-hooks = true",
             g_ctx.master_python_threads - 1);
}

// Without enable-threads the forking thread holds the GIL, so the worker can repair Python's
// thread state itself, as py-call-osafterfork would: a new GIL (a master thread's pending switch
// request would otherwise leave the worker waiting for a thread that does not exist, at its first
// import or its exit), the other threads' states dropped, threading and os.register_at_fork told.
// Not with sub-interpreters: PyOS_AfterFork_Child deletes them (see refuse_fork_hooks_with_sub_interpreters).
void reinit_python_after_fork() {
    // Only in a forked process: without a master, worker 1 is the process that counted, threads alive.
    if (getpid() == g_ctx.threads_counted_in) return;
    if (uwsgi.has_threads || g_ctx.master_python_threads <= 1 || g_ctx.interps.size() > 1 ||
        uwsgi_option_on("py-call-osafterfork") || uwsgi_option_on("py-call-uwsgi-fork-hooks"))
        return;
    PyOS_AfterFork_Child();
}

// CPython's PyOS_AfterFork_Child deletes every interpreter but the main one in the forked process,
// and both python plugin options call it in each worker: the apps mounted in sub-interpreters lose
// their interpreter. Stock uWSGI crashed while mounting them (1 of 1 and 6 of 6 starts, the mount
// running without the GIL); with cowguard's mount fix the workers hung inside PyOS_AfterFork_Child.
// Nothing can serve these apps, so the master stops before the fork and says which options work.
void refuse_fork_hooks_with_sub_interpreters() {
    if (g_ctx.interps.size() <= 1) return;
    for (const char* option : {"py-call-uwsgi-fork-hooks", "py-call-osafterfork"}) {
        if (!uwsgi_option_on(option)) continue;
        fail(std::string(option) + ": CPython's PyOS_AfterFork_Child deletes every sub-interpreter in a forked " +
             "worker, and " + std::to_string(g_ctx.interps.size() - 1) +
             " app(s) here run in one (mounted without single-interpreter): set single-interpreter = true, or drop " +
             option);
    }
}

// A worker's stop signals, held from its fork until uWSGI has installed its handlers.
// uWSGI forks the first workers before its master loop installs the master's handlers, and a
// worker installs its own (end_me for SIGINT and SIGTERM) only in uwsgi_worker_run: after the
// fork hooks (PyOS_AfterFork_Child with py-call-uwsgi-fork-hooks), the post-fork hooks and, with
// lazy-apps, the app's import. Until then it has the handlers that Py_Initialize left in the
// master, and Python's SIGINT handler only notes the signal: a stop that reached a worker still
// starting was lost, and uWSGI waited worker-reload-mercy (60 s) to SIGKILL it (stock uWSGI: 3 of
// 12 stops with 10 workers under load, each stuck worker with 0 requests; a second SIGINT ended
// every one). Held, the signal waits for the worker's own handler. Threads the app starts while
// it loads inherit the mask, so these signals reach the main thread.
constexpr int kWorkerStopSignals[] = {SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

sigset_t worker_stop_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : kWorkerStopSignals) sigaddset(&set, sig);
    return set;
}

void release_stop_signals() {
    if (!g_ctx.stop_signals_held) return;
    g_ctx.stop_signals_held = false;
    sigset_t set = worker_stop_signals();
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);  // a signal held meanwhile is handled here, by uWSGI's handler
}

// uWSGI calls these around the fork of a worker only (not of mules or spoolers).
void wrapped_python_pre_uwsgi_fork() {
    sigset_t set = worker_stop_signals();
    pthread_sigmask(SIG_BLOCK, &set, &g_ctx.mask_before_fork);
    if (g_python.pre_uwsgi_fork) g_python.pre_uwsgi_fork();
}

void wrapped_python_post_uwsgi_fork(int in_child) {
    if (g_python.post_uwsgi_fork) g_python.post_uwsgi_fork(in_child);
    if (in_child)
        g_ctx.stop_signals_held = true;  // released in the fixup hook
    else
        pthread_sigmask(SIG_SETMASK, &g_ctx.mask_before_fork, nullptr);
}

// uWSGI runs the fixup hooks right after it has installed the worker's signal handlers.
void wrapped_python_fixup() {
    release_stop_signals();
    if (g_python.fixup) g_python.fixup();
}

// python-worker-override replaces uwsgi_worker_run (and its fixup hooks) with a script.
int wrapped_python_worker() {
    if (uwsgi_option_on("python-worker-override")) release_stop_signals();
    return g_python.worker ? g_python.worker() : 0;
}

void process_started();
void wrapped_python_post_fork();
int wrapped_python_mount_app(char* mountpoint, char* app);
void wrapped_python_atexit();

int cowguard_init() {
    BuiltSettings built = value_or_fail(build_settings(g_ctx.raw_options));
    g_ctx.settings = built.settings;
    for (const auto& note : built.notes) log_line("%s", note.c_str());
    if (!g_ctx.settings.enabled) {
        log_line("cowguard = false: loaded, changing nothing");
        return 0;
    }
    glue::warmup_load_requests();
    find_python_plugin();
    check_built_python();
    g_ctx.immortalize = value_or_fail(plan_immortalize(g_ctx.settings.immortalize, immortal::supported(),
                                                       std::string(Py_GetVersion(), strcspn(Py_GetVersion(), " ")),
                                                       g_ctx.settings.freeze, lazy_mode()));
    g_ctx.fill_holes = plan_fill_holes(g_ctx.settings.fill_holes, lazy_mode());
    pymodule::register_module(g_ctx);  // before Py_Initialize, which the python plugin's init runs next

    g_ctx.log = glue::log_line;

    // Wrap the python plugin's hooks (see the comment at the top of this file).
    struct uwsgi_plugin* py = g_python.plugin;
    g_python.post_fork = std::exchange(py->post_fork, wrapped_python_post_fork);
    g_python.pre_uwsgi_fork = std::exchange(py->pre_uwsgi_fork, wrapped_python_pre_uwsgi_fork);
    g_python.post_uwsgi_fork = std::exchange(py->post_uwsgi_fork, wrapped_python_post_uwsgi_fork);
    g_python.fixup = std::exchange(py->fixup, wrapped_python_fixup);
    g_python.worker = std::exchange(py->worker, wrapped_python_worker);
    if (py->mount_app) g_python.mount_app = std::exchange(py->mount_app, wrapped_python_mount_app);
    if (g_ctx.settings.fast_exit) g_python.atexit = std::exchange(py->atexit, wrapped_python_atexit);
    uwsgi_string_new_list(&uwsgi.call_post_app, const_cast<char*>("cowguard_post_app"));
    uwsgi_string_new_list(&uwsgi.after_request_hooks, const_cast<char*>("cowguard_after_request"));

    int spoolers = 0;
    for (struct uwsgi_spooler* s = uwsgi.spoolers; s; s = s->next) spoolers++;
    g_ctx.layout = SlotLayout{uwsgi.numproc, uwsgi.mules_cnt, spoolers};
    int slots = g_ctx.layout.count();
    void* mem = uwsgi_calloc_shared(sizeof(WorkerSlot) * static_cast<size_t>(slots));
    g_ctx.slots = static_cast<WorkerSlot*>(mem);
    for (int i = 0; i < slots; i++) new (&g_ctx.slots[i]) WorkerSlot();
    enter_process();

    glue::stats_on_init();
    // uWSGI sizes its metric storage when it sets up metrics, right after the plugins' init:
    // metrics registered any later would have no storage.
    glue::metrics_register();
    g_ctx.active = true;
    return 0;
}

void cowguard_post_init() {
    if (!g_ctx.active) return;
    if (!Py_IsInitialized()) fail("the python plugin did not initialize Python: nothing to guard");
    // Here, not at init: uWSGI has dropped privileges (uid/gid) by now, and no app is loaded yet.
    glue::cow_report_check_dir();
    gc::GilScope gil;
    fast_exit::pin_std_streams();  // before the python plugin replaces them (see fast_exit.h)
    gc::on_interpreter_ready(g_ctx);
    if (lazy_mode())
        log_line("lazy-apps: every worker loads its own app, so no app memory is shared; "
                 "cowguard freezes in each worker after its app loads");
}

// What the python plugin reuses for every request of each app and core (its default env allocator):
// the argument tuple it refills with PyTuple_SetItem, and the environ dict it clears.
std::vector<PyObject*> uwsgi_reused_objects() {
    std::vector<PyObject*> out;
    struct uwsgi_worker& w = uwsgi.workers[uwsgi.mywid];
    for (int i = 0; i < w.apps_cnt; i++) {
        struct uwsgi_app& app = w.apps[i];
        if (app.modifier1 != g_python.modifier) continue;
        for (int c = 0; c < uwsgi.cores; c++) {
            if (app.args && app.args[c]) out.push_back(static_cast<PyObject*>(app.args[c]));
            if (app.environ && app.environ[c]) out.push_back(static_cast<PyObject*>(app.environ[c]));
        }
    }
    return out;
}

void log_policy(const char* where) {
    char immortal[160];
    if (g_ctx.immortalize.run)
        snprintf(immortal, sizeof(immortal), "immortalized %llu objects in %.1f ms",
                 static_cast<unsigned long long>(g_ctx.immortal_objects), g_ctx.immortalize_ms);
    else
        snprintf(immortal, sizeof(immortal), "immortalize %s", g_ctx.immortalize.why.c_str());
    char holes[320] = "";
    if (g_ctx.fill_holes && g_ctx.holes.skipped.empty())
        snprintf(holes, sizeof(holes), ", filled %llu pymalloc holes (%.1f MB) in %.1f ms",
                 static_cast<unsigned long long>(g_ctx.holes.blocks), g_ctx.holes.bytes / 1048576.0, g_ctx.holes.ms);
    else if (g_ctx.fill_holes)
        snprintf(holes, sizeof(holes), ", holes not filled: %s", g_ctx.holes.skipped.c_str());
    if (g_ctx.fill_holes) {
        const holes::HeapFilled& h = g_ctx.heap_holes;
        size_t n = strlen(holes);
        if (h.skipped.empty())
            snprintf(holes + n, sizeof(holes) - n, ", filled %llu malloc holes (%.1f MB) in %.1f ms",
                     static_cast<unsigned long long>(h.blocks), h.bytes / 1048576.0, h.ms);
        else
            snprintf(holes + n, sizeof(holes) - n, ", malloc holes not filled: %s", h.skipped.c_str());
    }
    log_line("%s: froze %llu objects in %.1f ms (%d interpreter%s, %llu freed by the collection), %s%s; "
             "workers: gc %s, guard %s, fast exit %s",
             where, static_cast<unsigned long long>(g_ctx.freeze.frozen), g_ctx.freeze.ms, g_ctx.freeze.interpreters,
             g_ctx.freeze.interpreters == 1 ? "" : "s", static_cast<unsigned long long>(g_ctx.freeze.collected), immortal, holes,
             describe_gc(g_ctx.settings).c_str(), guard_name(g_ctx.settings.guard),
             g_ctx.settings.fast_exit ? "on" : "off");
}

void process_started() {
    glue::stats_after_fork();
    enter_process();
    WorkerSlot* slot = g_ctx.slot;
    if (slot) slot->start();
    gc::GilScope gil;
    collect_interpreters();
    // With lazy-apps the worker's app is not loaded yet: the GC stays off until the freeze.
    bool worker = g_ctx.process.role == Role::Worker;
    // The master's freeze count is this process's too: counting it again would walk the heap.
    int64_t known = g_ctx.freeze.interpreters > 0 ? static_cast<int64_t>(g_ctx.freeze.frozen) : -1;
    if (!(worker && lazy_mode() && g_ctx.settings.freeze)) gc::apply_worker_policy(g_ctx, known);
    if (slot) slot->publish(getpid());
    glue::between_process_started(g_ctx);
    // Last: the worker is set up as it serves, and it accepts nothing until this returns.
    if (worker && g_ctx.active) glue::warmup_worker_replay();
}

// The python plugin mounts `mount` apps in the master without taking the GIL (it does so only
// in workers), and with py-call-uwsgi-fork-hooks it has already let it go by then: a thread
// started at import then runs Python beside the new interpreter's import, and the master crashed
// (stock uWSGI too, seen here). Mounting with the GIL held is what CPython requires.
int wrapped_python_mount_app(char* mountpoint, char* app) {
    if (PyGILState_Check()) return g_python.mount_app(mountpoint, app);
    gc::GilScope gil;
    return g_python.mount_app(mountpoint, app);
}

void wrapped_python_post_fork() {
    if (g_ctx.active) reinit_python_after_fork();
    if (g_python.post_fork) g_python.post_fork();
    process_started();
}

// A worker that ends in the middle of a request (or hijacked): the signal that ends it may have
// interrupted anything, so both exit hooks do as the python plugin does and skip their work.
bool worker_busy_at_exit() {
    return uwsgi.workers[uwsgi.mywid].hijacked || uwsgi_worker_is_busy(uwsgi.mywid);
}

void wrapped_python_atexit() {
    // Parity with the python plugin: no Python exit path for a hijacked or busy worker, or async.
    if (uwsgi.mywid > 0 && (worker_busy_at_exit() || uwsgi.async > 1)) return;
    if (!Py_IsInitialized()) return;
    // A second signal (the master's SIGINT after a SIGTERM, say) would run uWSGI's handler, call
    // exit() again from inside this one and skip the rest of the handlers: the process is ending,
    // so hold every signal until _exit.
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, nullptr);
    PyGILState_Ensure();  // never released: this process ends below
    if (g_ctx.interps.empty()) collect_interpreters();
    fast_exit::run_python_exit_path(g_ctx.interps, uwsgi.skip_atexit, uwsgi.last_exit_code);
    // uwsgi_plugins_atexit() would call the request plugins after python's: call them here.
    for (int j = g_python.modifier + 1; j < 256; j++) {
        struct uwsgi_plugin* p = uwsgi.p[j];
        if (p && p != g_python.plugin && p->atexit && p->atexit != wrapped_python_atexit) p->atexit();
    }
    _exit(uwsgi.last_exit_code);
}

}  // namespace

extern "C" {

// Called by uWSGI (call-post-app) once every app is loaded: in the master, or in each worker
// with lazy-apps.
void cowguard_post_app(void) {
    if (!g_ctx.active) return;
    gc::GilScope gil;
    collect_interpreters();
    bool in_worker = uwsgi.mywid > 0;
    // The warmup: with the GC still off, before the freeze.
    glue::warmup_run();
    if (!g_ctx.settings.freeze) return;
    g_ctx.freeze = gc::freeze_all(g_ctx);
    if (g_ctx.immortalize.run) {
        immortal::Immortalized im = immortal::immortalize_all(g_ctx.interps, uwsgi_reused_objects());
        g_ctx.immortal_objects = im.objects;
        g_ctx.immortalize_ms = im.ms;
    }
    if (in_worker) {
        enter_process();
        gc::apply_worker_policy(g_ctx, static_cast<int64_t>(g_ctx.freeze.frozen));
        if (uwsgi.mywid == 1) log_policy("lazy-apps, worker 1");
    } else {
        if (g_ctx.fill_holes) holes::release_type_caches(g_ctx.interps);  // what it frees, the fill takes
        // Trim first: filling takes malloc's free chunks, the pages malloc_trim would give back
        // (forky: 36 MB of the 100 MB the trim test frees at import came back with the fill first).
        if (g_ctx.settings.trim) trim_heap();
        if (g_ctx.fill_holes) {  // last before the fork: nothing allocates after it
            g_ctx.holes = holes::fill(g_ctx.held_blocks);
            g_ctx.heap_holes = holes::fill_heap(g_ctx.held_blocks);
        }
        // Without a master, this process is worker 1 itself (and forks any other workers).
        log_policy(uwsgi.master_process ? "master" : "no master, before the workers start");
    }
}

// Called by uWSGI (after-request-hook) after every request, in the worker.
void cowguard_after_request(struct wsgi_request* wsgi_req) {
    if (!g_ctx.active) return;
    WorkerSlot* slot = g_ctx.slot;
    if (slot) {
        slot->figures.requests.fetch_add(1);
        // The master found this worker over a cowguard-reload-on-uss/pss limit.
        if (slot->figures.recycle_requested.load()) {
            slot->recycles.fetch_add(1);
            log_line("recycling worker %d (pid %d) after its request: over its memory limit (see above)", uwsgi.mywid,
                     static_cast<int>(getpid()));
            // Core marks the request done (and disarms harakiri) only after these hooks, where its
            // own reload-on-rss runs; do it here first, so the exit path sees an idle worker and
            // runs the atexit handlers, as after a reload-on-rss recycle.
            if (uwsgi.workers[uwsgi.mywid].harakiri > 0) set_harakiri(0);
            uwsgi.workers[uwsgi.mywid].cores[wsgi_req->async_id].in_request = 0;
            goodbye_cruel_world();
            return;
        }
    }
    if (g_ctx.settings.gc == GcPolicy::Between) glue::between_after_request(g_ctx);
    if (g_ctx.settings.gc != GcPolicy::Off) return;
    gc::GilScope gil;
    gc::check_after_request(g_ctx);
}

struct uwsgi_plugin cowguard_plugin = {};

}  // extern "C"

namespace {
// Filled at load time: C++ has no designated initializers for this many fields in C++17.
struct PluginTableInit {
    PluginTableInit() {
        cowguard_plugin.name = "cowguard";
        cowguard_plugin.options = g_options_table.data();
        cowguard_plugin.init = cowguard_init;
        cowguard_plugin.post_init = cowguard_post_init;
        cowguard_plugin.master_cycle = [] { if (g_ctx.active) glue::master_cycle(); };
        // uWSGI calls it in the master before a reload closes every descriptor, and at its exit.
        cowguard_plugin.master_cleanup = [] { if (g_ctx.active) glue::stats_cleanup(); };
        // In the master in every mode (lazy-apps included), after the apps it loads and before the fork.
        cowguard_plugin.postinit_apps = [] {
            if (!g_ctx.active || uwsgi.mywid != 0) return;
            gc::GilScope gil;
            fast_exit::flush_pinned_streams();  // what threads printed before the streams were replaced
            collect_interpreters();
            refuse_fork_hooks_with_sub_interpreters();
            count_threads_before_fork();
            glue::cow_report_setup_master();
        };
        cowguard_plugin.atexit = [] {
            if (!g_ctx.active) return;
            // Like the python plugin, no exit work for a busy worker (uWSGI's SIGSEGV handler calls
            // exit(), the interpreter may be in any state): only a line that says so.
            if (uwsgi.mywid > 0 && worker_busy_at_exit()) {
                glue::log_busy_exit_line();
                return;
            }
            glue::log_exit_line();
            glue::cow_report_at_exit();
        };
    }
} g_plugin_table_init;
}  // namespace
