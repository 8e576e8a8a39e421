// The decision of `cowguard-gc = between`: after a request (in a worker; on a timer in a mule or
// spooler), should this process collect now, and which generation? Pure: no uWSGI, no CPython.
//
// The policy keeps CPython's own thresholds high inside requests (10000,20,100: a request that
// frees what it allocates never reaches them, so no collection interrupts it, and one that makes
// cycles for a long time is still collected when its gen-0 count passes 10000), and collects
// after the response is sent, when the young generations hold enough to be worth it. The glue
// reads the figures (gc.get_count(), the private memory the master last sampled, harakiri) and
// asks here; it runs the collection and then tells the Decider.
#pragma once

#include <cstdint>

namespace cowguard::between {

// What the decision is made on, as read after a request. Out-of-range values are treated as
// "nothing known": a negative count as 0, a private size <= 0 as unknown.
struct Observation {
    long count[3] = {0, 0, 0};       // gc.get_count(): gen-0 allocations minus deallocations, and
                                     // the collections of the younger generation since each older one ran
    int64_t private_bytes = 0;       // this process's private memory as last sampled (0: unknown)
    int64_t harakiri_left_s = -1;    // seconds until harakiri (or user harakiri) fires; < 0: not armed
};

// When to collect between requests.
struct Trigger {
    // gen-0 count that starts a collection after a request, then CPython's rule for the older
    // generations: generation g (1, 2) is collected with the younger ones when its count reached
    // threshold[g]. A threshold <= 0 never triggers (threshold[0]: never by count).
    long threshold[3] = {700, 10, 10};
    // Private memory grown since the last collection (bytes) that starts one even below
    // threshold[0], as long as anything is pending: a few cycles holding large buffers. <= 0: off.
    int64_t growth_bytes = 8LL * 1024 * 1024;
    // uWSGI disarms harakiri only after the after-request hooks, and counts it in whole seconds:
    // the master kills once its clock is past the deadline, so with 1 s left (by the truncated
    // clock) more than a second remains, far more than a young collection takes; with 0, less
    // than one: no collection then (the next request's end will do it).
    int64_t harakiri_margin_s = 1;
};

constexpr int kNone = -1;

class Decider {
public:
    explicit Decider(const Trigger& trigger) : trigger_(trigger) {}

    // The generation to collect now (0, 1, 2), or kNone. The first known private size becomes
    // the baseline of the growth trigger.
    int decide(const Observation& now);

    // After a collection (ours or CPython's own): private memory is measured from here on.
    void collected(int64_t private_bytes);

    const Trigger& trigger() const { return trigger_; }

private:
    Trigger trigger_;
    int64_t private_at_last_ = 0;  // 0: no baseline yet (the first sample becomes it)
};

}  // namespace cowguard::between
