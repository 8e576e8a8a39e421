// Fast exit: what CPython does before its teardown, then _exit with uWSGI's status.
// Replaces the python plugin's atexit hook (Py_Finalize writes to every object, copying the
// shared heap in every exiting worker at once).
#pragma once

#include <Python.h>

#include <vector>

namespace cowguard::fast_exit {

// uWSGI's python plugin replaces sys.stdout and sys.stderr when the apps load (init_uwsgi_vars in
// its preinit_apps), dropping the last references to the streams Python opened. A thread started
// at import (sitecustomize, an APM agent) may be inside print() at that moment, and CPython before
// 3.13 prints through a borrowed reference to sys.stdout (python/cpython#130163): the freed stream
// crashed the master, with or without cowguard. Called right after Py_Initialize (GIL held), this
// keeps those streams alive for the life of the process. flush_pinned_streams() flushes them in
// the master before the fork, so no worker inherits what they buffered (they are out of sys, so
// no later exit path flushes them).
void pin_std_streams();
void flush_pinned_streams();

// Runs, in the python plugin's and CPython's order: uwsgi.atexit (unless skip_python_handlers),
// wait for non-daemon threads (threading._shutdown), the atexit handlers of every interpreter (sub-interpreters
// first, then main; last registered first, an exception in one printed and the rest run),
// then flushes sys.stdout, sys.stderr and C stdio. Does not exit: the caller does, with
// exit_status; a flush that cannot take its stream's lock within 1 s (a master thread held it at
// the fork) ends the process there with exit_status and one line. Every signal must be blocked.
void run_python_exit_path(const std::vector<PyThreadState*>& interps, bool skip_python_handlers, int exit_status);

}  // namespace cowguard::fast_exit
