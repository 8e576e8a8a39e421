// The `cowguard` Python module (see pymodule.h).
#include <Python.h>

#include "cowguard/pymodule.h"

#include <unistd.h>

#include "cowguard/cow_report.h"
#include "cowguard/version.h"

namespace cowguard::pymodule {

namespace {

const WorkerSlot* g_slot = nullptr;
uint64_t g_immortal_objects = 0;
double g_immortalize_ms = 0;

// Python so it reads like what a user would write; kept out of any request path.
constexpr const char kDjangoWarmup[] = R"PY(
def django_warmup():
    """Builds what Django builds lazily on first requests, in the master, before the freeze:
    every URL pattern resolved and reversed, every template compiled, translations loaded;
    then closes the database connections so that none crosses the fork."""
    from django.conf import settings
    from django.db import connections
    from django.template import engines
    from django.template.loaders.filesystem import Loader as _FsLoader
    from django.urls import URLPattern, URLResolver, get_resolver, reverse, NoReverseMatch
    from django.utils import translation
    import os

    resolver = get_resolver()
    resolver._populate()
    counts = {"urls": 0, "templates": 0}

    def walk(patterns, prefix):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                counts["urls"] += 1
                if p.name:
                    try:
                        reverse(p.name)
                    except NoReverseMatch:
                        pass
                route = prefix + str(p.pattern)
                if "<" not in route and "(" not in route and "\\" not in route:
                    try:
                        resolver.resolve("/" + route.lstrip("^").rstrip("$"))
                    except Exception:
                        pass
    walk(resolver.url_patterns, "")

    for engine in engines.all():
        dirs = list(getattr(engine, "dirs", []))
        try:
            template_dirs = engine.engine.template_dirs
        except AttributeError:
            template_dirs = dirs
        for d in template_dirs:
            for root, _, files in os.walk(str(d)):
                for f in files:
                    name = os.path.relpath(os.path.join(root, f), str(d))
                    try:
                        engine.get_template(name)
                        counts["templates"] += 1
                    except Exception:
                        pass

    if settings.USE_I18N:
        for code, _ in settings.LANGUAGES:
            translation.activate(code)
            translation.gettext("warmup")
        translation.deactivate()

    for conn in connections.all():
        conn.close()
    return counts
)PY";

PyObject* py_stats(PyObject*, PyObject*) {
    PyObject* d = PyDict_New();
    if (!d) return nullptr;
    auto put = [d](const char* k, PyObject* v) {
        if (v) {
            PyDict_SetItemString(d, k, v);
            Py_DECREF(v);
        }
    };
    put("pid", PyLong_FromLong(getpid()));
    put("version", PyUnicode_FromString(COWGUARD_VERSION));
    put("immortal_objects", PyLong_FromUnsignedLongLong(g_immortal_objects));
    put("immortalize_ms", PyFloat_FromDouble(g_immortalize_ms));
    if (!g_slot) return d;
    const WorkerSlot& s = *g_slot;
    auto u = [](const std::atomic<uint64_t>& a) { return PyLong_FromUnsignedLongLong(a.load(std::memory_order_relaxed)); };
    auto i = [](const std::atomic<int64_t>& a) { return PyLong_FromLongLong(a.load(std::memory_order_relaxed)); };
    put("requests", u(s.requests));
    put("uss", i(s.uss));
    put("pss", i(s.pss));
    put("shared", i(s.shared));
    put("swap", i(s.swap));
    put("minflt", i(s.minflt));
    put("majflt", i(s.majflt));
    put("peak_private", i(s.peak_private));
    put("recycles", u(s.recycles));
    PyObject* gc = PyDict_New();
    if (gc) {
        auto gput = [gc](const char* k, PyObject* v) {
            if (v) {
                PyDict_SetItemString(gc, k, v);
                Py_DECREF(v);
            }
        };
        gput("enabled", PyBool_FromLong(s.gc_enabled.load(std::memory_order_relaxed)));
        gput("thresholds", Py_BuildValue("(LLL)", static_cast<long long>(s.threshold[0].load()),
                                         static_cast<long long>(s.threshold[1].load()),
                                         static_cast<long long>(s.threshold[2].load())));
        gput("frozen", u(s.frozen));
        gput("collections", Py_BuildValue("(KKK)", static_cast<unsigned long long>(s.collections[0].load()),
                                          static_cast<unsigned long long>(s.collections[1].load()),
                                          static_cast<unsigned long long>(s.collections[2].load())));
        gput("collected", u(s.collected));
        gput("uncollectable", u(s.uncollectable));
        gput("time_ms", PyFloat_FromDouble(static_cast<double>(s.gc_time_ns.load()) / 1e6));
        gput("blocked_calls", u(s.blocked_calls));
        gput("restored", u(s.restored));
        put("gc", gc);
    }
    return d;
}

PyObject* py_cow_report(PyObject*, PyObject*) { return cow_report::build_dict(); }

PyMethodDef g_methods[] = {
    {"stats", py_stats, METH_NOARGS, "This process's cowguard figures (memory as last sampled by the master, GC counters)."},
    {"cow_report", py_cow_report, METH_NOARGS,
     "What this process copied: per mapping kind and per type of frozen object, bytes on private vs shared pages."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef g_module = {PyModuleDef_HEAD_INIT, "cowguard", "cowguard: copy-on-write guard for uWSGI workers.", -1,
                        g_methods, nullptr, nullptr, nullptr, nullptr};

PyObject* init_module() {
    PyObject* m = PyModule_Create(&g_module);
    if (!m) return nullptr;
    PyModule_AddStringConstant(m, "__version__", COWGUARD_VERSION);
    PyObject* globals = PyModule_GetDict(m);  // borrowed
    PyObject* builtins = PyEval_GetBuiltins();
    if (builtins) PyDict_SetItemString(globals, "__builtins__", builtins);
    PyObject* r = PyRun_String(kDjangoWarmup, Py_file_input, globals, globals);
    if (!r) {
        Py_DECREF(m);
        return nullptr;
    }
    Py_DECREF(r);
    return m;
}

}  // namespace

void register_module() { PyImport_AppendInittab("cowguard", init_module); }
void set_slot(const WorkerSlot* slot) { g_slot = slot; }

void set_immortalized(uint64_t objects, double ms) {
    g_immortal_objects = objects;
    g_immortalize_ms = ms;
}

}  // namespace cowguard::pymodule
