// libFuzzer target: merge_stats on arbitrary input. Seeds: corpus/stats_doc/ (real uWSGI documents).
// Build and run from the repository root:
//   clang++ -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c++17 -Iinclude \
//       tests/fuzz/fuzz_stats_doc.cc plugin/stats_doc.cc $(pkg-config --cflags --libs jansson) -o /tmp/fuzz_stats_doc
//   mkdir -p /tmp/fuzz_stats_doc.corpus && /tmp/fuzz_stats_doc -max_total_time=20 /tmp/fuzz_stats_doc.corpus tests/fuzz/corpus/stats_doc
#include <jansson.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <string_view>

#include "cowguard/stats_doc.h"

namespace {

cowguard::ProcessFigures figures(int pid, bool sampled) {
    cowguard::ProcessFigures p;
    p.pid = pid;
    p.mem_ok = sampled;
    p.gc_ok = sampled;
    p.rss = std::numeric_limits<uint64_t>::max();  // exercises the clamp
    p.pss = 12345678;
    p.minflt_per_request = std::numeric_limits<double>::quiet_NaN();
    p.gc.time_ms = 0.5;
    return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // Pids of the seed documents' workers, plus small ones a mutation easily produces.
    static const std::map<int, cowguard::ProcessFigures> workers = {
        {1, figures(1, true)}, {2, figures(2, false)}, {5160, figures(5160, true)}, {5161, figures(5161, false)},
        {5226, figures(5226, true)}, {5227, figures(5227, true)}};
    static const std::map<int, cowguard::ProcessFigures> mules = {{1, figures(1, true)}, {3, figures(3, false)}};
    static const cowguard::TopFigures top = [] {
        cowguard::TopFigures t;
        t.version = "fuzz";
        t.options = {{"cowguard-gc", "young"}, {"cowguard-cow-report", "/tmp/caf\xe9"}};
        t.master_ok = true;
        return t;
    }();

    std::string_view doc(reinterpret_cast<const char*>(data), size);
    std::string out;
    if (!cowguard::merge_stats(doc, top, workers, mules, size % 2 == 0, out)) return 0;

    // Whatever went in, what comes out must be a JSON object with our top-level key.
    json_error_t error;
    json_t* merged = json_loadb(out.data(), out.size(), JSON_ALLOW_NUL, &error);
    if (!json_is_object(json_object_get(merged, "cowguard"))) abort();
    json_decref(merged);
    return 0;
}
