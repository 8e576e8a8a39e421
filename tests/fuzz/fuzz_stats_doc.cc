// libFuzzer target: merge_stats on arbitrary input. Seeds: corpus/stats_doc/ (real uWSGI documents,
// stock and already merged by cowguard), dictionary: stats_doc.dict. Built and run by
// tests/fuzz/run.sh (make fuzz).
//
// What must hold, whatever the input (include/cowguard/stats_doc.h):
//   - merge_stats succeeds exactly when the input is a JSON object jansson can hold;
//   - the output is a JSON object with a top-level "cowguard" object;
//   - every other key of the input keeps its position and value (reals to 15 significant digits);
//   - in "workers" and "mules", an entry whose integer pid has figures keeps every key it had, in
//     order, with its value (rss/vsz replaced by integers when sampled), and gets "cowguard" (and
//     uss/pss when sampled); any other entry is left exactly as it was.
#include <jansson.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cowguard/stats_doc.h"

namespace {

[[noreturn]] void fail(const char* what, const char* key = "") {
    fprintf(stderr, "fuzz_stats_doc: %s %s\n", what, key);
    abort();
}

cowguard::ProcessFigures figures(int pid, bool sampled) {
    cowguard::ProcessFigures p;
    p.pid = pid;
    p.mem_ok = sampled;
    p.gc_ok = sampled;
    p.rss = std::numeric_limits<uint64_t>::max();  // exercises the clamp
    p.pss = 12345678;
    p.minflt_per_request = std::numeric_limits<double>::quiet_NaN();
    p.counted.gc_time_ns = 500000;
    return p;
}

// Values equal, reals to the 15 significant digits merge_stats writes.
bool same(json_t* a, json_t* b) {
    if (json_typeof(a) != json_typeof(b)) return false;
    if (json_is_real(a)) {
        double x = json_real_value(a), y = json_real_value(b);
        return x == y || std::fabs(x - y) <= 1e-13 * std::fmax(std::fabs(x), std::fabs(y));
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same(json_array_get(a, i), json_array_get(b, i))) return false;
        return true;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return false;
        void* ia = json_object_iter(a);
        void* ib = json_object_iter(b);
        for (; ia && ib; ia = json_object_iter_next(a, ia), ib = json_object_iter_next(b, ib))
            if (strcmp(json_object_iter_key(ia), json_object_iter_key(ib)) != 0 ||
                !same(json_object_iter_value(ia), json_object_iter_value(ib)))
                return false;
        return true;
    }
    return json_equal(a, b);
}

bool is_added(const char* key) {
    return !strcmp(key, "rss") || !strcmp(key, "vsz") || !strcmp(key, "uss") || !strcmp(key, "pss") ||
           !strcmp(key, "cowguard");
}

// One entry of "workers"/"mules": `in` as parsed from the input, `out` as merged.
void check_process(json_t* in, json_t* out, const std::map<int, cowguard::ProcessFigures>& figures) {
    json_t* pid = json_object_get(in, "pid");
    const cowguard::ProcessFigures* f = nullptr;
    if (json_is_integer(pid) && json_integer_value(pid) > 0 && json_integer_value(pid) <= INT32_MAX) {
        auto it = figures.find(static_cast<int>(json_integer_value(pid)));
        if (it != figures.end()) f = &it->second;
    }
    if (!f) {
        if (!same(in, out)) fail("an entry without figures changed");
        return;
    }
    // Every key it had, in order, with its value unless it is one merge_stats sets.
    void* io = json_object_iter(out);
    for (void* ii = json_object_iter(in); ii; ii = json_object_iter_next(in, ii), io = json_object_iter_next(out, io)) {
        const char* key = json_object_iter_key(ii);
        if (!io || strcmp(key, json_object_iter_key(io)) != 0) fail("entry key moved or lost:", key);
        bool set = is_added(key) && (f->mem_ok || !strcmp(key, "cowguard"));
        if (!set && !same(json_object_iter_value(ii), json_object_iter_value(io))) fail("entry value changed:", key);
    }
    if (!json_is_object(json_object_get(out, "cowguard"))) fail("entry without cowguard");
    if (f->mem_ok)
        for (const char* k : {"rss", "vsz", "uss", "pss"})
            if (!json_is_integer(json_object_get(out, k))) fail("sampled figure not an integer:", k);
    if (f->gc_ok && !json_is_object(json_object_get(json_object_get(out, "cowguard"), "gc"))) fail("no gc object");
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
    json_error_t error;
    json_t* in = json_loadb(doc.data(), doc.size(), JSON_ALLOW_NUL, &error);
    auto merged_text = cowguard::merge_stats(doc, top, workers, mules, size % 2 == 0);
    bool ok = merged_text.ok();
    if (ok != json_is_object(in)) fail(ok ? "merged a non-object" : "refused an object");
    if (!ok) {
        json_decref(in);
        return 0;
    }

    const std::string& out = *merged_text;
    json_t* merged = json_loadb(out.data(), out.size(), JSON_ALLOW_NUL, &error);
    if (!json_is_object(json_object_get(merged, "cowguard"))) fail("no top-level cowguard object");

    // Top-level keys: the input's, in order, then "cowguard" when the input had none.
    void* im = json_object_iter(merged);
    for (void* ii = json_object_iter(in); ii; ii = json_object_iter_next(in, ii), im = json_object_iter_next(merged, im)) {
        const char* key = json_object_iter_key(ii);
        if (!im || strcmp(key, json_object_iter_key(im)) != 0) fail("top-level key moved or lost:", key);
        json_t* a = json_object_iter_value(ii);
        json_t* b = json_object_iter_value(im);
        bool procs = !strcmp(key, "workers") || !strcmp(key, "mules");
        if (!strcmp(key, "cowguard")) continue;
        if (!procs || !json_is_array(a)) {
            if (!same(a, b)) fail("top-level value changed:", key);
            continue;
        }
        if (json_array_size(a) != json_array_size(b)) fail("process array resized:", key);
        for (size_t i = 0; i < json_array_size(a); i++)
            check_process(json_array_get(a, i), json_array_get(b, i), !strcmp(key, "workers") ? workers : mules);
    }
    if (!json_object_get(in, "cowguard") && (!im || strcmp(json_object_iter_key(im), "cowguard") != 0))
        fail("cowguard not appended last");
    json_decref(merged);
    json_decref(in);
    return 0;
}
