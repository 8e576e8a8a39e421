// Option parsing and validation (pure). See include/cowguard/options.h.
#include "cowguard/options.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace cowguard {

namespace {

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(const std::string& s) {
    size_t b = 0, e = s.size();
    while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) b++;
    while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) e--;
    return s.substr(b, e - b);
}

// Every parser's error: the value as written; build_settings adds the option and what it accepts.
Error invalid(const std::string& v) { return fail_with("'" + printable(v) + "' is not valid"); }

// Strict non-negative decimal integer, no sign, no spaces, at most `max`.
Result<unsigned long long> parse_uint(const std::string& s, unsigned long long max) {
    if (s.empty() || s.size() > 20) return invalid(s);
    unsigned long long v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return invalid(s);
        unsigned d = static_cast<unsigned>(c - '0');
        if (v > (max - d) / 10) return invalid(s);
        v = v * 10 + d;
    }
    return v;
}

// An integer from 1 to `max` (written as parse_uint takes it, spaces around allowed).
Result<int> parse_int_from_1(const std::string& v, unsigned long long max) {
    auto x = parse_uint(trim(v), max);
    if (!x || *x < 1) return invalid(v);
    return static_cast<int>(*x);
}

// A file or directory path: not empty, no NUL byte; kept as written, spaces around removed.
Result<std::string> parse_path(const std::string& v) {
    std::string t = trim(v);
    if (t.empty() || t.find('\0') != std::string::npos) return invalid(v);
    return t;
}

// The words of an enumerated option: what it accepts (any case, spaces around) and how its value
// is written back (describe_settings, the startup line).
template <typename E>
struct Keyword {
    const char* word;
    E value;
};
constexpr Keyword<GuardMode> kGuardWords[] = {
    {"block", GuardMode::Block}, {"warn", GuardMode::Warn}, {"allow", GuardMode::Allow}};
constexpr Keyword<Toggle> kToggleWords[] = {{"auto", Toggle::Auto}, {"true", Toggle::On}, {"false", Toggle::Off}};
constexpr Keyword<WarmupErrors> kWarmupErrorsWords[] = {{"fatal", WarmupErrors::Fatal}, {"log", WarmupErrors::Log}};

template <typename E, size_t N>
Result<E> parse_word(const Keyword<E> (&words)[N], const std::string& v) {
    std::string l = lower(trim(v));
    for (const Keyword<E>& k : words)
        if (l == k.word) return k.value;
    return invalid(v);
}

template <typename E, size_t N>
const char* word_of(const Keyword<E> (&words)[N], E value) {
    for (const Keyword<E>& k : words)
        if (k.value == value) return k.word;
    return "?";
}

// A parsed value into its field of the settings (the spec table's one way to apply a parser).
template <typename T>
Status store(Result<T> parsed, T& field) {
    if (!parsed) return fail_with(parsed.error());
    field = std::move(*parsed);
    return {};
}

// A parsed value appended to a list option's values.
template <typename T>
Status append(Result<T> parsed, std::vector<T>& list) {
    if (!parsed) return fail_with(parsed.error());
    list.push_back(std::move(*parsed));
    return {};
}

}  // namespace

