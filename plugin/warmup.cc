// Warmup callables (see warmup.h).
#include <Python.h>

#include "cowguard/warmup.h"

#include <ctime>

namespace cowguard::warmup {

namespace {

double now_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

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

}  // namespace

Result run(const std::vector<std::string>& callables, bool stop_on_error) {
    Result r;
    double t0 = now_ms();
    for (const std::string& spec : callables) {
        if (call_one(spec)) continue;
        PyErr_Print();  // the traceback goes to uWSGI's log
        if (r.ok) r.failed = spec;
        r.ok = false;
        if (stop_on_error) break;
    }
    r.ms = now_ms() - t0;
    return r;
}

}  // namespace cowguard::warmup
