// The uWSGI side of cowguard-gc = between (the decision is gc_between.h, the collection
// gc_control.h): harakiri, one collecting thread, the tick of mules and spoolers.
//
// uWSGI runs the after-request hooks in uwsgi_close_request after close_and_free_request (the
// client has its response and its connection is closed) and before it disarms harakiri (core/utils.c,
// 2.0.21, 2.0.28 and the uwsgi-2.0 branch of 2.0.30/2.0.31 alike): a collection here costs the
// client nothing but still counts against harakiri, hence the margin the Decider keeps.
#include <Python.h>

extern "C" {
#include <uwsgi.h>
}

#include <atomic>

#include "cowguard/gc_control.h"
#include "cowguard/glue.h"

extern struct uwsgi_server uwsgi;

namespace cowguard::glue {

namespace {

// Both harakiri deadlines are absolute times in seconds (0: not armed); -1: none armed.
int64_t seconds_left(time_t harakiri, time_t user_harakiri) {
    time_t deadline = 0;
    for (time_t d : {harakiri, user_harakiri})
        if (d > 0 && (deadline == 0 || d < deadline)) deadline = d;
    if (deadline == 0) return -1;
    int64_t left = static_cast<int64_t>(deadline - uwsgi_now());
    return left < 0 ? 0 : left;
}

int64_t worker_harakiri_left() {
    struct uwsgi_worker& w = uwsgi.workers[uwsgi.mywid];
    return seconds_left(w.harakiri, w.user_harakiri);
}

int64_t mule_or_spooler_harakiri_left() {
    if (uwsgi.muleid > 0) return seconds_left(uwsgi.mules[uwsgi.muleid - 1].harakiri, uwsgi.mules[uwsgi.muleid - 1].user_harakiri);
    if (uwsgi.i_am_a_spooler) return seconds_left(uwsgi.i_am_a_spooler->harakiri, uwsgi.i_am_a_spooler->user_harakiri);
    return -1;
}

constexpr double kTickSeconds = 1.0;  // mules and spoolers: how often they ask

}  // namespace

// With threads > 1 every core thread ends its requests here: one collects, the others go back to
// accept() at once rather than queue for the GIL (what they left is the next collection's).
void between_after_request(Context& ctx) {
    if (ctx.between_collecting.exchange(true, std::memory_order_acquire)) return;
    {
        gc::GilScope gil;
        gc::collect_between(ctx, worker_harakiri_left());
    }
    ctx.between_collecting.store(false, std::memory_order_release);
}

void between_process_started(Context& ctx) {
    if (ctx.settings.gc != GcPolicy::Between) return;
    if (ctx.process.role != Role::Mule && ctx.process.role != Role::Spooler) return;  // workers: after requests
    gc::GilScope gil;
    gc::start_between_tick(ctx, kTickSeconds, mule_or_spooler_harakiri_left);
}

}  // namespace cowguard::glue
