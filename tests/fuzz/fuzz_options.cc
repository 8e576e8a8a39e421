// libFuzzer target: build_settings over arbitrary option names and values. Seeds: corpus/options/,
// dictionary: options.dict. Built and run by tests/fuzz/run.sh (make fuzz).
//
// Input: NUL-separated tokens read as name, value, name, value, ... (uWSGI hands the plugin each
// option as a C string, so no name or value ever holds a NUL). A name of exactly one byte b with
// b < number of options stands for option_names()[b], so mutations reach every option's parser
// cheaply; any other name is used as written (mostly unknown options).
//
// What must hold, whatever the input:
//   - an error is exactly "<name>: not a cowguard option" for an unknown name, or
//     "<name>: '<value>' is not valid; accepts <option_accepts(name)>" for a value given for that
//     name, control characters escaped as \xNN (one line whatever the value);
//   - on success, one note per single-valued option given more than once
//     ("<name> given N times; using the last value '<last>' ...", one line), every figure in its documented
//     range, and describe_settings() round-trips: feeding its text back to build_settings gives
//     the same settings again.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cowguard/options.h"

using namespace cowguard;

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
    fprintf(stderr, "fuzz_options: %s: %s\n", what, detail.c_str());
    abort();
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// A value as error lines print it: control characters as \xNN.
using Described = std::vector<std::pair<std::string, std::string>>;


void check_ranges(const Settings& s, const RawOptions& raw) {
    const GcThresholds& t = s.thresholds;
    for (long v : {t.t0, t.t1, t.t2})
        if (v < -1 || v > 1000000000L) fail("threshold out of range", std::to_string(v));
    if (s.gc == GcPolicy::Thresholds && t.t0 < 0) fail("thresholds policy without T0", "");
    if (!(s.stats_interval_s >= 0.1 && s.stats_interval_s <= 3600)) fail("interval", std::to_string(s.stats_interval_s));
    for (uint64_t mb : {s.reload_on_uss_mb, s.reload_on_pss_mb, s.evil_reload_on_uss_mb, s.evil_reload_on_pss_mb})
        if (mb > (1ULL << 30)) fail("megabytes out of range", std::to_string(mb));
    if (s.cow_report_signal < 1 || s.cow_report_signal > 255) fail("signal", std::to_string(s.cow_report_signal));
    for (const std::string& w : s.warmup)
        if (!parse_warmup(w) || w.find(' ') != std::string::npos) fail("warmup entry", w);
    auto it = raw.find("cowguard-warmup");
    size_t given = it == raw.end() ? 0 : it->second.size();
    if (s.warmup.size() != given) fail("warmup entries", std::to_string(s.warmup.size()));
    for (const std::string& w : s.warmup_after)
        if (!parse_warmup(w) || w.find(' ') != std::string::npos) fail("warmup-after entry", w);
    if (s.warmup_rounds < 1 || s.warmup_rounds > 1000) fail("warmup rounds", std::to_string(s.warmup_rounds));
    if (s.warmup_worker_rounds < 0 || s.warmup_worker_rounds > 1000)
        fail("warmup worker rounds", std::to_string(s.warmup_worker_rounds));
    auto files = raw.find("cowguard-warmup-requests");
    if (s.warmup_requests.size() != (files == raw.end() ? 0 : files->second.size()))
        fail("warmup request files", std::to_string(s.warmup_requests.size()));
    for (const std::string& f : s.warmup_requests)
        if (f.empty() || f.find('\0') != std::string::npos) fail("warmup request file", f);
    bool report_given = raw.count("cowguard-cow-report") && !raw.at("cowguard-cow-report").empty();
    if (report_given == s.cow_report_dir.empty()) fail("cow-report dir", s.cow_report_dir);
    const ListenAddress& a = s.prometheus;
    bool prometheus_given = raw.count("cowguard-prometheus") && !raw.at("cowguard-prometheus").empty();
    if (prometheus_given == a.text.empty()) fail("prometheus address", a.text);
    if (!a.text.empty() && (a.unix_socket ? a.path.empty() || a.path.size() > 107 : a.port < 1 || a.port > 65535))
        fail("prometheus address out of range", a.text);
    if (s.instance_name.size() > 128) fail("instance name", s.instance_name);
}

