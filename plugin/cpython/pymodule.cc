// The `cowguard` Python module (see pymodule.h).
#include <Python.h>

#include "cowguard/pymodule.h"

#include <unistd.h>

#include "cowguard/context.h"
#include "cowguard/cow_report.h"
#include "cowguard/figures.h"
#include "cowguard/version.h"

namespace cowguard::pymodule {

namespace {

// Bound by register_module(): stats() is called by Python without a user pointer.
const Context* g_ctx = nullptr;

// Python so it reads like what a user would write; kept out of any request path: django_warmup
// (a ready warmup callable), _replay and _after_replay (cowguard-warmup-requests, warmup_glue.cc).
constexpr const char kWarmupHelpers[] = R"PY(
def django_warmup():
    """Builds what Django builds lazily on first requests, in the master, before the freeze: the
    URL resolver (every pattern resolved and reversed where it can be), the project's templates
    compiled, the translation catalogs of the languages the project serves; then closes the
    database connections so that none crosses the fork.

    Only a project that cannot be set up (settings, apps, root URLconf) raises. A URL pattern, a
    template or a language that fails is skipped, counted and named once in the log; one summary
    line says what was warmed and what was skipped."""
    import os
    import sys
    import django
    from django.apps import apps
    from django.conf import settings

    def log(line):
        print("[cowguard] django_warmup: " + line, file=sys.stderr, flush=True)

    def why(exc):
        text = str(exc).strip().splitlines()
        return type(exc).__name__ + (": " + text[0] if text else "")

    warmed = {"URL patterns": 0, "templates": 0, "languages": []}
    skipped = {"URL patterns": [], "templates": [], "languages": []}

    def skip(kind, name, exc):
        skipped[kind].append(name)
        log("skipped %s %s: %s" % (kind[:-1], name, why(exc)))

    # The project itself: a failure here is fatal (every request would fail the same way).
    settings.INSTALLED_APPS  # noqa: B018 - imports the settings module
    if not apps.ready:
        django.setup()
    from django.urls import NoReverseMatch, Resolver404, URLPattern, URLResolver, get_resolver, reverse
    resolver = get_resolver()
    resolver.url_patterns  # noqa: B018 - imports the root URLconf and what it includes

    # URL patterns, each in its own try: resolving imports the view, reversing fills the
    # resolver's reverse dictionaries. Those are built from every pattern at once: when that
    # fails (a URLconf that cannot be imported, say), reverse() fails for every name alike, so
    # it is named once and not tried again per pattern.
    try:
        resolver._populate()
        reversible = True
    except Exception as exc:
        reversible = False
        log("skipped reverse() of URL names: %s" % why(exc))

    def walk(patterns, prefix):
        for p in patterns:
            route = prefix + str(p.pattern)
            try:
                if isinstance(p, URLResolver):
                    walk(p.url_patterns, route)
                    continue
                if not isinstance(p, URLPattern):
                    continue
                p.callback  # noqa: B018 - imports a view given by its dotted path
                if p.name and reversible:
                    try:
                        reverse(p.name)
                    except NoReverseMatch:
                        pass  # needs arguments
                if "<" not in route and "(" not in route and "\\" not in route:
                    try:
                        resolver.resolve("/" + route.lstrip("^").rstrip("$"))
                    except Resolver404:
                        pass
                warmed["URL patterns"] += 1
            except Exception as exc:
                skip("URL patterns", "'%s'" % route, exc)
    walk(resolver.url_patterns, "")

    # Templates: the project's (its template DIRS and its installed apps' templates/ directories,
    # except those of django.contrib's apps, such as the admin's hundred), each in its own try.
    from django.template import engines
    contrib = os.path.dirname(django.__file__) + os.sep
    for engine in engines.all():
        for d in getattr(engine, "template_dirs", getattr(engine, "dirs", [])):
            d = str(d)
            if d.startswith(contrib):
                continue
            for root, dirs, files in os.walk(d):
                dirs[:] = sorted(x for x in dirs if not x.startswith("."))
                for f in sorted(files):
                    if f.startswith(".") or f.endswith("~"):
                        continue
                    name = os.path.relpath(os.path.join(root, f), d)
                    try:
                        engine.get_template(name)
                        warmed["templates"] += 1
                    except Exception as exc:
                        skip("templates", name, exc)

