// Unit tests for include/cowguard/options.h.

#include <cstdio>
#include <cstdlib>
#include <string>

#include "cowguard/options.h"

// Last: check.h defines a fail() macro that breaks <ios> and friends.
#include <check.h>
#include "run_suite.h"

using namespace cowguard;

namespace {

// build_settings on one option; returns the error line, or "" when accepted.
std::string error_of(const std::string& name, std::vector<std::string> values, Settings* out = nullptr) {
    auto r = build_settings({{name, std::move(values)}});
    if (!r) return r.error();
    if (out) *out = r->settings;
    return "";
}

bool rejected(const std::string& name, const std::string& value) {
    std::string e = error_of(name, {value});
    return e.rfind(name + ": '" + printable(value) + "' is not valid; accepts ", 0) == 0 &&
           e.find('\n') == std::string::npos;
}

}  // namespace

START_TEST(defaults) {
    auto r = build_settings({});
    ck_assert(r.ok());
    ck_assert(r->notes.empty());
    const Settings& s = r->settings;
    ck_assert(s.enabled && s.freeze && s.collect_before_freeze && s.fast_exit && s.stats && !s.trim);
    ck_assert(s.gc == GcPolicy::Between);
    ck_assert_int_eq(s.thresholds.t0, kYoungThresholds.t0);  // inside requests
    ck_assert_int_eq(s.between.t0, kBetweenAfterRequest.t0);
    ck_assert(s.guard == GuardMode::Block);
    ck_assert(s.warmup_errors == WarmupErrors::Fatal);
    ck_assert(s.immortalize == Toggle::Auto && s.fill_holes == Toggle::Auto);
    ck_assert_uint_eq(s.reload_on_uss_mb, 0);
    ck_assert(s.cow_report_dir.empty());
    ck_assert(s.prometheus.text.empty() && s.instance_name.empty());
    ck_assert(s.warmup_requests.empty() && s.warmup_after.empty() && !s.warmup_dry_run);
    ck_assert_int_eq(s.warmup_rounds, 1);
    ck_assert_int_eq(s.warmup_worker_rounds, 0);
    // Every name is known, and only the warmup callables and request files keep a list.
    ck_assert_uint_eq(option_names().size(), 27);
    ck_assert_int_eq(s.cow_report_signal, 99);
    for (const auto& n : option_names())
        ck_assert(option_is_list(n) ==
                  (n == "cowguard-warmup" || n == "cowguard-warmup-requests" || n == "cowguard-warmup-after"));
    ck_assert(!option_is_list("cowguard-bogus"));
}
END_TEST