void check_notes(const std::vector<std::string>& notes, const RawOptions& raw) {
    size_t expected = 0;
    for (const auto& [name, values] : raw) {
        if (option_is_list(name) || values.size() < 2) continue;
        expected++;
        // Values are printed with control characters escaped, so the note stays on one line.
        std::string head = name + " given " + std::to_string(values.size()) + " times; using the last value '" +
                           printable(values.back()) + "'";
        bool found = false;
        for (const std::string& n : notes) found = found || (starts_with(n, head) && n.find('\n') == std::string::npos);
        if (!found) fail("missing duplicate note", head);
    }
    if (notes.size() != expected) fail("unexpected notes", std::to_string(notes.size()));
}

void check_error(const std::string& e, const RawOptions& raw) {
    for (const auto& [name, values] : raw) {
        bool known = !std::string(option_accepts(name)).empty();
        if (!known) {
            if (e == name + ": not a cowguard option") return;
            continue;
        }
        for (const std::string& v : values)
            if (e == name + ": '" + printable(v) + "' is not valid; accepts " + option_accepts(name)) return;
    }
    fail("error line names no given option and value", e);
}

// describe_settings' text as options again: every non-empty value; the callable lists split (a
// request file path may hold spaces, so its list stays one value that describes the same).
RawOptions as_options(const Described& d) {
    RawOptions raw;
    for (const auto& [name, value] : d) {
        if (value.empty()) continue;
        if (!option_is_list(name) || name == "cowguard-warmup-requests") {
            raw[name].push_back(value);
            continue;
        }
        size_t start = 0;
        while (start <= value.size()) {
            size_t sp = value.find(' ', start);
            std::string part = value.substr(start, sp == std::string::npos ? std::string::npos : sp - start);
            if (!part.empty()) raw[name].push_back(part);
            if (sp == std::string::npos) break;
            start = sp + 1;
        }
    }
    return raw;
}

std::string show(const Described& d) {
    std::string s;
    for (const auto& [n, v] : d) s += n + "=" + v + "; ";
    return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::vector<std::string>& names = option_names();
    std::vector<std::string> tokens;
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == 0) {
            tokens.emplace_back(reinterpret_cast<const char*>(data) + start, i - start);
            start = i + 1;
        }
    }
    RawOptions raw;
    for (size_t i = 0; i + 1 < tokens.size(); i += 2) {
        std::string name = tokens[i];
        if (name.size() == 1 && static_cast<unsigned char>(name[0]) < names.size())
            name = names[static_cast<unsigned char>(name[0])];
        raw[name].push_back(tokens[i + 1]);
    }

    auto r = build_settings(raw);
    if (!r) {
        check_error(r.error(), raw);
        return 0;
    }
    check_notes(r->notes, raw);
    const Settings& out = r->settings;
    check_ranges(out, raw);

    const Described described = describe_settings(out);
    if (described.size() != names.size()) fail("describe_settings size", std::to_string(described.size()));
    for (size_t i = 0; i < names.size(); i++)
        if (described[i].first != names[i]) fail("describe_settings order", described[i].first);

    auto r2 = build_settings(as_options(described));
    if (!r2) fail("described settings do not parse", r2.error() + " from " + show(described));
    const Settings& again = r2->settings;
    if (describe_settings(again) != described)
        fail("round trip", show(described) + " -> " + show(describe_settings(again)));
    if (again.gc != out.gc || again.thresholds.t0 != out.thresholds.t0 || again.thresholds.t1 != out.thresholds.t1 ||
        again.thresholds.t2 != out.thresholds.t2)
        fail("gc round trip", show(described));
    return 0;
}