    # Translations: LANGUAGE_CODE and the languages the project lists in its own LANGUAGES (not
    # Django's default list of every language it knows), each in its own try.
    if settings.USE_I18N:
        from django.utils import translation
        codes = [settings.LANGUAGE_CODE]
        if settings.is_overridden("LANGUAGES"):
            codes += [code for code, _ in settings.LANGUAGES]
        for code in dict.fromkeys(codes):
            try:
                translation.activate(code)
                translation.gettext("warmup")
                warmed["languages"].append(code)
            except Exception as exc:
                skip("languages", code, exc)
            finally:
                translation.deactivate()

    from django.db import connections
    connections.close_all()

    def n_of(n, kind):
        return "%d %s" % (n, kind if n != 1 else kind[:-1])
    languages = " ".join(warmed["languages"]) if settings.USE_I18N else "USE_I18N = False"
    not_warmed = ["%s (%s)" % (n_of(len(v), k), " ".join(v)) for k, v in skipped.items() if v]
    if not reversible:
        not_warmed.append("reverse() of URL names")
    log("warmed %s, %s, %s (%s); skipped %s" % (
        n_of(warmed["URL patterns"], "URL patterns"), n_of(warmed["templates"], "templates"),
        n_of(len(warmed["languages"]), "languages"), languages, ", ".join(not_warmed) or "nothing"))
    return {"warmed": warmed, "skipped": skipped}


def _replay(app, requests, rounds, base):
    """Serves `requests` ((where, method, path, query, headers), ...) to the WSGI callable `app`,
    `rounds` times over, in this process and with no socket: a PEP 3333 environ built on `base`
    (its SCRIPT_NAME, the app's mountpoint, is a prefix of every path),
    an empty wsgi.input, the body consumed and the iterable closed. Returns the number of answers
    per status class and of requests that raised; a request that raises is logged once (its
    traceback, then a line naming it)."""
    import io
    import sys
    import traceback
    from urllib.parse import unquote_to_bytes

    import threading

    counts = {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0, "raised": 0}
    logged = set()
    threads_before = set(threading.enumerate())

    def write(data):
        pass  # the legacy write() callable: the body goes nowhere

    for _ in range(rounds):
        for where, method, path, query, headers in requests:
            environ = dict(base)
            script_name = base.get("SCRIPT_NAME", "")
            environ.update({
                "REQUEST_METHOD": method,
                "PATH_INFO": unquote_to_bytes(path[len(script_name):]).decode("latin-1"),
                "QUERY_STRING": query,
                "REQUEST_URI": path + ("?" + query if query else ""),
                "SERVER_PROTOCOL": "HTTP/1.1",
                "wsgi.input": io.BytesIO(b""),
            })
            for name, value in headers:
                key = name.upper().replace("-", "_")
                environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
            status = []

