// CPython side of cowguard: early disable, freeze, worker policy, guard. See gc_control.h.
#include "cowguard/gc_control.h"
#include "cowguard/context.h"
#include "cowguard/measure.h"
#include "cowguard/result.h"

#include <cstring>
#include <ctime>
#include <mutex>
#include <string>

namespace cowguard::gc {

namespace {

// The process's context, bound once by on_interpreter_ready(): the guard's wrappers and the gc
// callback are called by CPython without a user pointer, so they reach it here.
Context* g_ctx = nullptr;

Context& ctx() { return *g_ctx; }

#define LOG(...) \
    do { if (g_ctx && g_ctx->log) g_ctx->log(__VA_ARGS__); } while (0)

// Runs fn in the interpreter of ts (GIL held); see InterpreterScope.
template <typename Fn>
void in_interpreter(PyThreadState* ts, Fn&& fn) {
    InterpreterScope scope(ts);
    fn();
}

// gc.<name>, bypassing the guard's wrapper when one is installed (our own calls are never blocked).
PyObject* gc_function(const char* name);

PyObject* call_gc(const char* name, PyObject* args = nullptr) {
    PyObject* fn = gc_function(name);
    if (!fn) return nullptr;
    PyObject* res = args ? PyObject_CallObject(fn, args) : PyObject_CallNoArgs(fn);
    Py_DECREF(fn);
    if (!res) {
        LOG("gc.%s() failed:", name);
        PyErr_Print();
    }
    return res;
}

void set_threshold(const GcThresholds& t) {
    PyObject* args = (t.t2 >= 0)   ? Py_BuildValue("(lll)", t.t0, t.t1, t.t2)
                     : (t.t1 >= 0) ? Py_BuildValue("(ll)", t.t0, t.t1)
                                   : Py_BuildValue("(l)", t.t0);
    Py_XDECREF(call_gc("set_threshold", args));
    Py_XDECREF(args);
}

void record_thresholds() {
    if (!ctx().slot) return;
    PyObject* t = call_gc("get_threshold");
    if (t && PyTuple_Check(t) && PyTuple_GET_SIZE(t) == 3)
        for (int i = 0; i < 3; i++) ctx().slot->figures.threshold[i].store(PyLong_AsLong(PyTuple_GET_ITEM(t, i)));
    Py_XDECREF(t);
    PyErr_Clear();
}

uint64_t freeze_count_here() {
    PyObject* n = call_gc("get_freeze_count");
    uint64_t v = n ? PyLong_AsUnsignedLongLong(n) : 0;
    Py_XDECREF(n);
    PyErr_Clear();
    return v;
}

// ---- the guard ------------------------------------------------------------------------------

std::string caller_site() {
    PyFrameObject* frame = PyEval_GetFrame();  // borrowed: the Python code that called us
    if (!frame) return "native code (no Python frame)";
    PyCodeObject* code = PyFrame_GetCode(frame);
    const char* file = code ? PyUnicode_AsUTF8(code->co_filename) : nullptr;
    std::string site = std::string(file ? file : "?") + ":" + std::to_string(PyFrame_GetLineNumber(frame));
    Py_XDECREF(code);
    PyErr_Clear();
    return site;
}

// Counts the call, logs it once per call site, and says whether to let it through.
bool guard_allows(const char* what) {
    const Settings& settings = ctx().settings;
    bool block = settings.guard == GuardMode::Block;
    if (ctx().slot) ctx().slot->figures.blocked_calls.fetch_add(1);
    std::string site = caller_site();
    if (ctx().gc.logged_sites.insert(std::string(what) + "@" + site).second)
        LOG("%s gc.%s() called from %s (pid %d; cowguard-guard = %s; logged once per call site)",
            block ? "blocked" : "allowed", what, site.c_str(), static_cast<int>(getpid()), guard_name(settings.guard));
    return !block;
}

// Each wrapper keeps the original gc function as its `self`.
PyObject* guarded_call(PyObject* orig, PyObject* args, PyObject* kwargs, const char* what) {
    if (!guard_allows(what)) Py_RETURN_NONE;
    return PyObject_Call(orig, args, kwargs);
}

PyObject* guarded_enable(PyObject* self, PyObject* args, PyObject* kw) { return guarded_call(self, args, kw, "enable"); }
PyObject* guarded_unfreeze(PyObject* self, PyObject* args, PyObject* kw) { return guarded_call(self, args, kw, "unfreeze"); }
PyObject* guarded_set_threshold(PyObject* self, PyObject* args, PyObject* kw) {
    if (ctx().settings.gc != GcPolicy::Off) return PyObject_Call(self, args, kw);
    return guarded_call(self, args, kw, "set_threshold");
}

PyMethodDef g_guard_defs[] = {
    {"enable", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(guarded_enable)), METH_VARARGS | METH_KEYWORDS,
     "gc.enable(), guarded by cowguard: the GC policy of this uWSGI instance is set by cowguard-gc."},
    {"unfreeze", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(guarded_unfreeze)), METH_VARARGS | METH_KEYWORDS,
     "gc.unfreeze(), guarded by cowguard: unfreezing would let collections write to every shared object."},
    {"set_threshold", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(guarded_set_threshold)), METH_VARARGS | METH_KEYWORDS,
     "gc.set_threshold(), guarded by cowguard when cowguard-gc = off."},
    {nullptr, nullptr, 0, nullptr}};

