// The shared-memory slot of one worker, mule or spooler. The master allocates the array before
// the first fork; each process writes only its own slot (one writer, no locks) and the master
// reads every slot when it builds the stats document. Relaxed atomics: each figure is read
// whole, and no figure depends on another being read at the same instant.
#pragma once

#include <atomic>
#include <cstdint>

namespace cowguard {

struct WorkerSlot {
    std::atomic<int64_t> pid{0};           // the process writing this slot now (0: none yet)
    std::atomic<uint64_t> generation{0};   // bumped at each (re)spawn, so the master can reset its window
    std::atomic<uint32_t> gc_enabled{0};
    std::atomic<int64_t> threshold[3]{};
    std::atomic<uint64_t> frozen{0};       // gc.get_freeze_count() after the fork (or after a lazy freeze)
    std::atomic<uint64_t> collections[3]{};
    std::atomic<uint64_t> collected{0};
    std::atomic<uint64_t> uncollectable{0};
    std::atomic<uint64_t> gc_time_ns{0};
    std::atomic<uint64_t> gen_time_ns[3]{};          // gc_time_ns per generation
    // Of those, the collections cowguard ran itself under cowguard-gc = between: after a request
    // in a worker (the response already sent), on the tick in a mule or spooler. The rest were
    // started by CPython's thresholds: inside a request, in a worker.
    std::atomic<uint64_t> after_collections[3]{};
    std::atomic<uint64_t> after_time_ns[3]{};
    std::atomic<uint64_t> blocked_calls{0};  // guard: gc.enable()/gc.unfreeze()/... refused or reported
    std::atomic<uint64_t> restored{0};       // policy restored after native code changed the GC state
    std::atomic<uint64_t> requests{0};       // requests finished since this process started
    std::atomic<uint64_t> recycles{0};       // cowguard memory-limit recycles of this slot (kept across respawns)
    std::atomic<uint32_t> recycle_requested{0};  // set by the master (uss/pss over the limit), read after a request

    // Written by the master's sampler (the worker only reads peak_private, for its exit line).
    // int64 so uWSGI's "ptr" metric collector can read them in place.
    std::atomic<int64_t> uss{0}, pss{0}, shared{0}, swap{0}, minflt{0}, majflt{0};
    std::atomic<int64_t> peak_private{0};
    std::atomic<int64_t> gc_collections_total{0};  // mirror of collections[], for the metric
    std::atomic<int64_t> gc_in_request_total{0};   // mirror of collections[] - after_collections[], likewise

    // Slot 0 only (no process writes it otherwise): a lazy-apps worker whose warmup failed with
    // cowguard-warmup-errors = fatal asks the master to stop the instance, as need-app does.
    std::atomic<uint32_t> stop_instance{0};
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "slots live in shared memory: need lock-free atomics");

}  // namespace cowguard