std::string printable(std::string_view v, bool escape_non_ascii) {
    std::string out;
    for (unsigned char c : v) {
        if (c < 0x20 || c == 0x7f || (escape_non_ascii && c > 0x7f)) {
            char buf[8];
            snprintf(buf, sizeof(buf), "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

namespace {

bool is_identifier(const std::string& s) {
    if (s.empty()) return false;
    if (!(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
    for (char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
    return true;
}

bool is_dotted_name(const std::string& s) {
    if (s.empty()) return false;
    size_t start = 0;
    while (true) {
        size_t dot = s.find('.', start);
        std::string part = s.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        if (!is_identifier(part)) return false;
        if (dot == std::string::npos) return true;
        start = dot + 1;
    }
}

constexpr unsigned long long kMaxThreshold = 1000000000ULL;

// T0[,T1[,T2]]: one to three integers 0..kMaxThreshold; the ones not given stay -1.
Result<GcThresholds> parse_threshold_list(const std::string& l) {
    long vals[3] = {-1, -1, -1};
    size_t start = 0;
    int n = 0;
    while (true) {
        if (n == 3) return invalid(l);
        size_t comma = l.find(',', start);
        std::string part = trim(l.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        auto x = parse_uint(part, kMaxThreshold);
        if (!x) return invalid(l);
        vals[n++] = static_cast<long>(*x);
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return GcThresholds{vals[0], vals[1], vals[2]};
}
constexpr unsigned long long kMaxMegabytes = 1ULL << 30;  // 1 PiB: anything above is a typo

struct OptionSpec {
    const char* name;
    const char* accepts;
    bool list;
    std::function<Status(const std::string&, Settings&)> apply;
};

const std::vector<OptionSpec>& specs() {
    static const std::vector<OptionSpec> s = {
        {"cowguard", "true or false", false,
         [](const std::string& v, Settings& o) { return store(parse_bool(v), o.enabled); }},
        {"cowguard-freeze", "true or false", false,
         [](const std::string& v, Settings& o) { return store(parse_bool(v), o.freeze); }},
        {"cowguard-collect-before-freeze", "true or false", false,
         [](const std::string& v, Settings& o) { return store(parse_bool(v), o.collect_before_freeze); }},
        {"cowguard-immortalize", "true, false or auto", false,
         [](const std::string& v, Settings& o) { return store(parse_toggle(v), o.immortalize); }},
        {"cowguard-fill-holes", "true, false or auto", false,
         [](const std::string& v, Settings& o) { return store(parse_toggle(v), o.fill_holes); }},
        {"cowguard-gc", "young, between, off or T0[,T1[,T2]] (integers 0..1000000000)", false,
         [](const std::string& v, Settings& o) { 
             auto p = parse_gc_policy(v);
             if (!p) return Status(fail_with(p.error()));
             o.gc = p->policy;
             o.thresholds = p->thresholds;
             return Status(); }},
        {"cowguard-gc-between", "T0[,T1[,T2]] (integers 0..1000000000; 0 turns that generation's trigger off)", false,
         [](const std::string& v, Settings& o) { return store(parse_between_thresholds(v), o.between); }},
        {"cowguard-guard", "block, warn or allow", false,
         [](const std::string& v, Settings& o) { return store(parse_guard(v), o.guard); }},
        {"cowguard-fast-exit", "true or false", false,
         [](const std::string& v, Settings& o) { return store(parse_bool(v), o.fast_exit); }},
        {"cowguard-stats", "true or false", false,
         [](const std::string& v, Settings& o) { return store(parse_bool(v), o.stats); }},
        {"cowguard-stats-interval", "seconds, a number from 0.1 to 3600", false,
         [](const std::string& v, Settings& o) { return store(parse_interval(v), o.stats_interval_s); }},
        {"cowguard-reload-on-uss", "megabytes, an integer from 1 (0 turns it off)", false,
         [](const std::string& v, Settings& o) { return store(parse_megabytes(v), o.reload_on_uss_mb); }},
        {"cowguard-reload-on-pss", "megabytes, an integer from 1 (0 turns it off)", false,
         [](const std::string& v, Settings& o) { return store(parse_megabytes(v), o.reload_on_pss_mb); }},
        {"cowguard-evil-reload-on-uss", "megabytes, an integer from 1 (0 turns it off)", false,
         [](const std::string& v, Settings& o) { return store(parse_megabytes(v), o.evil_reload_on_uss_mb); }},
        {"cowguard-evil-reload-on-pss", "megabytes, an integer from 1 (0 turns it off)", false,
         [](const std::string& v, Settings& o) { return store(parse_megabytes(v), o.evil_reload_on_pss_mb); }},
        {"cowguard-warmup", "module:callable (a dotted module path, a colon, a callable name)", true,
         [](const std::string& v, Settings& o) { return append(parse_warmup(v), o.warmup); }},
        {"cowguard-warmup-errors", "fatal or log", false,
         [](const std::string& v, Settings& o) { return store(parse_word(kWarmupErrorsWords, v), o.warmup_errors); }},
        {"cowguard-warmup-requests", "a request file path (absolute, or relative to uWSGI's working directory)", true,
         [](const std::string& v, Settings& o) { return append(parse_path(v), o.warmup_requests); }},
        {"cowguard-warmup-rounds", "an integer from 1 to 1000", false,
         [](const std::string& v, Settings& o) { return store(parse_int_from_1(v, 1000), o.warmup_rounds); }},
        {"cowguard-warmup-worker-rounds", "an integer from 0 to 1000 (0: workers replay nothing)", false,
         [](const std::string& v, Settings& o) {
             auto x = parse_uint(trim(v), 1000);
             if (!x) return Status(invalid(v));
             o.warmup_worker_rounds = static_cast<int>(*x);
             return Status();
         }},
        {"cowguard-warmup-after", "module:callable (a dotted module path, a colon, a callable name)", true,
         [](const std::string& v, Settings& o) { return append(parse_warmup(v), o.warmup_after); }},
        {"cowguard-warmup-dry-run", "true or false", false,
         [](const std::string& v, Settings& o) { return store(parse_bool(v), o.warmup_dry_run); }},
        {"cowguard-trim", "true or false", false,
         [](const std::string& v, Settings& o) { return store(parse_bool(v), o.trim); }},
        {"cowguard-cow-report", "a directory path (absolute, or relative to uWSGI's working directory)", false,
         [](const std::string& v, Settings& o) { return store(parse_path(v), o.cow_report_dir); }},
        {"cowguard-cow-report-signal", "a uWSGI signal number, an integer from 1 to 255", false,
         [](const std::string& v, Settings& o) { return store(parse_int_from_1(v, 255), o.cow_report_signal); }},
        {"cowguard-prometheus",
         "host:port (TCP, port 1 to 65535, an empty host is every interface) or a unix socket path (no colon, "
         "at most 107 bytes)",
         false, [](const std::string& v, Settings& o) { return store(parse_listen_address(v), o.prometheus); }},
        {"cowguard-instance-name", "a name of 1 to 128 characters, no control characters", false,
         [](const std::string& v, Settings& o) { return store(parse_instance_name(v), o.instance_name); }},
    };
    return s;
}

}  // namespace

const std::vector<std::string>& option_names() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> n;
        for (const auto& s : specs()) n.emplace_back(s.name);
        return n;
    }();
    return names;
}

bool option_is_list(const std::string& name) {
    for (const auto& s : specs())
        if (name == s.name) return s.list;
    return false;
}

const char* option_accepts(const std::string& name) {
    for (const auto& s : specs())
        if (name == s.name) return s.accepts;
    return "";
}

Result<bool> parse_bool(const std::string& v) {
    std::string l = lower(trim(v));
    if (l == "true" || l == "yes" || l == "on" || l == "1") return true;
    if (l == "false" || l == "no" || l == "off" || l == "0") return false;
    return invalid(v);
}

Result<GcChoice> parse_gc_policy(const std::string& v) {
    std::string l = lower(trim(v));
    if (l == "young") return GcChoice{GcPolicy::Young, kYoungThresholds};
    if (l == "between") return GcChoice{GcPolicy::Between, kYoungThresholds};
    if (l == "off") return GcChoice{GcPolicy::Off, GcThresholds{0, -1, -1}};
    auto t = parse_threshold_list(l);
    if (!t) return invalid(v);
    return GcChoice{GcPolicy::Thresholds, *t};
}

Result<GcThresholds> parse_between_thresholds(const std::string& v) {
    auto t = parse_threshold_list(trim(v));
    if (!t) return invalid(v);
    GcThresholds out = kBetweenAfterRequest;
    out.t0 = t->t0;
    if (t->t1 >= 0) out.t1 = t->t1;
    if (t->t2 >= 0) out.t2 = t->t2;
    return out;
}

Result<GuardMode> parse_guard(const std::string& v) { return parse_word(kGuardWords, v); }

Result<uint64_t> parse_megabytes(const std::string& v) {
    auto x = parse_uint(trim(v), kMaxMegabytes);
    if (!x) return invalid(v);
    return static_cast<uint64_t>(*x);
}

Result<double> parse_interval(const std::string& v) {
    std::string t = trim(v);
    if (t.empty() || t.size() > 16) return invalid(v);
    int dots = 0;
    for (char c : t) {
        if (c == '.') dots++;
        else if (c < '0' || c > '9') return invalid(v);
    }
    if (dots > 1 || t.front() == '.' || t.back() == '.') return invalid(v);
    errno = 0;
    char* end = nullptr;
    double d = std::strtod(t.c_str(), &end);
    if (errno != 0 || end != t.c_str() + t.size() || !std::isfinite(d)) return invalid(v);
    if (d < 0.1 || d > 3600) return invalid(v);
    return d;
}

Result<Toggle> parse_toggle(const std::string& v) {
    if (lower(trim(v)) == toggle_name(Toggle::Auto)) return Toggle::Auto;
    auto b = parse_bool(v);
    if (!b) return invalid(v);
    return *b ? Toggle::On : Toggle::Off;
}

const char* toggle_name(Toggle m) { return word_of(kToggleWords, m); }

Result<ImmortalizePlan> plan_immortalize(Toggle mode, bool supported, const std::string& python, bool freeze,
                                         bool lazy) {
    if (mode == Toggle::Off) return ImmortalizePlan{false, "off"};
    if (!supported) {
        if (mode == Toggle::On)
            return fail_with("cowguard-immortalize: true needs a Python with immortal objects (3.12 or later, not "
                             "free-threaded); this uWSGI runs Python " + python + ": use auto or false");
        return ImmortalizePlan{false, "off (auto: Python " + python + " has no immortal objects)"};
    }
    if (!freeze) {
        if (mode == Toggle::On)
            return fail_with("cowguard-immortalize: true makes the frozen heap immortal and needs cowguard-freeze = true");
        return ImmortalizePlan{false, "off (auto: cowguard-freeze = false)"};
    }
    if (lazy && mode == Toggle::Auto) return ImmortalizePlan{false, "off (auto: lazy-apps, no heap is shared)"};
    return ImmortalizePlan{true, "on"};
}

bool plan_fill_holes(Toggle mode, bool lazy) { return !lazy && mode != Toggle::Off; }

Result<std::string> parse_warmup(const std::string& v) {
    std::string t = trim(v);
    size_t colon = t.find(':');
    if (colon == std::string::npos || t.find(':', colon + 1) != std::string::npos) return invalid(v);
    if (!is_dotted_name(t.substr(0, colon)) || !is_dotted_name(t.substr(colon + 1))) return invalid(v);
    return t;
}

Result<ListenAddress> parse_listen_address(const std::string& v) {
    std::string t = trim(v);
    if (t.empty() || t.find('\0') != std::string::npos) return invalid(v);
    for (unsigned char c : t)
        if (c < 0x20 || c == 0x7f) return invalid(v);
    ListenAddress a;
    a.text = t;
    size_t colon = t.rfind(':');
    if (colon == std::string::npos) {
        if (t.size() > 107) return invalid(v);  // sun_path holds 108 bytes with the terminating NUL
        a.unix_socket = true;
        a.path = t;
        return a;
    }
    auto port = parse_uint(t.substr(colon + 1), 65535);
    if (!port || *port == 0) return invalid(v);
    std::string host = t.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
        if (host.empty()) return invalid(v);
        for (char c : host)
            if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) return invalid(v);
    } else {
        for (char c : host)
            if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) return invalid(v);
    }
    a.host = host;
    a.port = static_cast<int>(*port);
    return a;
}

Result<std::string> parse_instance_name(const std::string& v) {
    std::string t = trim(v);
    if (t.empty() || t.size() > 128) return invalid(v);
    for (unsigned char c : t)
        if (c < 0x20 || c == 0x7f) return invalid(v);
    return t;
}

Result<BuiltSettings> build_settings(const RawOptions& raw) {
    BuiltSettings built;
    Settings& s = built.settings;
    for (const auto& [name, values] : raw) {
        const OptionSpec* spec = nullptr;
        for (const auto& sp : specs())
            if (name == sp.name) spec = &sp;
        if (!spec) return fail_with(name + ": not a cowguard option");
        if (values.empty()) continue;
        if (!spec->list && values.size() > 1) {
            std::string dropped;
            for (size_t i = 0; i + 1 < values.size(); i++) dropped += (i ? ", '" : "'") + printable(values[i]) + "'";
            built.notes.push_back(name + " given " + std::to_string(values.size()) + " times; using the last value '" +
                                  printable(values.back()) + "' over " + dropped);
        }
        // Single-valued options validate every value given, so a typo is never hidden by a later value.
        for (const auto& v : values) {
            Settings probe = s;
            if (Status applied = spec->apply(v, probe); !applied)
                return fail_with(name + ": " + applied.error() + "; accepts " + spec->accepts);
            if (spec->list || &v == &values.back()) s = probe;
        }
    }
    return built;
}

std::string describe_policy(GcPolicy policy, const GcThresholds& t) {
    auto th = [&t]() {
        std::string s = std::to_string(t.t0);
        if (t.t1 >= 0) s += "," + std::to_string(t.t1);
        if (t.t2 >= 0) s += "," + std::to_string(t.t2);
        return s;
    };
    switch (policy) {
        case GcPolicy::Young: return "young (thresholds " + th() + ")";
        case GcPolicy::Between: return "between (thresholds " + th() + " in requests)";
        case GcPolicy::Off: return "off";
        case GcPolicy::Thresholds: return "thresholds " + th();
    }
    return "?";
}

std::string describe_gc(const Settings& s) {
    std::string d = describe_policy(s.gc, s.thresholds);
    if (s.gc != GcPolicy::Between) return d;
    d.pop_back();  // the closing parenthesis
    return d + ", after requests at " + std::to_string(s.between.t0) + "," + std::to_string(s.between.t1) + "," +
           std::to_string(s.between.t2) + ")";
}

std::vector<std::pair<std::string, std::string>> describe_settings(const Settings& s) {
    auto b = [](bool v) { return std::string(v ? "true" : "false"); };
    auto n = [](uint64_t v) { return std::to_string(v); };
    std::string interval = std::to_string(s.stats_interval_s);
    interval.erase(interval.find_last_not_of('0') + 1);
    if (!interval.empty() && interval.back() == '.') interval.pop_back();
    auto join = [](const std::vector<std::string>& v) {
        std::string out;
        for (const auto& w : v) out += (out.empty() ? "" : " ") + w;
        return out;
    };
    std::string warmup = join(s.warmup);
    std::string gc = s.gc == GcPolicy::Young     ? "young"
                     : s.gc == GcPolicy::Between ? "between"
                     : s.gc == GcPolicy::Off     ? "off"
                                                 : describe_policy(s.gc, s.thresholds).substr(11);
    std::string between = std::to_string(s.between.t0) + "," + std::to_string(s.between.t1) + "," +
                          std::to_string(s.between.t2);
    return {
        {"cowguard", b(s.enabled)},
        {"cowguard-freeze", b(s.freeze)},
        {"cowguard-collect-before-freeze", b(s.collect_before_freeze)},
        {"cowguard-immortalize", toggle_name(s.immortalize)},
        {"cowguard-fill-holes", toggle_name(s.fill_holes)},
        {"cowguard-gc", gc},
        {"cowguard-gc-between", between},
        {"cowguard-guard", guard_name(s.guard)},
        {"cowguard-fast-exit", b(s.fast_exit)},
        {"cowguard-stats", b(s.stats)},
        {"cowguard-stats-interval", interval},
        {"cowguard-reload-on-uss", n(s.reload_on_uss_mb)},
        {"cowguard-reload-on-pss", n(s.reload_on_pss_mb)},
        {"cowguard-evil-reload-on-uss", n(s.evil_reload_on_uss_mb)},
        {"cowguard-evil-reload-on-pss", n(s.evil_reload_on_pss_mb)},
        {"cowguard-warmup", warmup},
        {"cowguard-warmup-errors", word_of(kWarmupErrorsWords, s.warmup_errors)},
        {"cowguard-warmup-requests", join(s.warmup_requests)},
        {"cowguard-warmup-rounds", std::to_string(s.warmup_rounds)},
        {"cowguard-warmup-worker-rounds", std::to_string(s.warmup_worker_rounds)},
        {"cowguard-warmup-after", join(s.warmup_after)},
        {"cowguard-warmup-dry-run", b(s.warmup_dry_run)},
        {"cowguard-trim", b(s.trim)},
        {"cowguard-cow-report", s.cow_report_dir},
        {"cowguard-cow-report-signal", std::to_string(s.cow_report_signal)},
        {"cowguard-prometheus", s.prometheus.text},
        {"cowguard-instance-name", s.instance_name},
    };
}

const char* guard_name(GuardMode g) { return word_of(kGuardWords, g); }

}  // namespace cowguard