bool is_guard_wrapper(PyObject* fn) {
    if (!PyCFunction_Check(fn)) return false;
    PyCFunction meth = PyCFunction_GET_FUNCTION(fn);
    for (PyMethodDef* d = g_guard_defs; d->ml_name; d++)
        if (d->ml_meth == meth) return true;
    return false;
}

PyObject* gc_function(const char* name) {
    PyObject* mod = PyImport_ImportModule("gc");
    if (!mod) return nullptr;
    PyObject* fn = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    if (fn && is_guard_wrapper(fn)) {
        PyObject* orig = PyCFunction_GET_SELF(fn);
        Py_INCREF(orig);
        Py_DECREF(fn);
        return orig;
    }
    return fn;
}

// Replaces gc.enable, gc.unfreeze and gc.set_threshold in the current interpreter's gc module.
void install_guard_here() {
    if (ctx().settings.guard == GuardMode::Allow) return;
    PyInterpreterState* interp = PyInterpreterState_Get();
    if (!ctx().gc.guarded.insert(interp).second) return;
    PyObject* mod = PyImport_ImportModule("gc");
    if (!mod) {
        PyErr_Print();
        return;
    }
    for (PyMethodDef* d = g_guard_defs; d->ml_name; d++) {
        PyObject* orig = PyObject_GetAttrString(mod, d->ml_name);
        if (!orig) {
            PyErr_Clear();
            continue;
        }
        PyObject* wrapper = PyCFunction_NewEx(d, orig, nullptr);
        Py_DECREF(orig);
        if (!wrapper || PyObject_SetAttrString(mod, d->ml_name, wrapper) < 0) PyErr_Print();
        Py_XDECREF(wrapper);
    }
    Py_DECREF(mod);
}

// ---- sub-interpreters: GC off from their first import --------------------------------------

int audit_hook(const char* event, PyObject*, void* user_data) {
    // "import" is raised for every module imported for the first time, in the importing
    // interpreter: the earliest point where a new sub-interpreter runs code of its own.
    auto& gc = static_cast<Context*>(user_data)->gc;
    if (!gc.loading || event[0] != 'i' || std::strcmp(event, "import") != 0) return 0;
    PyInterpreterState* interp = PyInterpreterState_Get();
    if (gc.seen.insert(interp).second) PyGC_Disable();
    return 0;
}

// ---- GC figures for the stats (workers only) ------------------------------------------------