START_TEST(good_values) {
    Settings s;
    RawOptions raw = {
        {"cowguard", {"yes"}},
        {"cowguard-freeze", {"Off"}},
        {"cowguard-collect-before-freeze", {" 0 "}},
        {"cowguard-immortalize", {" Yes "}},
        {"cowguard-fill-holes", {"Auto"}},
        {"cowguard-gc", {"700,10,10"}},
        {"cowguard-guard", {"WARN"}},
        {"cowguard-fast-exit", {"false"}},
        {"cowguard-stats", {"on"}},
        {"cowguard-stats-interval", {"0.5"}},
        {"cowguard-reload-on-uss", {"512"}},
        {"cowguard-reload-on-pss", {"1073741824"}},  // the largest accepted
        {"cowguard-evil-reload-on-uss", {"0"}},
        {"cowguard-evil-reload-on-pss", {"2048"}},
        {"cowguard-warmup", {"app.warm:run", " pkg.mod:Class.method "}},
        {"cowguard-warmup-errors", {"log"}},
        {"cowguard-warmup-requests", {"urls.txt", " /srv/app/more urls.txt "}},
        {"cowguard-warmup-rounds", {"1000"}},
        {"cowguard-warmup-worker-rounds", {" 1000 "}},
        {"cowguard-warmup-after", {"app.db:close_all"}},
        {"cowguard-warmup-dry-run", {"yes"}},
        {"cowguard-trim", {"TRUE"}},
        {"cowguard-cow-report", {" /var/tmp/cow "}},
    };
    auto r = build_settings(raw);
    ck_assert_msg(r.ok(), "%s", r.ok() ? "" : r.error().c_str());
    ck_assert(r->notes.empty());
    s = r->settings;
    ck_assert(s.enabled && !s.freeze && !s.collect_before_freeze && !s.fast_exit && s.stats && s.trim);
    ck_assert(s.immortalize == Toggle::On);
    ck_assert(s.gc == GcPolicy::Thresholds);
    ck_assert_int_eq(s.thresholds.t0, 700);
    ck_assert_int_eq(s.thresholds.t1, 10);
    ck_assert_int_eq(s.thresholds.t2, 10);
    ck_assert(s.guard == GuardMode::Warn);
    ck_assert_double_eq_tol(s.stats_interval_s, 0.5, 1e-12);
    ck_assert_uint_eq(s.reload_on_uss_mb, 512);
    ck_assert_uint_eq(s.reload_on_pss_mb, 1073741824ULL);
    ck_assert_uint_eq(s.evil_reload_on_uss_mb, 0);
    ck_assert_uint_eq(s.evil_reload_on_pss_mb, 2048);
    ck_assert_uint_eq(s.warmup.size(), 2);
    ck_assert_str_eq(s.warmup[0].c_str(), "app.warm:run");
    ck_assert_str_eq(s.warmup[1].c_str(), "pkg.mod:Class.method");
    ck_assert(s.warmup_errors == WarmupErrors::Log);
    ck_assert_uint_eq(s.warmup_requests.size(), 2);
    ck_assert_str_eq(s.warmup_requests[0].c_str(), "urls.txt");
    ck_assert_str_eq(s.warmup_requests[1].c_str(), "/srv/app/more urls.txt");
    ck_assert_int_eq(s.warmup_rounds, 1000);
    ck_assert_int_eq(s.warmup_worker_rounds, 1000);
    ck_assert_uint_eq(s.warmup_after.size(), 1);
    ck_assert_str_eq(s.warmup_after[0].c_str(), "app.db:close_all");
    ck_assert(s.warmup_dry_run);
    ck_assert_str_eq(s.cow_report_dir.c_str(), "/var/tmp/cow");
}
END_TEST

START_TEST(gc_policy_forms) {
    GcPolicy p;
    GcThresholds t;
    // Parses `v` into p and t; false when refused.
    auto parse = [&](const std::string& v) {
        auto c = parse_gc_policy(v);
        if (c) p = c->policy, t = c->thresholds;
        return c.ok();
    };
    ck_assert(parse(" Young "));
    ck_assert(p == GcPolicy::Young);
    ck_assert_int_eq(t.t0, 10000);
    ck_assert(parse("off"));
    ck_assert(p == GcPolicy::Off);
    ck_assert_int_eq(t.t0, 0);
    ck_assert(parse("700"));
    ck_assert(p == GcPolicy::Thresholds);
    ck_assert_int_eq(t.t0, 700);
    ck_assert_int_eq(t.t1, -1);  // left as CPython has it
    ck_assert_int_eq(t.t2, -1);
    ck_assert(parse(" 700 , 10 "));
    ck_assert_int_eq(t.t1, 10);
    ck_assert_int_eq(t.t2, -1);
    ck_assert(parse("0,0,0"));
    ck_assert(parse("1000000000,1,1"));  // the largest accepted
    // ck_assert_str_eq keeps a char*: the strings must outlive the statement.
    std::string young = describe_policy(GcPolicy::Young, kYoungThresholds);
    std::string off = describe_policy(GcPolicy::Off, GcThresholds{0, -1, -1});
    std::string two = describe_policy(GcPolicy::Thresholds, GcThresholds{700, 10, -1});
    ck_assert_str_eq(young.c_str(), "young (thresholds 10000,20,100)");
    ck_assert_str_eq(off.c_str(), "off");
    ck_assert_str_eq(two.c_str(), "thresholds 700,10");
    ck_assert_str_eq(guard_name(GuardMode::Allow), "allow");
    ck_assert(parse(" BETWEEN"));
    ck_assert(p == GcPolicy::Between);
    ck_assert_int_eq(t.t0, 10000);  // inside requests: the young thresholds
    std::string between = describe_policy(GcPolicy::Between, kYoungThresholds);
    ck_assert_str_eq(between.c_str(), "between (thresholds 10000,20,100 in requests)");
}
END_TEST

