// What the uWSGI glue files share (plugin/uwsgi/: cowguard.cc, the hooks; master_stats.cc, the
// master's sampler, stats server and metrics; cow_report_glue.cc; warmup_glue.cc). Only glue code
// includes this header.
#pragma once

#include <string>

#include "cowguard/context.h"
#include "cowguard/result.h"

namespace cowguard::glue {

// The process's context, owned by cowguard.cc. The glue reads it here; it hands it by reference
// to the units (gc_control, pymodule, the sampler's settings).
Context& context();

// Which process this is, from uWSGI's fields (mywid, muleid, the spooler list): the one place.
ProcessId current_process();

void log_line(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Stops uWSGI with one line, `[cowguard] <line>`, where the line starts with the option it is
// about (`cowguard-prometheus: cannot listen on ...`): the one way to refuse a configuration.
[[noreturn]] void fail(const std::string& line);

// At startup: the value, or uWSGI stopped by fail() with `prefix` and the error line.
template <typename T>
T value_or_fail(Result<T> r, const std::string& prefix = "") {
    if (!r) fail(prefix + r.error());
    return std::move(*r);
}
inline void ok_or_fail(const Status& s, const std::string& prefix = "") {
    if (!s) fail(prefix + s.error());
}

// master_stats.cc
void stats_on_init();          // master, at init: nothing bound yet
void metrics_register();       // master, at init: before uWSGI sizes its metric storage
void master_cycle();           // master, every loop: starts the sampler and stats threads once
void stats_cleanup();          // master, before a reload's exec and at exit: the stats threads finish
void stats_after_fork();       // worker, mule, spooler: closes the master's listening sockets
void log_exit_line();          // any process but the master, at exit
void log_busy_exit_line();     // a worker that exits busy: in a request or hijacked (no /proc reads)

// cow_report_glue.cc
void cow_report_check_dir();       // post_init, before any app loads: exits on a bad directory
void cow_report_setup_master();    // master, after the freeze: signal + trigger file
void cow_report_at_exit();         // a worker, at exit (GIL taken here)

// between_glue.cc (cowguard-gc = between)
void between_after_request(Context& ctx);    // worker, after each request: one thread collects if due
void between_process_started(Context& ctx);  // mule, spooler: starts the collection tick

// warmup_glue.cc
void warmup_load_requests();  // init: reads and checks the request files; exits with one line on a bad one
// post_app, before the freeze: cowguard-warmup callables (in the main interpreter), the replay of
// cowguard-warmup-requests and cowguard-warmup-after (in the app's interpreter).
void warmup_run();
// A worker after its fork, before its first request: cowguard-warmup-worker-rounds replays of the
// request files (not with lazy-apps, whose workers replay in warmup_run).
void warmup_worker_replay();

}  // namespace cowguard::glue
