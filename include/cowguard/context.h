// The one object that holds this process's cowguard state: the settings, which process this is
// and its slot, the interpreters, what the freeze did, and each unit's own per-process state.
// The uWSGI glue owns it (plugin/uwsgi/cowguard.cc, glue::context()) and hands it by reference to
// the units that need it; no unit keeps a copy of the settings or of a slot pointer.
#pragma once

#include <Python.h>
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "cowguard/fill_holes.h"
#include "cowguard/gc_control.h"
#include "cowguard/options.h"
#include "cowguard/process_role.h"
#include "cowguard/warmup.h"
#include "cowguard/worker_slot.h"

struct uwsgi_plugin;  // uWSGI's (uwsgi.h)

namespace cowguard {

namespace glue {
struct MasterStats;  // master_stats.cc: the master's sampler, servers and metrics
}

using LogFn = void (*)(const char* fmt, ...);

// uWSGI's python plugin, and the hooks of it that cowguard wraps as they were before (the
// wrappers in cowguard.cc call them).
struct PythonPlugin {
    struct uwsgi_plugin* plugin = nullptr;
    int modifier = -1;  // its index in uWSGI's plugin table (its modifier1)
    void (*post_fork)() = nullptr;
    void (*fixup)() = nullptr;
    void (*pre_uwsgi_fork)() = nullptr;
    void (*post_uwsgi_fork)(int in_child) = nullptr;
    int (*worker)() = nullptr;
    void (*atexit)() = nullptr;
    int (*mount_app)(char* mountpoint, char* app) = nullptr;
};

struct Context {
    RawOptions raw_options;  // every cowguard option as written, in order; build_settings reads them at init
    Settings settings;
    bool active = false;  // cowguard = true and the startup checks passed
    LogFn log = nullptr;  // one `[cowguard] ...` line in uWSGI's log

    // The slots in shared memory, allocated by the master before the first fork.
    SlotLayout layout;
    WorkerSlot* slots = nullptr;
    // Which process this is, and its slot (nullptr in the master): set by the glue at each fork.
    ProcessId process;
    WorkerSlot* slot = nullptr;

    // The interpreters: the main one's thread state (captured right after Py_Initialize), and
    // those uWSGI made for this process's apps, main first.
    PyThreadState* main_thread = nullptr;
    std::vector<PyThreadState*> interps;
    PythonPlugin python;

    // What was decided at init, and what happened before the fork (in the master; in each worker
    // with lazy-apps).
    ImmortalizePlan immortalize;   // cowguard-immortalize, for this Python and mode
    bool fill_holes = false;       // cowguard-fill-holes, for this mode
    gc::FreezeFigures freeze;
    uint64_t immortal_objects = 0;  // cowguard-immortalize: objects made immortal after the freeze
    double immortalize_ms = 0;
    holes::Filled holes;            // cowguard-fill-holes, in the master: pymalloc's pools
    holes::HeapFilled heap_holes;   // and glibc malloc's free chunks
    holes::HeldBlocks held_blocks;  // what the fills took: kept for the process's lifetime
    std::vector<warmup::RequestFile> warmup_files;  // cowguard-warmup-requests, parsed at init, in the order given
    double warmup_ms = 0;
    // Python threads alive in the master's main interpreter at the last count before the fork
    // (the counting thread included), and the process that counted them.
    int master_python_threads = 1;
    int threads_counted_in = 0;

    gc::ProcessState gc;                   // gc_control.cc's own state
    // A new worker holds its stop signals from the fork until uWSGI has installed its handlers
    // (cowguard.cc): the forking thread's mask, restored in the master after the fork.
    sigset_t mask_before_fork{};
    bool stop_signals_held = false;
    // With threads > 1 one core thread collects after its request; the others go back to accept().
    std::atomic<bool> between_collecting{false};
    glue::MasterStats* master = nullptr;   // the master only; never freed (forked processes hold copies)

    WorkerSlot* slot_of(ProcessId p) const {
        int i = layout.index_of(p);
        return slots && i >= 0 ? &slots[i] : nullptr;
    }
    WorkerSlot* instance_slot() const { return slots; }  // slot 0: the master's flags
};

}  // namespace cowguard
