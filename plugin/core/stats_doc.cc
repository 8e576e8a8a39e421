// Stats document merge (pure, jansson). See include/cowguard/stats_doc.h.
//
// Ownership rule used throughout: every json_t* a helper returns is a new reference, and is
// handed straight to json_object_set_new / json_array_append_new, which take it over even when
// they fail (and fail cleanly on NULL), so no path leaks.
#include "cowguard/stats_doc.h"

#include <jansson.h>

#include <climits>
#include <cmath>
#include <cstdlib>
#include <memory>

namespace cowguard {

std::string valid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                                  : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        bool ok = len != 0 && i + len <= s.size();
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
        for (size_t k = 1; ok && k < len; k++) {
            unsigned char cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) ok = false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid too.
        if (ok && ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
                   (cp >= 0xD800 && cp <= 0xDFFF)))
            ok = false;
        if (ok) {
            out.append(s.substr(i, len));
            i += len;
        } else {
            out.push_back('?');
            i++;
        }
    }
    return out;
}

namespace {

struct JsonDecref {
    void operator()(json_t* j) const { json_decref(j); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDecref>;

json_t* json_u64(uint64_t v) {
    // json_int_t is long long: clamp rather than wrap to a negative number.
    return json_integer(v > static_cast<uint64_t>(LLONG_MAX) ? LLONG_MAX : static_cast<json_int_t>(v));
}

json_t* json_double(double v) { return std::isfinite(v) ? json_real(v) : json_null(); }

json_t* json_text(std::string_view s) {
    std::string clean = valid_utf8(s);
    return json_stringn(clean.data(), clean.size());
}

// Sets `key`, taking over `value` whatever happens; false on failure.
bool put(json_t* obj, const char* key, json_t* value) { return json_object_set_new(obj, key, value) == 0; }

json_t* phase_object(const GcPhase& p) {
    JsonPtr o(json_object()), collections(json_array()), time_ms(json_array());
    if (!o || !collections || !time_ms) return nullptr;
    bool ok = true;
    for (int g = 0; g < 3; g++) {
        ok = ok && json_array_append_new(collections.get(), json_u64(p.collections[g])) == 0;
        ok = ok && json_array_append_new(time_ms.get(), json_double(p.time_ms[g])) == 0;
    }
    ok = ok && put(o.get(), "collections", collections.release()) && put(o.get(), "time_ms", time_ms.release());
    return ok ? o.release() : nullptr;
}

// One row of kGcFigures: an integer (or ms), or a list of three.
json_t* figure_value(const SlotFigures& s, const GcFigure& f) {
    auto one = [&](int g) { return f.unit == FigureUnit::Nanoseconds ? json_double(ns_to_ms(counted(s, f, g)))
                                                                     : json_u64(counted(s, f, g)); };
    if (f.value) return one(0);
    JsonPtr list(json_array());
    for (int g = 0; list && g < 3; g++)
        if (json_array_append_new(list.get(), one(g)) != 0) return nullptr;
    return list.release();
}

json_t* gc_object(const SlotFigures& s) {
    JsonPtr o(json_object()), thresholds(json_array());
    if (!o || !thresholds) return nullptr;
    bool ok = true;
    for (int g = 0; g < 3; g++)
        ok = ok && json_array_append_new(thresholds.get(), json_integer(s.threshold[g].load())) == 0;
    ok = ok && put(o.get(), "enabled", json_boolean(s.gc_enabled.load() != 0)) &&
         put(o.get(), "thresholds", thresholds.release());
    for (const GcFigure& f : kGcFigures) ok = ok && put(o.get(), f.key, figure_value(s, f));
    GcPhases phases = gc_phases(s);
    ok = ok && put(o.get(), "in_request", phase_object(phases.in_request)) &&
         put(o.get(), "after_request", phase_object(phases.after_request));
    return ok ? o.release() : nullptr;
}

json_t* process_cowguard_object(const ProcessFigures& p) {
    JsonPtr o(json_object());
    if (!o) return nullptr;
    bool ok = true;
    if (p.mem_ok)
        ok = put(o.get(), "shared", json_u64(p.shared)) && put(o.get(), "private", json_u64(p.private_)) &&
             put(o.get(), "swap", json_u64(p.swap)) && put(o.get(), "minflt", json_u64(p.minflt)) &&
             put(o.get(), "majflt", json_u64(p.majflt)) &&
             put(o.get(), "minflt_per_request", json_double(p.minflt_per_request));
    ok = ok && put(o.get(), "peak_private", json_u64(p.peak_private)) &&
         put(o.get(), "recycles", json_u64(p.recycles));
    if (ok && p.gc_ok) ok = put(o.get(), "gc", gc_object(p.counted));
    return ok ? o.release() : nullptr;
}

// Merges figures into each process object of `array` (uWSGI's "workers" or "mules") whose
// integer "pid" is in `figures`. Entries uWSGI wrote stay where they are: json_object_set_new
// on an existing key replaces the value in place.
bool merge_processes(json_t* array, const std::map<int, ProcessFigures>& figures) {
    if (!json_is_array(array) || figures.empty()) return true;
    for (size_t i = 0; i < json_array_size(array); i++) {
        json_t* proc = json_array_get(array, i);
        json_t* pid = json_object_get(proc, "pid");  // NULL unless proc is an object with "pid"
        if (!json_is_integer(pid)) continue;
        json_int_t pid_value = json_integer_value(pid);
        if (pid_value <= 0 || pid_value > INT_MAX) continue;
        auto it = figures.find(static_cast<int>(pid_value));
        if (it == figures.end()) continue;
        const ProcessFigures& p = it->second;
        bool ok = true;
        if (p.mem_ok)
            ok = put(proc, "rss", json_u64(p.rss)) && put(proc, "vsz", json_u64(p.vsz)) &&
                 put(proc, "uss", json_u64(p.uss)) && put(proc, "pss", json_u64(p.pss));
        if (!ok || !put(proc, "cowguard", process_cowguard_object(p))) return false;
    }
    return true;
}

json_t* top_object(const TopFigures& top) {
    JsonPtr o(json_object()), options(json_object()), totals(json_object());
    if (!o || !options || !totals) return nullptr;
    for (const auto& [name, value] : top.options) {
        std::string key = valid_utf8(name);
        if (json_object_setn_new(options.get(), key.data(), key.size(), json_text(value)) != 0) return nullptr;
    }
    bool ok = put(o.get(), "version", json_text(top.version)) && put(o.get(), "options", options.release()) &&
              put(o.get(), "frozen_objects", json_u64(top.frozen_objects)) &&
              put(o.get(), "freeze_ms", json_double(top.freeze_ms)) &&
              put(o.get(), "immortal_objects", json_u64(top.immortal_objects)) &&
              put(o.get(), "immortalize_ms", json_double(top.immortalize_ms)) &&
              put(o.get(), "warmup_ms", json_double(top.warmup_ms));
    if (ok && top.master_ok) {
        JsonPtr master(json_object());
        ok = master && put(master.get(), "rss", json_u64(top.master_rss)) &&
             put(master.get(), "uss", json_u64(top.master_uss)) &&
             put(master.get(), "pss", json_u64(top.master_pss)) &&
             put(master.get(), "shared", json_u64(top.master_shared)) && put(o.get(), "master", master.release());
    }
    ok = ok && put(totals.get(), "pss", json_u64(top.pss_total)) &&
         put(totals.get(), "shared_fraction_avg", json_double(top.shared_fraction_avg)) &&
         put(o.get(), "totals", totals.release());
    if (ok) {
        JsonPtr sampler(json_object());
        ok = sampler && put(sampler.get(), "interval_s", json_double(top.sampler_interval_s)) &&
             put(sampler.get(), "round_ms", json_double(top.sampler_round_ms)) &&
             put(sampler.get(), "rounds", json_u64(top.sampler_rounds)) && put(o.get(), "sampler", sampler.release());
    }
    return ok ? o.release() : nullptr;
}

}  // namespace

Result<std::string> merge_stats(std::string_view uwsgi_doc, const TopFigures& top,
                                const std::map<int, ProcessFigures>& workers, const std::map<int, ProcessFigures>& mules,
                                bool minified) {
    json_error_t error;
    JsonPtr doc(json_loadb(uwsgi_doc.data(), uwsgi_doc.size(), JSON_ALLOW_NUL, &error));
    if (!json_is_object(doc.get())) return fail_with("uWSGI's document is not a JSON object");

    if (!merge_processes(json_object_get(doc.get(), "workers"), workers) ||
        !merge_processes(json_object_get(doc.get(), "mules"), mules) ||
        !put(doc.get(), "cowguard", top_object(top)))
        return fail_with("out of memory");

    // 15 significant digits (DBL_DIG): 0.1 prints as 0.1, not jansson's default 0.10000000000000001.
    // uWSGI's own document holds only integers, which this does not touch.
    size_t flags = JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15) | (minified ? JSON_COMPACT : JSON_INDENT(1));
    char* text = json_dumps(doc.get(), flags);
    if (!text) return fail_with("out of memory");
    std::unique_ptr<char, decltype(&std::free)> owned(text, &std::free);
    return std::string(text);
}

}  // namespace cowguard