            def start_response(s, h, exc_info=None):
                status[:] = [s]
                return write
            try:
                body = app(environ, start_response)
                try:
                    for _chunk in body:
                        pass
                finally:
                    close = getattr(body, "close", None)
                    if close is not None:
                        close()
            except Exception as exc:
                counts["raised"] += 1
                if where not in logged:
                    logged.add(where)
                    traceback.print_exc()
                    text = str(exc).strip().splitlines()
                    print("[cowguard] warmup replay: %s %s %s raised %s%s (traceback above)" % (
                        where, method, environ["REQUEST_URI"], type(exc).__name__, ": " + text[0] if text else ""),
                        file=sys.stderr, flush=True)
                continue
            code = status[0].split(" ", 1)[0] if status else ""
            cls = code[0] + "xx" if len(code) == 3 and code.isdigit() and code[0] in "12345" else "other"
            counts[cls] += 1
    # A thread does not cross the fork: what it was doing is lost to the workers.
    started = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    if started:
        print("[cowguard] warmup replay: %d thread%s the app started still run%s in the master (%s); none of them "
              "exists in the workers" % (len(started), "s" if len(started) > 1 else "", "" if len(started) > 1 else "s",
                                         ", ".join(t.name for t in started)), file=sys.stderr, flush=True)
    return counts


def _after_replay():
    """Closes Django's database connections when Django is loaded; True if it did."""
    import sys
    db = sys.modules.get("django.db")
    if db is None or not hasattr(db, "connections"):
        return False
    db.connections.close_all()
    return True
)PY";

// Sets d[key] = value and drops the reference (a null value, from a failed allocation, is skipped).
void put(PyObject* d, const char* key, PyObject* value) {
    if (!value) return;
    PyDict_SetItemString(d, key, value);
    Py_DECREF(value);
}

// One row of kGcFigures: an int (a float of ms), or a tuple of three.
PyObject* figure_value(const SlotFigures& s, const GcFigure& f) {
    auto one = [&](int g) {
        return f.unit == FigureUnit::Nanoseconds ? PyFloat_FromDouble(ns_to_ms(counted(s, f, g)))
                                                 : PyLong_FromUnsignedLongLong(counted(s, f, g));
    };
    if (f.value) return one(0);
    PyObject* t = PyTuple_New(3);
    for (int g = 0; t && g < 3; g++) {
        PyObject* v = one(g);
        if (!v) {
            Py_DECREF(t);
            return nullptr;
        }
        PyTuple_SET_ITEM(t, g, v);  // steals v
    }
    return t;
}

// Keys and order as the stats document's "gc" object.
PyObject* gc_dict(const SlotFigures& s) {
    PyObject* gc = PyDict_New();
    if (!gc) return nullptr;
    put(gc, "enabled", PyBool_FromLong(s.gc_enabled.load() != 0));
    put(gc, "thresholds", Py_BuildValue("(LLL)", static_cast<long long>(s.threshold[0].load()),
                                        static_cast<long long>(s.threshold[1].load()),
                                        static_cast<long long>(s.threshold[2].load())));
    for (const GcFigure& f : kGcFigures) put(gc, f.key, figure_value(s, f));
    GcPhases phases = gc_phases(s);
    for (const auto& [key, phase] : {std::pair<const char*, const GcPhase*>{"in_request", &phases.in_request},
                                     {"after_request", &phases.after_request}})
        put(gc, key, Py_BuildValue("{s:(KKK),s:(ddd)}", "collections",
                                   static_cast<unsigned long long>(phase->collections[0]),
                                   static_cast<unsigned long long>(phase->collections[1]),
                                   static_cast<unsigned long long>(phase->collections[2]), "time_ms",
                                   phase->time_ms[0], phase->time_ms[1], phase->time_ms[2]));
    return gc;
}

PyObject* py_stats(PyObject*, PyObject*) {
    PyObject* d = PyDict_New();
    if (!d) return nullptr;
    put(d, "pid", PyLong_FromLong(getpid()));
    put(d, "version", PyUnicode_FromString(COWGUARD_VERSION));
    put(d, "immortal_objects", PyLong_FromUnsignedLongLong(g_ctx ? g_ctx->immortal_objects : 0));
    put(d, "immortalize_ms", PyFloat_FromDouble(g_ctx ? g_ctx->immortalize_ms : 0));
    if (!g_ctx || !g_ctx->slot) return d;
    SlotFigures s = g_ctx->slot->figures;  // one read
    put(d, "requests", PyLong_FromUnsignedLongLong(s.requests.load()));
    put(d, "uss", PyLong_FromLongLong(s.uss.load()));
    put(d, "pss", PyLong_FromLongLong(s.pss.load()));
    put(d, "shared", PyLong_FromLongLong(s.shared.load()));
    put(d, "swap", PyLong_FromLongLong(s.swap.load()));
    put(d, "minflt", PyLong_FromLongLong(s.minflt.load()));
    put(d, "majflt", PyLong_FromLongLong(s.majflt.load()));
    put(d, "peak_private", PyLong_FromLongLong(s.peak_private.load()));
    put(d, "recycles", PyLong_FromUnsignedLongLong(g_ctx->slot->recycles.load()));
    put(d, "gc", gc_dict(s));
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
    PyObject* r = PyRun_String(kWarmupHelpers, Py_file_input, globals, globals);
    if (!r) {
        Py_DECREF(m);
        return nullptr;
    }
    Py_DECREF(r);
    return m;
}

}  // namespace

void register_module(const Context& ctx) {
    g_ctx = &ctx;
    PyImport_AppendInittab("cowguard", init_module);
}

}  // namespace cowguard::pymodule