START_TEST(printable_escapes_control_characters) {
    std::string nl = printable(std::string("a\nb\x7f\0c", 6)), plain = printable("young 1,2");
    ck_assert_str_eq(nl.c_str(), "a\\x0ab\\x7f\\x00c");
    ck_assert_str_eq(plain.c_str(), "young 1,2");
}
END_TEST

START_TEST(empty_values) {
    for (const auto& name : option_names()) ck_assert_msg(rejected(name, ""), "%s accepted \"\"", name.c_str());
    for (const auto& name : option_names()) ck_assert_msg(rejected(name, "   "), "%s accepted blanks", name.c_str());
}
END_TEST

START_TEST(negative_values) {
    ck_assert(rejected("cowguard-gc", "-1"));
    ck_assert(rejected("cowguard-gc", "700,-1"));
    ck_assert(rejected("cowguard-reload-on-uss", "-1"));
    ck_assert(rejected("cowguard-evil-reload-on-pss", "-512"));
    ck_assert(rejected("cowguard-stats-interval", "-1"));
    ck_assert(rejected("cowguard-reload-on-pss", "+5"));
}
END_TEST

START_TEST(huge_values) {
    ck_assert(rejected("cowguard-gc", "1000000001"));
    ck_assert(rejected("cowguard-gc", "700,10,99999999999999999999999"));
    ck_assert(rejected("cowguard-reload-on-uss", "1073741825"));
    ck_assert(rejected("cowguard-reload-on-uss", "18446744073709551616"));
    ck_assert(rejected("cowguard-reload-on-uss", "999999999999999999999999999999"));
    ck_assert(rejected("cowguard-stats-interval", "3601"));
    ck_assert(rejected("cowguard-stats-interval", "99999999999999999"));
    ck_assert(rejected("cowguard-stats-interval", "0.09"));  // too small, likewise
    ck_assert(rejected("cowguard-cow-report-signal", "256"));
    ck_assert(rejected("cowguard-cow-report-signal", "0"));
    ck_assert(!rejected("cowguard-cow-report-signal", "255"));
}
END_TEST

START_TEST(non_numeric_values) {
    for (const char* v : {"abc", "12MB", "1e3", "0x10", "1.5", "12 34", "½"}) {
        ck_assert_msg(rejected("cowguard-reload-on-uss", v), "reload-on-uss accepted %s", v);
        ck_assert_msg(rejected("cowguard-gc", v), "gc accepted %s", v);
    }
    for (const char* v : {"abc", "1e3", ".5", "1.", "1.2.3", "nan", "inf", "0x10", "1,5"})
        ck_assert_msg(rejected("cowguard-stats-interval", v), "interval accepted %s", v);
}
END_TEST

START_TEST(between_thresholds) {
    GcThresholds t = parse_between_thresholds("2000").value_or({});
    ck_assert_int_eq(t.t0, 2000);
    ck_assert_int_eq(t.t1, 10);  // not given: kBetweenAfterRequest's
    ck_assert_int_eq(t.t2, 10);
    ck_assert(parse_between_thresholds(" 0 , 5 , 0 ").ok());
    t = *parse_between_thresholds(" 0 , 5 , 0 ");
    ck_assert_int_eq(t.t0, 0);
    ck_assert_int_eq(t.t1, 5);
    ck_assert_int_eq(t.t2, 0);
    for (const char* v : {"-1", "young", "between", "off", "1,2,3,4", "700,", ",700", "1000000001", "1.5", "7e2"})
        ck_assert_msg(rejected("cowguard-gc-between", v), "gc-between accepted %s", v);
    RawOptions raw{{"cowguard-gc", {"between"}}, {"cowguard-gc-between", {"1000,5"}}};
    auto built = build_settings(raw);
    ck_assert(built.ok());
    const Settings& s = built->settings;
    ck_assert(s.gc == GcPolicy::Between);
    ck_assert_int_eq(s.between.t0, 1000);
    ck_assert_int_eq(s.between.t1, 5);
    ck_assert_int_eq(s.between.t2, 10);
    std::string line = describe_gc(s);
    ck_assert_str_eq(line.c_str(), "between (thresholds 10000,20,100 in requests, after requests at 1000,5,10)");
    bool listed = false;
    for (const auto& [name, value] : describe_settings(s))
        if (name == "cowguard-gc-between") listed = value == "1000,5,10";
    ck_assert(listed);
    // The error line names the option and what it accepts.
    auto r = build_settings(RawOptions{{"cowguard-gc-between", {"lots"}}});
    ck_assert(!r);
    ck_assert_msg(r.error().rfind("cowguard-gc-between: 'lots' is not valid; accepts T0[,T1[,T2]]", 0) == 0, "%s",
                  r.error().c_str());
}
END_TEST

