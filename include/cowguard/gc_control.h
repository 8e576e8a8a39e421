// The CPython side of cowguard: the GC switched off while apps load, the freeze of every
// interpreter before the fork, the GC policy of each forked process, and the guard against
// code that undoes it. Every function here must be called with the GIL held (gil_scope).
#pragma once

#include <Python.h>

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "cowguard/gc_between.h"

namespace cowguard {
struct Context;
}

namespace cowguard::gc {

// Takes the GIL for the current thread unless it already holds it (uWSGI's fake GIL).
class GilScope {
public:
    GilScope() : state_(PyGILState_Ensure()) {}
    ~GilScope() { PyGILState_Release(state_); }
    GilScope(const GilScope&) = delete;
    GilScope& operator=(const GilScope&) = delete;
private:
    PyGILState_STATE state_;
};

// Makes the interpreter of `ts` current on the calling OS thread (GIL held) for the scope's life,
// then restores the caller's thread state. A thread state belongs to the thread that made it, and
// other Python threads may run whenever the GIL is released, so another thread's state is never
// borrowed: when the caller already runs in that interpreter nothing changes; when it owns `ts`
// (the master, a worker's main thread) `ts` is used; otherwise (a uWSGI core thread with
// threads > 1, an exit from one) a temporary thread state of that interpreter is made for it.
class InterpreterScope {
public:
    explicit InterpreterScope(PyThreadState* ts);
    ~InterpreterScope();
    InterpreterScope(const InterpreterScope&) = delete;
    InterpreterScope& operator=(const InterpreterScope&) = delete;
private:
    PyThreadState* prev_ = nullptr;
    PyThreadState* temporary_ = nullptr;
    bool swapped_ = false;
};

struct FreezeFigures {
    uint64_t frozen = 0;        // objects in the permanent generation, all interpreters
    double ms = 0;              // collection + freeze time
    int interpreters = 0;       // 0: no freeze in this process's history
    uint64_t collected = 0;     // objects freed by the collection before the freeze
};

// What this file keeps for the process (it lives in the Context, as ctx.gc).
struct ProcessState {
    bool loading = true;  // until the freeze: each new interpreter gets its GC off on its first import
    std::unordered_set<PyInterpreterState*> seen;            // interpreters whose GC was switched off
    std::unordered_set<PyInterpreterState*> guarded;         // guard installed
    std::unordered_set<PyInterpreterState*> policy_applied;  // worker policy applied (this process)
    std::unordered_set<std::string> logged_sites;            // guard: one log line per call site
    bool logged_native_reenable = false;
    uint64_t collection_start_ns = 0;
    // cowguard-gc = between: the decision (made in apply_worker_policy), whether the collection
    // now running is cowguard's own (set and read with the GIL held, by the thread that collects),
    // and the tick of a mule or spooler.
    std::optional<between::Decider> between;
    bool collecting_between = false;
    bool tick_started = false;
    double tick_s = 1.0;
    int64_t (*tick_harakiri_left_s)() = nullptr;
};

// Right after Py_Initialize: records the main interpreter's thread state (ctx.main_thread),
// disables the GC there, installs the guard and an audit hook that disables the GC in each
// sub-interpreter on its first import. Binds `ctx` for the callbacks CPython makes without a
// user pointer (the guard's wrappers, gc.callbacks): it must outlive the interpreter.
void on_interpreter_ready(Context& ctx);

// ctx.interps below: the interpreters uWSGI made for apps, main first, then each distinct
// sub-interpreter (the glue reads them from uWSGI's app table). ctx.slot: where this process's
// figures go (none in the master).

// After every app is loaded: one full collection (optional) and gc.freeze() in every
// interpreter, the guard installed in each of them; the GC stays disabled here.
FreezeFigures freeze_all(Context& ctx);

// In a forked worker, mule or spooler: applies the worker GC policy in every interpreter and
// starts counting collections into the slot. Idempotent per process. `known_frozen` is the
// freeze count when the caller knows it (the master's freeze, inherited by the fork), or -1:
// gc.get_freeze_count() walks the whole permanent generation, which right after a fork maps
// every shared page of the heap, and uWSGI's signal handlers are not yet in place.
void apply_worker_policy(Context& ctx, int64_t known_frozen);

// After a request: if native code switched the GC back on under `cowguard-gc = off`, switch
// it off again (logged once per process, counted). Does nothing for the other policies.
void check_after_request(Context& ctx);

// cowguard-gc = between, after a request in a worker (the response is sent): in each interpreter,
// collects the generation the Decider picks from gc.get_count(), the private memory the master
// last sampled into the slot, and `harakiri_left_s` (seconds until harakiri fires, < 0: not
// armed). Counted in the slot as after-request collections. Does nothing under other policies.
// One thread at a time (the caller makes sure with threads > 1).
void collect_between(Context& ctx, int64_t harakiri_left_s);

// cowguard-gc = between in a mule or spooler (no requests): starts a Python thread that calls
// collect_between every `seconds`, with the harakiri time `harakiri_left_s` returns (nullptr: not
// armed). Once per process; nothing under other policies.
void start_between_tick(Context& ctx, double seconds, int64_t (*harakiri_left_s)());

}  // namespace cowguard::gc