PyObject* gc_callback(PyObject*, PyObject* args) {
    const char* phase = nullptr;
    PyObject* info = nullptr;
    WorkerSlot* slot = ctx().slot;
    ProcessState& gc = ctx().gc;
    if (!slot || !PyArg_ParseTuple(args, "sO", &phase, &info)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (phase[0] == 's' && phase[2] == 'a') {  // "start"
        gc.collection_start_ns = mono_ns();
        Py_RETURN_NONE;
    }
    uint64_t elapsed = gc.collection_start_ns ? mono_ns() - gc.collection_start_ns : 0;
    gc.collection_start_ns = 0;
    long gen = -1, collected = 0, uncollectable = 0;
    if (PyDict_Check(info)) {
        PyObject* v;
        if ((v = PyDict_GetItemString(info, "generation"))) gen = PyLong_AsLong(v);
        if ((v = PyDict_GetItemString(info, "collected"))) collected = PyLong_AsLong(v);
        if ((v = PyDict_GetItemString(info, "uncollectable"))) uncollectable = PyLong_AsLong(v);
    }
    PyErr_Clear();
    SlotFigures& f = slot->figures;
    if (gen >= 0 && gen < 3) {
        f.collections[gen].fetch_add(1);
        f.gen_time_ns[gen].fetch_add(elapsed);
        if (gc.collecting_between) {
            f.after_collections[gen].fetch_add(1);
            f.after_time_ns[gen].fetch_add(elapsed);
        }
    }
    if (collected > 0) f.collected.fetch_add(static_cast<uint64_t>(collected));
    if (uncollectable > 0) f.uncollectable.fetch_add(static_cast<uint64_t>(uncollectable));
    f.gc_time_ns.fetch_add(elapsed);
    Py_RETURN_NONE;
}

PyMethodDef g_callback_def = {"cowguard_gc_callback", gc_callback, METH_VARARGS,
                              "Counts collections for cowguard's per-worker stats."};

void install_callback_here() {
    PyObject* mod = PyImport_ImportModule("gc");
    PyObject* callbacks = mod ? PyObject_GetAttrString(mod, "callbacks") : nullptr;
    PyObject* cb = PyCFunction_New(&g_callback_def, nullptr);
    if (!callbacks || !cb || PyList_Append(callbacks, cb) < 0) PyErr_Print();
    Py_XDECREF(cb);
    Py_XDECREF(callbacks);
    Py_XDECREF(mod);
}

// ---- cowguard-gc = between ----------------------------------------------------------------

// gc.get_count() of the current interpreter, into `now`.
Status read_counts(between::Observation& now) {
    PyObject* c = call_gc("get_count");
    bool ok = c && PyTuple_Check(c) && PyTuple_GET_SIZE(c) == 3;
    for (int g = 0; ok && g < 3; g++) now.count[g] = PyLong_AsLong(PyTuple_GET_ITEM(c, g));
    Py_XDECREF(c);
    if (PyErr_Occurred()) ok = false;
    PyErr_Clear();
    if (!ok) return fail_with("gc.get_count() did not answer three integers");
    return {};
}

int64_t sampled_private() { return ctx().slot ? ctx().slot->figures.uss.load() : 0; }

// The tick of a mule or spooler: a Python thread (so CPython stops it at finalization like any
// daemon thread) that sleeps with the GIL released, then asks what a worker asks after a
// request. It takes the GIL once a tick, like a thread of the app would.
PyObject* tick_loop(PyObject*, PyObject*) {
    const ProcessState& gc = ctx().gc;
    auto whole = static_cast<time_t>(gc.tick_s);
    timespec ts{whole, static_cast<long>((gc.tick_s - static_cast<double>(whole)) * 1e9)};
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        nanosleep(&ts, nullptr);
        Py_END_ALLOW_THREADS
        collect_between(ctx(), gc.tick_harakiri_left_s ? gc.tick_harakiri_left_s() : -1);
    }
}

PyMethodDef g_tick_def = {"cowguard_gc_tick", tick_loop, METH_NOARGS,
                          "cowguard-gc = between in a mule or spooler: collects on a timer, as workers do after requests."};

}  // namespace

InterpreterScope::InterpreterScope(PyThreadState* ts) : prev_(PyThreadState_Get()) {
    if (!ts || ts->interp == prev_->interp) return;
    if (ts->thread_id != PyThread_get_thread_ident()) ts = temporary_ = PyThreadState_New(ts->interp);
    PyThreadState_Swap(ts);
    swapped_ = true;
}

InterpreterScope::~InterpreterScope() {
    if (!swapped_) return;
    PyThreadState_Swap(prev_);
    if (temporary_) {
        PyThreadState_Clear(temporary_);
        PyThreadState_Delete(temporary_);
    }
}

void on_interpreter_ready(Context& context) {
    g_ctx = &context;
    context.main_thread = PyThreadState_Get();
    context.gc.seen.insert(context.main_thread->interp);
    if (context.settings.freeze) {
        PyGC_Disable();
        if (PySys_AddAuditHook(audit_hook, &context) < 0) PyErr_Print();
    }
    install_guard_here();
}