START_TEST(threshold_lists) {
    ck_assert(rejected("cowguard-gc", "1,2,3,4"));  // 4 thresholds
    ck_assert(rejected("cowguard-gc", "700,"));     // trailing comma
    ck_assert(rejected("cowguard-gc", "700,10,"));
    ck_assert(rejected("cowguard-gc", ",700"));
    ck_assert(rejected("cowguard-gc", "700,,10"));
    ck_assert(rejected("cowguard-gc", "700;10"));
}
END_TEST

START_TEST(unknown_words) {
    ck_assert(rejected("cowguard", "perhaps"));
    ck_assert(rejected("cowguard-freeze", "y"));
    ck_assert(rejected("cowguard-gc", "sometimes"));
    ck_assert(rejected("cowguard-gc", "young,off"));
    ck_assert(rejected("cowguard-guard", "maybe"));
    ck_assert(rejected("cowguard-warmup-errors", "ignore"));
    ck_assert(rejected("cowguard-warmup", "app.warm"));        // no callable
    ck_assert(rejected("cowguard-warmup", "app:warm:run"));
    ck_assert(rejected("cowguard-warmup", "app-x:run"));
    ck_assert(rejected("cowguard-warmup", "app.:run"));
    ck_assert(rejected("cowguard-warmup", "1app:run"));
    ck_assert(rejected("cowguard-cow-report", std::string("/tmp/a\0b", 8)));
    ck_assert(rejected("cowguard-warmup-requests", "  "));
    ck_assert(rejected("cowguard-warmup-requests", std::string("a\0b", 3)));
    ck_assert(rejected("cowguard-warmup-rounds", "0"));
    ck_assert(rejected("cowguard-warmup-rounds", "1001"));
    ck_assert(rejected("cowguard-warmup-rounds", "-1"));
    ck_assert(rejected("cowguard-warmup-rounds", "2x"));
    ck_assert(!rejected("cowguard-warmup-worker-rounds", "0"));
    ck_assert(rejected("cowguard-warmup-worker-rounds", "1001"));
    ck_assert(rejected("cowguard-warmup-worker-rounds", "-1"));
    ck_assert(rejected("cowguard-warmup-worker-rounds", ""));
    ck_assert(rejected("cowguard-warmup-worker-rounds", "1.5"));
    ck_assert(rejected("cowguard-warmup-after", "close_all"));
    ck_assert(rejected("cowguard-warmup-dry-run", "perhaps"));
    // An unknown option name is an error of its own.
    std::string unknown = error_of("cowguard-bogus", {"1"});
    ck_assert_str_eq(unknown.c_str(), "cowguard-bogus: not a cowguard option");
}
END_TEST


