// State the uWSGI glue files share (plugin/cowguard.cc: hooks; plugin/master_stats.cc: the
// master's sampler, stats server and metrics). Only glue code includes this header.
#pragma once

#include <cstdint>
#include <vector>

#include "cowguard/options.h"
#include "cowguard/worker_slot.h"

typedef struct _ts PyThreadState;  // as CPython's pystate.h declares it

namespace cowguard::glue {

struct State {
    Settings settings;
    bool active = false;  // cowguard = true and the startup checks passed
    WorkerSlot* slots = nullptr;
    int slot_count = 0;
    // The freeze: in the master, or this worker's own with lazy-apps.
    uint64_t frozen_objects = 0;
    double freeze_ms = 0;
    uint64_t immortal_objects = 0;  // cowguard-immortalize: objects made immortal after the freeze
    double immortalize_ms = 0;
    double warmup_ms = 0;
};

State& state();

// Slot layout: [0] unused, [1..numproc] workers, then mules, then spoolers.
WorkerSlot* worker_slot(int wid);
WorkerSlot* mule_slot(int muleid);
WorkerSlot* spooler_slot(int index);
WorkerSlot* my_slot();  // this process's slot (worker, mule or spooler), nullptr in the master

void log_line(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// master_stats.cc
void stats_on_init();          // master, at init: nothing bound yet
void metrics_register();       // master, at init: before uWSGI sizes its metric storage
void master_cycle();           // master, every loop: starts the sampler and stats threads once
void stats_cleanup();          // master, before a reload's exec and at exit: the stats threads finish
void stats_after_fork();       // worker, mule, spooler: closes the master's listening sockets
void log_exit_line();          // any process but the master, at exit
void log_busy_exit_line();     // a worker that exits busy: in a request or hijacked (no /proc reads)

// cow_report_glue.cc
void cow_report_check_dir();                         // post_init, before any app loads: exits on a bad directory
void cow_report_setup_master(int python_modifier);  // master, after the freeze: signal + trigger file
void cow_report_at_exit();                           // a worker, at exit (GIL taken here)

// warmup_glue.cc
void warmup_load_requests();  // init: reads and checks the request files; exits with one line on a bad one
// post_app, before the freeze: cowguard-warmup callables (in `main_thread`'s interpreter), the
// replay of cowguard-warmup-requests and cowguard-warmup-after (in the app's interpreter).
void warmup_run(void* main_thread, int python_modifier);

// between_glue.cc (cowguard-gc = between)
void between_after_request(const std::vector<PyThreadState*>& interps);  // worker, after each request
void between_process_started(const std::vector<PyThreadState*>& interps);  // mule, spooler: starts the tick

}  // namespace cowguard::glue
