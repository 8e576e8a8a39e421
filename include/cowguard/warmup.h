// Warmup in the master after the apps load and before the freeze, so what apps build lazily on
// their first requests is built once and shared: callables (cowguard-warmup = module:callable)
// and requests replayed to the app in-process (cowguard-warmup-requests). CPython side; call
// with the GIL held, in the interpreter the app runs in.
#pragma once

#include <Python.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "cowguard/warmup_requests.h"

namespace cowguard::warmup {

struct RunOutcome {
    bool ok = true;
    double ms = 0;
    std::string failed;  // the module:callable that raised (its traceback went to the log)
};

// Runs each callable in order; stops at the first failure when stop_on_error.
RunOutcome run(const std::vector<std::string>& callables, bool stop_on_error);

// The requests of one cowguard-warmup-requests file.
struct RequestFile {
    std::string path;
    std::vector<Request> requests;
};

struct ReplayOutcome {
    bool ok = true;             // false: the replay itself could not run (traceback in the log)
    double ms = 0;
    uint64_t answers[5] = {};   // status 1xx..5xx
    uint64_t other = 0;         // a status line that is not NNN ...
    uint64_t raised = 0;        // the app raised (each such request logged once, with its traceback)
};

// Serves every request of `files`, `rounds` times, to the WSGI callable `app` through
// cowguard._replay: an environ built on `base` (the server's keys: SERVER_NAME, wsgi.errors, ...).
ReplayOutcome replay(PyObject* app, PyObject* base, const std::vector<RequestFile>& files, int rounds);

// cowguard._after_replay: closes Django's connections if Django is loaded. -1: it raised.
int close_django_connections();

}  // namespace cowguard::warmup