START_TEST(listen_addresses) {
    cowguard::ListenAddress a;
    // Parses `v` into a; false when refused.
    auto parse = [&a](const std::string& v) {
        auto r = cowguard::parse_listen_address(v);
        if (r) a = *r;
        return r.ok();
    };
    ck_assert(parse(" 127.0.0.1:9191 "));
    ck_assert(!a.unix_socket && a.host == "127.0.0.1" && a.port == 9191 && a.text == "127.0.0.1:9191");
    ck_assert(parse(":9191") && a.host.empty() && a.port == 9191);
    ck_assert(parse("[::1]:80") && a.host == "::1" && a.port == 80);
    ck_assert(parse("localhost:65535") && a.host == "localhost");
    ck_assert(parse("/run/app/metrics.sock") && a.unix_socket && a.path == "/run/app/metrics.sock");
    ck_assert(parse("metrics.sock") && a.unix_socket);
    ck_assert(parse("/" + std::string(106, 'a')));  // 107 bytes
    for (const char* bad : {"127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:", "127.0.0.1:-1", "127.0.0.1:80x",
                            "127.0.0.1: 80", "host name:80", "[::1:80", "[]:80", "[x::1]:80", "a/b:80", ":",
                            "127.0.0.1:99999999999999999999999"})
        ck_assert_msg(rejected("cowguard-prometheus", bad), "accepted %s", bad);
    ck_assert(rejected("cowguard-prometheus", "/" + std::string(107, 'a')));  // 108 bytes
    ck_assert(rejected("cowguard-prometheus", "/tmp/a\nb"));
    ck_assert(rejected("cowguard-prometheus", std::string("/tmp/a\0b", 8)));
    // The error line names the option and what it accepts, on one line.
    std::string e = error_of("cowguard-prometheus", {"127.0.0.1:0\n"});
    ck_assert_msg(e.rfind("cowguard-prometheus: '127.0.0.1:0\\x0a' is not valid; accepts host:port", 0) == 0, "%s", e.c_str());
}
END_TEST

START_TEST(instance_names) {
    ck_assert(cowguard::parse_instance_name(" shop-api ").value_or("") == "shop-api");
    ck_assert(cowguard::parse_instance_name("a \"quoted\" \\ name").ok());
    ck_assert(cowguard::parse_instance_name(std::string(128, 'x')).ok());
    ck_assert(rejected("cowguard-instance-name", std::string(129, 'x')));
    ck_assert(rejected("cowguard-instance-name", "two\nlines"));
    ck_assert(rejected("cowguard-instance-name", "tab\there"));
}
END_TEST

START_TEST(duplicates_reported_in_notes) {
    auto r = build_settings({{"cowguard-gc", {"off", "700", "young"}}, {"cowguard-guard", {"warn"}}});
    ck_assert(r.ok());
    ck_assert_uint_eq(r->notes.size(), 1);
    ck_assert_str_eq(r->notes[0].c_str(), "cowguard-gc given 3 times; using the last value 'young' over 'off', '700'");
    ck_assert(r->settings.gc == GcPolicy::Young);  // the last one wins
    ck_assert(r->settings.guard == GuardMode::Warn);
    // A list option keeps every value and is not reported.
    r = build_settings({{"cowguard-warmup", {"a:b", "c:d", "a:b"}}});
    ck_assert(r.ok());
    ck_assert(r->notes.empty());
    ck_assert_uint_eq(r->settings.warmup.size(), 3);
}
END_TEST

START_TEST(bad_early_value_is_an_error) {
    Settings s;
    s.guard = GuardMode::Allow;  // must survive the failed build
    std::string e = error_of("cowguard-gc", {"bogus", "young"}, &s);
    ck_assert_str_eq(e.c_str(), "cowguard-gc: 'bogus' is not valid; accepts young, between, off or T0[,T1[,T2]] (integers 0..1000000000)");
    ck_assert(s.guard == GuardMode::Allow);
    ck_assert(!error_of("cowguard-reload-on-uss", {"1x", "512"}).empty());
    ck_assert(!error_of("cowguard-warmup", {"a:b", "nope", "c:d"}).empty());
    // A later bad value is an error too, and so is a good option next to a bad one.
    ck_assert(!error_of("cowguard-guard", {"block", "maybe"}).empty());
    ck_assert(!build_settings({{"cowguard-gc", {"young"}}, {"cowguard-guard", {"maybe"}}}));
    ck_assert(s.guard == GuardMode::Allow);
}
END_TEST