FreezeFigures freeze_all(Context& context) {
    FreezeFigures r;
    uint64_t t0 = mono_ns();
    for (PyThreadState* ts : context.interps) {
        in_interpreter(ts, [&] {
            if (context.settings.collect_before_freeze) {
                PyObject* n = call_gc("collect");  // gc.collect() works while the GC is disabled
                if (n) r.collected += PyLong_AsUnsignedLongLong(n);
                Py_XDECREF(n);
                PyErr_Clear();
            }
            Py_XDECREF(call_gc("freeze"));
            r.frozen += freeze_count_here();
            PyGC_Disable();  // the master keeps it off: nothing it allocates later is collected under the workers
            install_guard_here();
        });
        r.interpreters++;
    }
    context.gc.loading = false;
    r.ms = static_cast<double>(mono_ns() - t0) / 1e6;
    return r;
}

void apply_worker_policy(Context& context, int64_t known_frozen) {
    const std::vector<PyThreadState*>& interps = context.interps;
    const Settings& settings = context.settings;
    context.gc.loading = false;
    context.gc.logged_native_reenable = false;
    uint64_t frozen = 0;
    bool enabled = false;
    for (PyThreadState* ts : interps) {
        in_interpreter(ts, [&] {
            PyInterpreterState* interp = PyInterpreterState_Get();
            install_guard_here();
            if (context.gc.policy_applied.insert(interp).second && context.slot) install_callback_here();
            if (settings.gc == GcPolicy::Off) {
                PyGC_Disable();
                set_threshold(GcThresholds{0, -1, -1});
            } else {
                set_threshold(settings.thresholds);
                PyGC_Enable();
            }
            if (settings.gc == GcPolicy::Between && !context.gc.between) {
                between::Trigger trigger;
                trigger.threshold[0] = settings.between.t0;
                trigger.threshold[1] = settings.between.t1;
                trigger.threshold[2] = settings.between.t2;
                context.gc.between.emplace(trigger);
            }
            if (known_frozen < 0) frozen += freeze_count_here();
            if (ts == interps.front()) {
                enabled = PyGC_IsEnabled();
                record_thresholds();
            }
        });
    }
    if (known_frozen >= 0) frozen = static_cast<uint64_t>(known_frozen);
    if (context.slot) {
        context.slot->figures.frozen.store(frozen);
        context.slot->figures.gc_enabled.store(enabled ? 1 : 0);
    }
}

void check_after_request(Context& context) {
    if (context.settings.gc != GcPolicy::Off) return;
    for (PyThreadState* ts : context.interps) {
        in_interpreter(ts, [&] {
            if (!PyGC_IsEnabled()) return;
            PyGC_Disable();
            if (context.slot) context.slot->figures.restored.fetch_add(1);
            if (!context.gc.logged_native_reenable) {
                context.gc.logged_native_reenable = true;
                LOG("the GC was switched back on without gc.enable() (native code, e.g. PyGC_Enable()); "
                    "switched it off again as cowguard-gc = off asks (pid %d; logged once per process, counted in the stats)",
                    static_cast<int>(getpid()));
            }
        });
    }
}

void collect_between(Context& context, int64_t harakiri_left_s) {
    if (!context.gc.between) return;
    for (PyThreadState* ts : context.interps) {
        in_interpreter(ts, [&] {
            between::Observation now;
            if (!read_counts(now)) return;
            now.private_bytes = sampled_private();
            now.harakiri_left_s = harakiri_left_s;
            int gen = context.gc.between->decide(now);
            if (gen == between::kNone) return;
            PyObject* args = Py_BuildValue("(i)", gen);
            context.gc.collecting_between = true;
            Py_XDECREF(call_gc("collect", args));
            context.gc.collecting_between = false;
            Py_XDECREF(args);
            PyErr_Clear();
            context.gc.between->collected(sampled_private());
        });
    }
}

void start_between_tick(Context& context, double seconds, int64_t (*harakiri_left_s)()) {
    if (!context.gc.between || context.gc.tick_started || context.interps.empty()) return;
    context.gc.tick_started = true;
    context.gc.tick_s = seconds;
    context.gc.tick_harakiri_left_s = harakiri_left_s;
    in_interpreter(context.interps.front(), [] {
        PyObject* thread = PyImport_ImportModule("_thread");
        PyObject* fn = PyCFunction_New(&g_tick_def, nullptr);
        PyObject* res = thread && fn ? PyObject_CallMethod(thread, "start_new_thread", "(O())", fn) : nullptr;
        if (!res) {
            LOG("cowguard-gc = between: could not start the collection tick (pid %d):", static_cast<int>(getpid()));
            PyErr_Print();
        }
        Py_XDECREF(res);
        Py_XDECREF(fn);
        Py_XDECREF(thread);
    });
}

}  // namespace cowguard::gc
