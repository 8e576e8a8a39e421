// Parsing and validation of every cowguard option value. Pure: no uWSGI, no CPython.
// The glue collects the raw strings the user wrote; build_settings() turns them into one
// immutable Settings value or one error line naming the option and what it accepts.
#pragma once

// uwsgiplugin.py passes no -std= (uWSGI's builder compiles every file with one gcc command, and it
// would reach frozen_walk.c too): it relies on GCC's default, gnu++17 since GCC 11. Every plugin
// build compiles this header, so an older default stops the build here rather than in some template.
#if __cplusplus < 201703L
#error "cowguard needs C++17: GCC 11 or later (whose default it is), or the CMake build"
#endif

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cowguard/result.h"

namespace cowguard {

enum class GcPolicy { Young, Between, Off, Thresholds };
enum class GuardMode { Block, Warn, Allow };
enum class WarmupErrors { Fatal, Log };
enum class Toggle { Auto, On, Off };  // true, false or auto

// -1 means "leave this generation's threshold as CPython has it".
struct GcThresholds {
    long t0 = -1, t1 = -1, t2 = -1;
};

// Thresholds used by `cowguard-gc = young`. After gc.freeze() every tracked object created
// before the fork sits in the permanent generation, so any collection scans only objects
// created in this worker; a large gen-0 threshold makes collections rare enough to cost about
// what `off` costs while reference cycles are still freed (measured by bench/, see README).
constexpr GcThresholds kYoungThresholds{10000, 20, 100};

// `cowguard-gc = between`: inside requests the young thresholds (no collection interrupts a
// request that frees what it allocates; a long one making cycles is still collected at 10000),
// and after each request a collection when the counts reached cowguard-gc-between's thresholds
// (CPython's own 700,10,10 by default: as much garbage held as stock, collected off the clock).
constexpr GcThresholds kBetweenAfterRequest{700, 10, 10};

// Where cowguard-prometheus listens: host:port over TCP, or a unix socket path.
struct ListenAddress {
    std::string text;      // as given (trimmed); empty: not set
    bool unix_socket = false;
    std::string host;      // TCP: an IPv4 address, a [bracketed] IPv6 one, or a name; empty: every interface
    int port = 0;          // TCP: 1 to 65535
    std::string path;      // unix
};

struct Settings {
    bool enabled = true;
    bool freeze = true;
    bool collect_before_freeze = true;
    Toggle immortalize = Toggle::Auto;  // auto: on where the Python has immortal objects
    Toggle fill_holes = Toggle::Auto;   // auto: on unless lazy-apps
    GcPolicy gc = GcPolicy::Between;  // measured to win over young (README, "Why between")
    GcThresholds thresholds = kYoungThresholds;  // effective thresholds for Young/Between/Thresholds
    GcThresholds between = kBetweenAfterRequest; // cowguard-gc-between: after-request thresholds (all three set)
    GuardMode guard = GuardMode::Block;
    bool fast_exit = true;
    bool stats = true;
    double stats_interval_s = 1.0;
    uint64_t reload_on_uss_mb = 0;  // 0: off
    uint64_t reload_on_pss_mb = 0;
    uint64_t evil_reload_on_uss_mb = 0;
    uint64_t evil_reload_on_pss_mb = 0;
    std::vector<std::string> warmup;  // module:callable, in order
    WarmupErrors warmup_errors = WarmupErrors::Fatal;
    std::vector<std::string> warmup_requests;  // request files, in order (read and parsed at init)
    int warmup_rounds = 1;                      // times the requests are replayed
    int warmup_worker_rounds = 0;               // times each worker replays them after its fork (0: never)
    std::vector<std::string> warmup_after;      // module:callable, run after the replay
    bool warmup_dry_run = false;                // log the parsed requests, replay nothing
    bool trim = false;
    std::string cow_report_dir;  // empty: off
    int cow_report_signal = 99;  // uWSGI signal that asks every worker for its report now
    ListenAddress prometheus;    // cowguard-prometheus; text empty: off
    std::string instance_name;   // cowguard-instance-name; empty: the default (see the glue)
};

// One option as the user wrote it: every value given, in order (the last one wins for
// single-valued options; build_settings reports the overridden ones through `notes`).
using RawOptions = std::map<std::string, std::vector<std::string>>;

// Names of every option cowguard accepts (for the glue's options table and for docs).
const std::vector<std::string>& option_names();
// True for options that may be given more than once and keep every value.
bool option_is_list(const std::string& name);
// What an option accepts, in words (for help texts and error lines); "" for unknown names.
const char* option_accepts(const std::string& name);

// The settings, and informational lines about them (e.g. overridden values).
struct BuiltSettings {
    Settings settings;
    std::vector<std::string> notes;
};

// Every option checked; the error is one line: "cowguard-gc: 'x' is not valid; accepts ...".
Result<BuiltSettings> build_settings(const RawOptions& raw);

// Single-value parsers, exposed for the unit tests. Each returns the value, or the error
// "'<value as written>' is not valid" (build_settings adds the option and what it accepts).
Result<bool> parse_bool(const std::string& v);
struct GcChoice {  // cowguard-gc: the policy and its effective thresholds
    GcPolicy policy;
    GcThresholds thresholds;
};
Result<GcChoice> parse_gc_policy(const std::string& v);
// cowguard-gc-between: T0[,T1[,T2]], integers 0..1000000000 (0 turns that trigger off); the
// generations not given keep kBetweenAfterRequest's values.
Result<GcThresholds> parse_between_thresholds(const std::string& v);
Result<GuardMode> parse_guard(const std::string& v);
Result<uint64_t> parse_megabytes(const std::string& v);
Result<double> parse_interval(const std::string& v);
Result<std::string> parse_warmup(const std::string& v);  // module:callable, spaces around removed
Result<ListenAddress> parse_listen_address(const std::string& v);
Result<std::string> parse_instance_name(const std::string& v);
Result<Toggle> parse_toggle(const std::string& v);

// Whether to make the frozen heap immortal in this uWSGI, from cowguard-immortalize and what
// the process can do: `supported` (this Python has immortal objects), `python` (its version, for
// the lines), cowguard-freeze, lazy-apps. Either the plan, `run` with `why` (the words the startup
// line says about it), or the error: the one startup line that refuses.
struct ImmortalizePlan {
    bool run = false;
    std::string why;
};
Result<ImmortalizePlan> plan_immortalize(Toggle mode, bool supported, const std::string& python, bool freeze,
                                         bool lazy);
const char* toggle_name(Toggle m);

// Whether the master fills pymalloc's holes before the fork (cowguard-fill-holes): `true` and
// `auto` do (measured to pay on 3.11 and 3.13), never with lazy-apps (the master forks no app heap).
bool plan_fill_holes(Toggle mode, bool lazy);

// The value as the user wrote it, control characters as \xNN: error and note lines stay on one line.
// With escape_non_ascii, bytes over 0x7f too (for text that must be ASCII, such as HTTP request lines).
std::string printable(std::string_view v, bool escape_non_ascii = false);

// Human-readable forms, for the startup line and the stats document.
std::string describe_policy(GcPolicy policy, const GcThresholds& t);
// The worker GC policy of `s` for the startup line (with the after-request thresholds of `between`).
std::string describe_gc(const Settings& s);
const char* guard_name(GuardMode g);
// Every option with its effective value as text, in option_names() order (for the stats).
std::vector<std::pair<std::string, std::string>> describe_settings(const Settings& s);

}  // namespace cowguard
