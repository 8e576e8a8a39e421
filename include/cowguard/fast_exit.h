// Fast exit: what CPython does before its teardown, then _exit with uWSGI's status.
// Replaces the python plugin's atexit hook (Py_Finalize writes to every object, copying the
// shared heap in every exiting worker at once).
#pragma once

#include <Python.h>

#include <vector>

namespace cowguard::fast_exit {

// Runs, in the python plugin's and CPython's order: uwsgi.atexit (unless skip_python_handlers),
// wait for non-daemon threads (threading._shutdown), the atexit handlers of every interpreter (sub-interpreters
// first, then main; last registered first, an exception in one printed and the rest run),
// then flushes sys.stdout, sys.stderr and C stdio. Does not exit: the caller does.
void run_python_exit_path(const std::vector<PyThreadState*>& interps, bool skip_python_handlers);

}  // namespace cowguard::fast_exit
