// The one table that names each per-process GC figure a process counts in its slot: the key of
// the stats document's "gc" object and of cowguard.stats()["gc"], the Prometheus family, and
// (optionally) the uWSGI metric. The stats document (stats_doc.cc), the Python module
// (pymodule.cc), the exposition (prometheus.cc) and the metrics (master_stats.cc) all walk it.
//
// Adding a figure: a field in SlotFigures (worker_slot.h), the place that counts it, a row here.
// Pure: no uWSGI, no CPython.
#pragma once

#include <cstdint>

#include "cowguard/worker_slot.h"

namespace cowguard {

enum class FigureUnit {
    Count,        // an integer as counted
    Nanoseconds,  // counted in ns; `<key>` in ms in the documents, seconds in Prometheus
};

struct GcFigure {
    const char* key;  // in the "gc" object, after "enabled" and "thresholds", in this table's order
    // Where the process counts it: one value, or one per generation (the documents show a list of
    // three, Prometheus a `generation` label). Exactly one of the two is set.
    Relaxed<uint64_t> SlotFigures::*value;
    Relaxed<uint64_t> (SlotFigures::*per_generation)[3];
    FigureUnit unit;
    const char* family;  // Prometheus: name, type, help
    const char* type;
    const char* help;
    const char* uwsgi_metric = nullptr;  // worker.N.<this> in uWSGI's metrics (a value only), or none
    int uwsgi_oid = 0;                   // 3.N.<this>
};

inline constexpr GcFigure kGcFigures[] = {
    {"frozen", &SlotFigures::frozen, nullptr, FigureUnit::Count, "cowguard_process_gc_frozen_objects", "gauge",
     "Objects in the permanent generation (gc.freeze())."},
    {"collections", nullptr, &SlotFigures::collections, FigureUnit::Count, "cowguard_process_gc_collections_total",
     "counter", "Garbage collections of each generation."},
    {"collected", &SlotFigures::collected, nullptr, FigureUnit::Count, "cowguard_process_gc_collected_objects_total",
     "counter", "Objects freed by garbage collections."},
    {"uncollectable", &SlotFigures::uncollectable, nullptr, FigureUnit::Count,
     "cowguard_process_gc_uncollectable_objects_total", "counter", "Objects garbage collections found uncollectable."},
    {"time_ms", &SlotFigures::gc_time_ns, nullptr, FigureUnit::Nanoseconds, "cowguard_process_gc_seconds_total",
     "counter", "Time spent in garbage collections."},
    {"blocked_calls", &SlotFigures::blocked_calls, nullptr, FigureUnit::Count,
     "cowguard_process_gc_guard_blocked_calls_total", "counter",
     "gc.enable(), gc.unfreeze() and like calls cowguard's guard blocked (or reported, with warn).",
     "gc_blocked_calls", 109},
    {"restored", &SlotFigures::restored, nullptr, FigureUnit::Count, "cowguard_process_gc_restored_total", "counter",
     "Times cowguard switched the collector back off after native code re-enabled it."},
};

// A row's value as counted (the one value, or generation `g`'s).
inline uint64_t counted(const SlotFigures& s, const GcFigure& f, int g = 0) {
    return f.value ? (s.*f.value).load() : (s.*f.per_generation)[g].load();
}
inline double ns_to_ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

// Collections and their time per generation, for one side of the request.
struct GcPhase {
    uint64_t collections[3] = {0, 0, 0};
    double time_ms[3] = {0, 0, 0};
};

// `collections` and the GC time split: started by CPython's thresholds (in a worker: inside a
// request), and run by cowguard-gc = between after a request (in a mule or spooler: its tick).
struct GcPhases {
    GcPhase in_request, after_request;
};

// The one split, from a consistent copy of a slot's figures.
inline GcPhases gc_phases(const SlotFigures& s) {
    GcPhases p;
    for (int i = 0; i < 3; i++) {
        uint64_t all_n = s.collections[i].load(), after_n = s.after_collections[i].load();
        uint64_t all_ns = s.gen_time_ns[i].load(), after_ns = s.after_time_ns[i].load();
        p.after_request.collections[i] = after_n;
        p.after_request.time_ms[i] = ns_to_ms(after_ns);
        // A copy reads the totals before the after-request side (declaration order) and may miss a
        // collection the latter already counts: clamped at 0.
        p.in_request.collections[i] = all_n > after_n ? all_n - after_n : 0;
        p.in_request.time_ms[i] = all_ns > after_ns ? ns_to_ms(all_ns - after_ns) : 0;
    }
    return p;
}

}  // namespace cowguard
