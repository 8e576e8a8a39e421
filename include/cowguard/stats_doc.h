// Merging cowguard's figures into the stats JSON document uWSGI's master serves. Pure: no uWSGI,
// no CPython; uses jansson.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cowguard/figures.h"
#include "cowguard/result.h"

namespace cowguard {

struct ProcessFigures {  // one worker (or mule)
    int pid = 0;
    bool mem_ok = false;  // false: the process could not be sampled; the sampled keys are omitted
    uint64_t rss = 0, vsz = 0, uss = 0, pss = 0, shared = 0, private_ = 0, swap = 0, minflt = 0, majflt = 0;
    double minflt_per_request = 0;  // over the recent window
    uint64_t peak_private = 0;
    bool gc_ok = false;   // false: the process has not published its slot; the "gc" object is omitted
    SlotFigures counted;  // what the process counted in its slot (one consistent read), when gc_ok
    uint64_t recycles = 0;  // recycles by cowguard's memory limits
};

struct TopFigures {
    std::string version;
    std::vector<std::pair<std::string, std::string>> options;  // effective options, name -> value as text
    uint64_t frozen_objects = 0;
    double freeze_ms = 0;
    uint64_t immortal_objects = 0;
    double immortalize_ms = 0;
    double warmup_ms = 0;
    double sampler_interval_s = 0;  // the sampler's effective interval (stretched to stay under 1% of a core)
    double sampler_round_ms = 0;    // how long its last round took
    uint64_t sampler_rounds = 0;
    bool master_ok = false;
    uint64_t master_rss = 0, master_uss = 0, master_pss = 0, master_shared = 0;
    uint64_t pss_total = 0;           // master + workers
    double shared_fraction_avg = 0;   // average over workers of shared/rss
};

// `s` with every byte that is not part of valid UTF-8 (overlong forms, surrogates and code points
// past U+10FFFF included) replaced by '?': jansson and Prometheus' text format both need UTF-8, and
// option values are user text in any encoding.
std::string valid_utf8(std::string_view s);

// Parses uwsgi_doc (uWSGI's own stats JSON) and writes it back with cowguard's figures merged in.
//
// For each object in "workers" whose integer "pid" is a key of `workers` (and likewise "mules"
// from `mules`, when the document has that array):
//   - when mem_ok: "rss" and "vsz" are set (replaced in place, or appended), "uss" and "pss"
//     are added, all JSON integers in bytes;
//   - a "cowguard" object is added:
//       {"shared","private","swap","minflt","majflt","minflt_per_request",   <- only when mem_ok
//        "peak_private","recycles",                                          <- always (history)
//        "gc":{"enabled","thresholds":[t0,t1,t2],  then kGcFigures' keys in order (figures.h):
//              "frozen","collections":[g0,g1,g2],"collected","uncollectable","time_ms","blocked_calls","restored",
//              "in_request":{"collections":[g0,g1,g2],"time_ms":[g0,g1,g2]},
//              "after_request":{"collections":[...],"time_ms":[...]}}}           <- only when gc_ok
// A top-level "cowguard" object is appended:
//   {"version","options":{name:value,...},"frozen_objects","freeze_ms","immortal_objects",
//    "immortalize_ms","warmup_ms",
//    "master":{"rss","uss","pss","shared"} (only when master_ok),"totals":{"pss","shared_fraction_avg"},
//    "sampler":{"interval_s","round_ms","rounds"}}
//
// Every key uWSGI wrote keeps its name, position and JSON type (uwsgitop depends on them). Unsigned
// values above LLONG_MAX are clamped to it (JSON integers here are long long); a non-finite double
// is written as null. Text that is not valid UTF-8 has its offending bytes replaced by '?'.
// Output is minified (JSON_COMPACT) when `minified`, else indented by one space; key order is
// always preserved; reals are written with 15 significant digits. An error when uwsgi_doc is not
// a JSON object (including one holding an integer above LLONG_MAX, which jansson cannot hold) or
// on allocation failure.
Result<std::string> merge_stats(std::string_view uwsgi_doc, const TopFigures& top,
                                const std::map<int, ProcessFigures>& workers, const std::map<int, ProcessFigures>& mules,
                                bool minified);

}  // namespace cowguard
