// Warmup callables and request replay, CPython side (see warmup.h).
#include <Python.h>

#include "cowguard/warmup.h"
#include "cowguard/measure.h"

#include <ctime>

namespace cowguard::warmup {

namespace {

// Imports `module` and calls `callable` (a dotted attribute path) with no arguments.
bool call_one(const std::string& spec) {
    size_t colon = spec.find(':');
    std::string module = spec.substr(0, colon), attrs = spec.substr(colon + 1);
    PyObject* obj = PyImport_ImportModule(module.c_str());
    size_t start = 0;
    while (obj) {
        size_t dot = attrs.find('.', start);
        std::string name = attrs.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        PyObject* next = PyObject_GetAttrString(obj, name.c_str());
        Py_DECREF(obj);
        obj = next;
        if (dot == std::string::npos) break;
        start = dot + 1;
    }
    if (!obj) return false;
    PyObject* res = PyObject_CallNoArgs(obj);
    Py_DECREF(obj);
    Py_XDECREF(res);
    return res != nullptr;
}

// A new reference to cowguard.<name> in the current interpreter.
PyObject* helper(const char* name) {
    PyObject* m = PyImport_ImportModule("cowguard");
    if (!m) return nullptr;
    PyObject* f = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return f;
}

// ((where, method, path, query, ((name, value), ...)), ...) for cowguard._replay.
PyObject* request_tuples(const std::vector<RequestFile>& files) {
    PyObject* list = PyList_New(0);
    for (const RequestFile& f : files) {
        for (const Request& r : f.requests) {
            if (!list) return nullptr;
            PyObject* headers = PyTuple_New(static_cast<Py_ssize_t>(r.headers.size()));
            if (!headers) {
                Py_CLEAR(list);
                return nullptr;
            }
            for (size_t i = 0; i < r.headers.size(); i++) {
                PyObject* pair = Py_BuildValue("(ss)", r.headers[i].first.c_str(), r.headers[i].second.c_str());
                if (!pair) {
                    Py_DECREF(headers);
                    Py_CLEAR(list);
                    return nullptr;
                }
                PyTuple_SET_ITEM(headers, static_cast<Py_ssize_t>(i), pair);
            }
            std::string where = f.path + ":" + std::to_string(r.line);
            PyObject* t = Py_BuildValue("(ssssN)", where.c_str(), r.method.c_str(), r.path.c_str(), r.query.c_str(),
                                        headers);
            if (!t || PyList_Append(list, t) < 0) Py_CLEAR(list);
            Py_XDECREF(t);
        }
    }
    return list;
}

uint64_t count_of(PyObject* counts, const char* key) {
    PyObject* v = PyDict_GetItemString(counts, key);  // borrowed
    return v ? PyLong_AsUnsignedLongLong(v) : 0;
}

}  // namespace

ReplayOutcome replay(PyObject* app, PyObject* base, const std::vector<RequestFile>& files, int rounds) {
    ReplayOutcome r;
    double t0 = mono_ms();
    PyObject* fn = helper("_replay");
    PyObject* requests = fn ? request_tuples(files) : nullptr;
    PyObject* counts = requests ? PyObject_CallFunction(fn, "OOiO", app, requests, rounds, base) : nullptr;
    r.ms = mono_ms() - t0;
    if (counts && PyDict_Check(counts)) {
        const char* classes[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
        for (int i = 0; i < 5; i++) r.answers[i] = count_of(counts, classes[i]);
        r.other = count_of(counts, "other");
        r.raised = count_of(counts, "raised");
    } else {
        r.ok = false;
        PyErr_Print();
    }
    Py_XDECREF(counts);
    Py_XDECREF(requests);
    Py_XDECREF(fn);
    return r;
}

int close_django_connections() {
    int closed = -1;
    if (PyObject* fn = helper("_after_replay")) {
        if (PyObject* res = PyObject_CallNoArgs(fn)) {
            closed = PyObject_IsTrue(res);
            Py_DECREF(res);
        }
        Py_DECREF(fn);
    }
    if (closed < 0) PyErr_Print();
    return closed;
}

RunOutcome run(const std::vector<std::string>& callables, bool stop_on_error) {
    RunOutcome r;
    double t0 = mono_ms();
    for (const std::string& spec : callables) {
        if (call_one(spec)) continue;
        PyErr_Print();  // the traceback goes to uWSGI's log
        if (r.ok) r.failed = spec;
        r.ok = false;
        if (stop_on_error) break;
    }
    r.ms = mono_ms() - t0;
    return r;
}

}  // namespace cowguard::warmup
