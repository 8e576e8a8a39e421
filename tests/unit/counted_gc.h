// What one process counted in its slot, for the suites of the documents that show it
// (test_stats_doc.cc, test_prometheus.cc): 7 generation-0 collections (2 in requests, 5 after
// one) and 1 of generation 1 (after), 0.75 ms in all.
#pragma once

#include "cowguard/worker_slot.h"

inline cowguard::SlotFigures counted_gc() {
    cowguard::SlotFigures c;
    c.gc_enabled = 1;
    c.threshold[0] = 50000;
    c.threshold[1] = 20;
    c.threshold[2] = 100;
    c.frozen = 123456;
    c.collections[0] = 7;
    c.collections[1] = 1;
    c.collected = 99;
    c.uncollectable = 1;
    c.gc_time_ns = 750000;
    c.blocked_calls = 2;
    c.restored = 1;
    c.after_collections[0] = 5;
    c.after_collections[1] = 1;
    c.gen_time_ns[0] = 625000;  // 0.25 ms in requests, 0.375 ms after
    c.after_time_ns[0] = 375000;
    c.gen_time_ns[1] = 125000;  // all after
    c.after_time_ns[1] = 125000;
    return c;
}
