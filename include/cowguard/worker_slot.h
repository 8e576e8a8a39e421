// The shared-memory slot of one worker, mule or spooler (and slot 0, the instance's: see
// process_role.h for the layout). The master allocates the array before the first fork; each
// process writes only its own slot (one writer, no locks) and the master reads every slot when it
// builds the stats document. Relaxed atomics: each figure is read whole, and no figure depends on
// another being read at the same instant.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace cowguard {

// An atomic read and written with relaxed order, which can be copied: a copy reads each field
// whole (not all fields at one instant, which no reader needs). Same size and layout as the
// std::atomic it wraps, so uWSGI's "ptr" metric collector can read it in place.
template <typename T>
class Relaxed {
public:
    Relaxed(T v = T{}) : v_(v) {}  // NOLINT: implicit, so `SlotFigures{}` and `= 0` read naturally
    Relaxed(const Relaxed& o) : v_(o.load()) {}
    Relaxed& operator=(const Relaxed& o) {
        store(o.load());
        return *this;
    }
    T load() const { return v_.load(std::memory_order_relaxed); }
    void store(T v) { v_.store(v, std::memory_order_relaxed); }
    T fetch_add(T d) { return v_.fetch_add(d, std::memory_order_relaxed); }
    T exchange(T v) { return v_.exchange(v, std::memory_order_relaxed); }
    // Only one process writes a slot's figures, so load-compare-store cannot lose a raise.
    void raise_to(T v) {
        if (v > load()) store(v);
    }

private:
    std::atomic<T> v_;
};
static_assert(sizeof(Relaxed<int64_t>) == sizeof(int64_t), "read in place by uWSGI's ptr metrics");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "slots live in shared memory: need lock-free atomics");

// What one process counts (and what the master's sampler writes for it): every figure that starts
// afresh when the process is (re)spawned. A GC figure: add it here, where it is counted, and as a
// row of kGcFigures (figures.h), which names it in the stats document, cowguard.stats(),
// Prometheus and (optionally) uWSGI's metrics: no other place.
struct SlotFigures {
    Relaxed<uint32_t> gc_enabled;
    Relaxed<int64_t> threshold[3];
    Relaxed<uint64_t> frozen;       // gc.get_freeze_count() after the fork (or after a lazy freeze)
    Relaxed<uint64_t> collections[3];
    Relaxed<uint64_t> collected;
    Relaxed<uint64_t> uncollectable;
    Relaxed<uint64_t> gc_time_ns;
    Relaxed<uint64_t> gen_time_ns[3];  // gc_time_ns per generation
    // Of those, the collections cowguard ran itself under cowguard-gc = between: after a request
    // in a worker (the response already sent), on the tick in a mule or spooler. The rest were
    // started by CPython's thresholds: inside a request, in a worker.
    Relaxed<uint64_t> after_collections[3];
    Relaxed<uint64_t> after_time_ns[3];
    Relaxed<uint64_t> blocked_calls;  // guard: gc.enable()/gc.unfreeze()/... refused or reported
    Relaxed<uint64_t> restored;       // policy restored after native code changed the GC state
    Relaxed<uint64_t> requests;       // requests finished since this process started
    Relaxed<uint32_t> recycle_requested;  // set by the master (uss/pss over the limit), read after a request

    // Written by the master's sampler. int64 so uWSGI's "ptr" metric collector can read them in place.
    Relaxed<int64_t> uss, pss, shared, swap, minflt, majflt;
    Relaxed<int64_t> peak_private;
    Relaxed<int64_t> gc_collections_total;  // mirror of collections[], for the metric
    Relaxed<int64_t> gc_in_request_total;   // mirror of collections[] - after_collections[], likewise
};

// The peak private (unique) memory of a process: the slot's peak, raised by the sampler's rounds,
// or what it uses now when that is more (a round may not have seen it yet). The one definition.
inline uint64_t peak_private(const SlotFigures& f, uint64_t uss_now) {
    return std::max(static_cast<uint64_t>(std::max<int64_t>(f.peak_private.load(), 0)), uss_now);
}

struct WorkerSlot {
    std::atomic<int64_t> pid{0};  // the process writing this slot now (0: none yet); published last
    SlotFigures figures;
    Relaxed<uint64_t> recycles;   // cowguard memory-limit recycles of this slot (kept across respawns)

    // Slot 0 only (the instance's; no process counts into it): a lazy-apps worker whose warmup
    // failed with cowguard-warmup-errors = fatal asks the master to stop the instance, as need-app does.
    std::atomic<uint32_t> stop_instance{0};

    // A (re)spawned process starts its slot afresh (only `recycles` is kept); publish() names it
    // as the writer once the figures are its own.
    void start() {
        pid.store(0, std::memory_order_release);
        figures = SlotFigures{};
    }
    void publish(int64_t own_pid) { pid.store(own_pid, std::memory_order_release); }
    bool written_by(int64_t p) const { return p > 0 && pid.load(std::memory_order_relaxed) == p; }
};

}  // namespace cowguard
