// Fast exit (see fast_exit.h). Mirrors the python plugin's uwsgi.atexit call, then Py_FinalizeEx
// up to the point where it starts tearing objects down: wait_for_thread_shutdown(), then
// _PyAtExit_Call(), then flush_std_files().
#include "cowguard/fast_exit.h"

#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <csignal>
#include <cstdio>

#include "cowguard/gc_control.h"

namespace cowguard::fast_exit {

namespace {

// The streams Python opened, kept alive by pin_std_streams() (never released: see fast_exit.h).
std::array<PyObject*, 4>& pinned_streams() {
    static std::array<PyObject*, 4> streams{};
    return streams;
}

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

// The status the grace timer ends the process with (set before it is armed).
volatile sig_atomic_t g_grace_exit_status = 0;

void grace_expired(int) {
    static const char line[] =
        "[cowguard] fast exit: sys.stdout/sys.stderr stayed locked for 1 s (a thread of the master was writing "
        "when uWSGI forked this process; that thread does not exist here): exiting without the last flush\n";
    ssize_t ignored = write(STDERR_FILENO, line, sizeof(line) - 1);
    (void)ignored;
    _exit(g_grace_exit_status);
}

// A stream's lock can be held forever in a forked process: a thread of the master was inside a
// write when uWSGI forked, and that thread does not exist here, so flush() would wait for ever.
// CPython's own shutdown waits 1 s for such a lock and then aborts (_enter_buffered_busy); the
// exit path waits as long and then ends the process with uWSGI's status. The caller has every
// signal blocked: SIGALRM alone is let through, for the flush only.
template <typename Fn>
void within_grace(int exit_status, Fn&& flush) {
    g_grace_exit_status = exit_status;
    struct sigaction sa = {};
    sa.sa_handler = grace_expired;
    sigaction(SIGALRM, &sa, nullptr);
    sigset_t alarm_only;
    sigemptyset(&alarm_only);
    sigaddset(&alarm_only, SIGALRM);
    itimerval one_second = {{0, 0}, {1, 0}};
    setitimer(ITIMER_REAL, &one_second, nullptr);
    sigprocmask(SIG_UNBLOCK, &alarm_only, nullptr);
    flush();
    sigprocmask(SIG_BLOCK, &alarm_only, nullptr);
    itimerval off = {};
    setitimer(ITIMER_REAL, &off, nullptr);
}

void flush_std_files() {
    for (const char* name : {"stdout", "stderr"}) {
        PyObject* f = PySys_GetObject(name);  // borrowed
        if (f && f != Py_None) call_attr(f, "flush");
    }
}

}  // namespace

void pin_std_streams() {
    const char* names[] = {"stdout", "stderr", "__stdout__", "__stderr__"};
    for (size_t i = 0; i < pinned_streams().size(); i++) {
        PyObject* f = PySys_GetObject(names[i]);  // borrowed
        if (!f || f == Py_None) continue;
        Py_INCREF(f);
        pinned_streams()[i] = f;
    }
}

void flush_pinned_streams() {
    for (PyObject* f : pinned_streams()) {
        if (!f) continue;
        PyObject* closed = PyObject_GetAttrString(f, "closed");
        bool open = closed && !PyObject_IsTrue(closed);
        Py_XDECREF(closed);
        PyErr_Clear();
        if (open) call_attr(f, "flush");
    }
}

void run_python_exit_path(const std::vector<PyThreadState*>& interps, bool skip_python_handlers, int exit_status) {
    gc::InterpreterScope main_interpreter(interps.empty() ? nullptr : interps.front());
    // uwsgi.atexit first, as the python plugin calls it before Py_Finalize: apps use it to tell
    // their non-daemon threads to stop, which the wait below then joins.
    if (!skip_python_handlers) uwsgi_atexit_callable();
    wait_for_threads();
    if (!skip_python_handlers) {
        for (size_t i = interps.size(); i-- > 1;) {
            gc::InterpreterScope sub_interpreter(interps[i]);
            run_atexit_handlers();
            within_grace(exit_status, flush_std_files);
        }
        run_atexit_handlers();
    }
    within_grace(exit_status, flush_std_files);
    std::fflush(nullptr);
}

}  // namespace cowguard::fast_exit
