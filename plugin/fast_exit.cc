// Fast exit (see fast_exit.h). Mirrors the python plugin's uwsgi.atexit call, then Py_FinalizeEx
// up to the point where it starts tearing objects down: wait_for_thread_shutdown(), then
// _PyAtExit_Call(), then flush_std_files().
#include "cowguard/fast_exit.h"

#include <cstdio>

namespace cowguard::fast_exit {

namespace {

void call_attr(PyObject* module, const char* name) {
    if (!module) return;
    PyObject* fn = PyObject_GetAttrString(module, name);
    if (!fn) {
        PyErr_Clear();
        return;
    }
    PyObject* res = PyObject_CallNoArgs(fn);
    if (!res) PyErr_Print();  // printed like CPython's own exit path does, then carry on
    Py_XDECREF(res);
    Py_DECREF(fn);
}

// CPython calls threading._shutdown() only when threading was imported.
void wait_for_threads() {
    PyObject* name = PyUnicode_FromString("threading");
    PyObject* threading = name ? PyImport_GetModule(name) : nullptr;
    Py_XDECREF(name);
    if (!threading) {
        PyErr_Clear();
        return;
    }
    call_attr(threading, "_shutdown");
    Py_DECREF(threading);
}

void uwsgi_atexit_callable() {
    PyObject* uwsgi = PyImport_AddModule("uwsgi");  // borrowed; exists in every uWSGI Python process
    if (!uwsgi) {
        PyErr_Clear();
        return;
    }
    if (!PyObject_HasAttrString(uwsgi, "atexit")) return;
    call_attr(uwsgi, "atexit");
}

// atexit._run_exitfuncs() is what Py_Finalize runs: LIFO, prints and skips failing handlers.
void run_atexit_handlers() {
    PyObject* atexit = PyImport_ImportModule("atexit");
    if (!atexit) {
        PyErr_Print();
        return;
    }
    call_attr(atexit, "_run_exitfuncs");
    Py_DECREF(atexit);
}

void flush_std_files() {
    for (const char* name : {"stdout", "stderr"}) {
        PyObject* f = PySys_GetObject(name);  // borrowed
        if (f && f != Py_None) call_attr(f, "flush");
    }
}

}  // namespace

void run_python_exit_path(const std::vector<PyThreadState*>& interps, bool skip_python_handlers) {
    PyThreadState* main = interps.empty() ? PyThreadState_Get() : interps.front();
    PyThreadState* prev = PyThreadState_Swap(main);
    // uwsgi.atexit first, as the python plugin calls it before Py_Finalize: apps use it to tell
    // their non-daemon threads to stop, which the wait below then joins.
    if (!skip_python_handlers) uwsgi_atexit_callable();
    wait_for_threads();
    if (!skip_python_handlers) {
        for (size_t i = interps.size(); i-- > 1;) {
            PyThreadState_Swap(interps[i]);
            run_atexit_handlers();
            flush_std_files();
        }
        PyThreadState_Swap(main);
        run_atexit_handlers();
    }
    flush_std_files();
    std::fflush(nullptr);
    PyThreadState_Swap(prev);
}

}  // namespace cowguard::fast_exit