START_TEST(immortalize_values_and_plan) {
    ck_assert(parse_toggle(" AUTO ").value_or(Toggle::On) == Toggle::Auto);
    ck_assert(parse_toggle("0").value_or(Toggle::On) == Toggle::Off);
    ck_assert(parse_toggle("true").value_or(Toggle::Off) == Toggle::On);
    for (const char* bad : {"", "autom", "maybe", "2", "true false"}) ck_assert_msg(rejected("cowguard-immortalize", bad), "%s", bad);
    std::string e = error_of("cowguard-immortalize", {"sometimes"});
    ck_assert_str_eq(e.c_str(), "cowguard-immortalize: 'sometimes' is not valid; accepts true, false or auto");

    // A Python with immortal objects: auto and true run, false does not.
    auto p = plan_immortalize(Toggle::Auto, true, "3.13.5", true, false);
    ck_assert(p.ok() && p->run);
    ck_assert_str_eq(p->why.c_str(), "on");
    ck_assert(plan_immortalize(Toggle::On, true, "3.13.5", true, false)->run);
    p = plan_immortalize(Toggle::Off, true, "3.13.5", true, false);
    ck_assert(p.ok() && !p->run);
    ck_assert_str_eq(p->why.c_str(), "off");
    // 3.11: auto is off and says why; true refuses, naming the Python.
    p = plan_immortalize(Toggle::Auto, false, "3.11.2", true, false);
    ck_assert(p.ok() && !p->run);
    ck_assert_str_eq(p->why.c_str(), "off (auto: Python 3.11.2 has no immortal objects)");
    p = plan_immortalize(Toggle::On, false, "3.11.2", true, false);
    ck_assert(!p);
    ck_assert(p.error().rfind("cowguard-immortalize: true needs a Python with immortal objects", 0) == 0);
    ck_assert(p.error().find("Python 3.11.2") != std::string::npos && p.error().find('\n') == std::string::npos);
    ck_assert(plan_immortalize(Toggle::Off, false, "3.11.2", true, false).ok());
    // Nothing frozen: nothing to make immortal.
    ck_assert(!plan_immortalize(Toggle::Auto, true, "3.13.5", false, false)->run);
    ck_assert(!plan_immortalize(Toggle::On, true, "3.13.5", false, false));
    // lazy-apps: auto is off (nothing shared), true does as asked.
    p = plan_immortalize(Toggle::Auto, true, "3.14.8", true, true);
    ck_assert(p.ok() && !p->run && p->why.find("lazy-apps") != std::string::npos);
    ck_assert(plan_immortalize(Toggle::On, true, "3.14.8", true, true)->run);
    std::string names = std::string(toggle_name(Toggle::Auto)) + toggle_name(Toggle::On) + toggle_name(Toggle::Off);
    ck_assert_str_eq(names.c_str(), "autotruefalse");
    // cowguard-fill-holes: on unless false, never with lazy-apps.
    ck_assert(plan_fill_holes(Toggle::Auto, false));
    ck_assert(plan_fill_holes(Toggle::On, false));
    ck_assert(!plan_fill_holes(Toggle::Off, false));
    ck_assert(!plan_fill_holes(Toggle::On, true) && !plan_fill_holes(Toggle::Auto, true));
    ck_assert(rejected("cowguard-fill-holes", "sometimes") && rejected("cowguard-fill-holes", ""));
}
END_TEST

int main() {
    Suite* suite = suite_create("options");
    TCase* good = tcase_create("good");
    tcase_add_test(good, defaults);
    tcase_add_test(good, good_values);
    tcase_add_test(good, gc_policy_forms);
    tcase_add_test(good, duplicates_reported_in_notes);
    suite_add_tcase(suite, good);
    TCase* bad = tcase_create("bad");
    tcase_add_test(bad, printable_escapes_control_characters);
    tcase_add_test(bad, empty_values);
    tcase_add_test(bad, negative_values);
    tcase_add_test(bad, huge_values);
    tcase_add_test(bad, non_numeric_values);
    tcase_add_test(bad, threshold_lists);
    tcase_add_test(bad, between_thresholds);
    tcase_add_test(bad, unknown_words);
    tcase_add_test(bad, listen_addresses);
    tcase_add_test(bad, instance_names);
    tcase_add_test(bad, bad_early_value_is_an_error);
    tcase_add_test(bad, immortalize_values_and_plan);
    suite_add_tcase(suite, bad);

    return run_suite(suite);
}
