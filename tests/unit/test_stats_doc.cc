// Unit tests for include/cowguard/stats_doc.h. The uWSGI documents are real ones captured from
// uWSGI 2.0.21 (Debian 12); see tests/unit/fixtures/README.md.
#include <jansson.h>

#include <climits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cowguard/stats_doc.h"

// Last: it brings check.h, whose fail() macro breaks <ios> and friends.
#include "counted_gc.h"
#include "fixture.h"
#include "run_suite.h"

using cowguard::ProcessFigures;
using cowguard::TopFigures;
using Figures = std::map<int, ProcessFigures>;

namespace {

struct JsonDecref {
    void operator()(json_t* j) const { json_decref(j); }
};
using Json = std::unique_ptr<json_t, JsonDecref>;

Json parse(const std::string& text) {
    json_error_t err;
    Json j(json_loadb(text.data(), text.size(), JSON_ALLOW_NUL, &err));
    if (!j) ck_abort_msg("output is not JSON: %s (line %d)", err.text, err.line);
    return j;
}

std::vector<std::string> keys_of(json_t* obj) {
    std::vector<std::string> keys;
    const char* key;
    json_t* value;
    json_object_foreach(obj, key, value) keys.emplace_back(key);
    return keys;
}

// Pids in the captured documents.
constexpr int kWorker1 = 5160, kWorker2 = 5161;          // uwsgi_stats.json
constexpr int kMinWorker1 = 5226, kMinWorker2 = 5227;    // uwsgi_stats_minified.json

ProcessFigures sampled(int pid) {
    ProcessFigures p;
    p.pid = pid;
    p.mem_ok = true;
    p.rss = 30000000;
    p.vsz = 70000000;
    p.uss = 4000000;
    p.pss = 9000000;
    p.shared = 26000000;
    p.private_ = 4000000;
    p.swap = 8192;
    p.minflt = 1234;
    p.majflt = 5;
    p.minflt_per_request = 2.5;
    p.peak_private = 4100000;
    p.recycles = 3;
    p.gc_ok = true;
    p.counted = counted_gc();
    return p;
}

TopFigures top_figures() {
    TopFigures t;
    t.version = "0.1.0";
    t.options = {{"cowguard-gc", "young (thresholds 50000,20,100)"}, {"cowguard-guard", "block"}};
    t.frozen_objects = 123456;
    t.freeze_ms = 12.5;
    t.immortal_objects = 654321;
    t.immortalize_ms = 250.5;
    t.warmup_ms = 40;
    t.master_ok = true;
    t.master_rss = 31000000;
    t.master_uss = 1000000;
    t.master_pss = 5000000;
    t.master_shared = 30000000;
    t.pss_total = 23000000;
    t.shared_fraction_avg = 0.86;
    t.sampler_interval_s = 3.25;
    t.sampler_round_ms = 32.5;
    t.sampler_rounds = 17;
    return t;
}

json_int_t int_at(json_t* obj, const char* key) {
    json_t* v = json_object_get(obj, key);
    if (!json_is_integer(v)) ck_abort_msg("\"%s\" is not an integer", key);
    return json_integer_value(v);
}

json_t* worker_with_pid(json_t* doc, json_int_t pid) {
    size_t i;
    json_t* w;
    json_array_foreach(json_object_get(doc, "workers"), i, w) if (int_at(w, "pid") == pid) return w;
    ck_abort_msg("no worker with pid %lld", static_cast<long long>(pid));
    return nullptr;
}

// The keys and JSON types uwsgitop reads.
void assert_uwsgitop_types(json_t* doc) {
    ck_assert(json_is_string(json_object_get(doc, "version")));
    ck_assert(json_is_string(json_object_get(doc, "cwd")));
    for (const char* k : {"listen_queue", "uid", "gid", "pid"}) ck_assert_msg(json_is_integer(json_object_get(doc, k)), "%s", k);
    json_t* workers = json_object_get(doc, "workers");
    ck_assert(json_is_array(workers));
    ck_assert_uint_eq(json_array_size(workers), 2);
    size_t i;
    json_t* w;
    json_array_foreach(workers, i, w) {
        for (const char* k : {"id", "pid", "requests", "exceptions", "signals", "avg_rt", "rss", "vsz", "tx",
                              "respawn_count", "harakiri_count", "running_time", "last_spawn"})
            ck_assert_msg(json_is_integer(json_object_get(w, k)), "worker %zu: %s", i, k);
        ck_assert(json_is_string(json_object_get(w, "status")));
        ck_assert(json_is_array(json_object_get(w, "cores")));
    }
}

bool merge(const std::string& doc, const Figures& workers, std::string& out, bool minified = false,
           const TopFigures& top = top_figures(), const Figures& mules = {}) {
    return into(cowguard::merge_stats(doc, top, workers, mules, minified), out);
}

}  // namespace

START_TEST(merged_worker_has_cowguard_figures) {
    std::string in = fixture("uwsgi_stats.json"), out;
    ck_assert(merge(in, {{kWorker1, sampled(kWorker1)}}, out));
    Json doc = parse(out);
    assert_uwsgitop_types(doc.get());

    json_t* w = worker_with_pid(doc.get(), kWorker1);
    ck_assert_int_eq(int_at(w, "rss"), 30000000);
    ck_assert_int_eq(int_at(w, "vsz"), 70000000);
    ck_assert_int_eq(int_at(w, "uss"), 4000000);
    ck_assert_int_eq(int_at(w, "pss"), 9000000);
    json_t* cg = json_object_get(w, "cowguard");
    ck_assert(json_is_object(cg));
    ck_assert_int_eq(int_at(cg, "shared"), 26000000);
    ck_assert_int_eq(int_at(cg, "private"), 4000000);
    ck_assert_int_eq(int_at(cg, "swap"), 8192);
    ck_assert_int_eq(int_at(cg, "minflt"), 1234);
    ck_assert_int_eq(int_at(cg, "majflt"), 5);
    ck_assert_double_eq_tol(json_real_value(json_object_get(cg, "minflt_per_request")), 2.5, 1e-12);
    ck_assert_int_eq(int_at(cg, "peak_private"), 4100000);
    ck_assert_int_eq(int_at(cg, "recycles"), 3);
    json_t* gc = json_object_get(cg, "gc");
    ck_assert(json_is_true(json_object_get(gc, "enabled")));
    json_t* th = json_object_get(gc, "thresholds");
    ck_assert_uint_eq(json_array_size(th), 3);
    ck_assert_int_eq(json_integer_value(json_array_get(th, 0)), 50000);
    ck_assert_int_eq(json_integer_value(json_array_get(th, 2)), 100);
    json_t* coll = json_object_get(gc, "collections");
    ck_assert_uint_eq(json_array_size(coll), 3);
    ck_assert_int_eq(json_integer_value(json_array_get(coll, 0)), 7);
    ck_assert_int_eq(int_at(gc, "frozen"), 123456);
    ck_assert_int_eq(int_at(gc, "collected"), 99);
    ck_assert_int_eq(int_at(gc, "uncollectable"), 1);
    ck_assert_double_eq_tol(json_real_value(json_object_get(gc, "time_ms")), 0.75, 1e-12);
    ck_assert_int_eq(int_at(gc, "blocked_calls"), 2);
    ck_assert_int_eq(int_at(gc, "restored"), 1);
    json_t* inside = json_object_get(gc, "in_request");
    json_t* after = json_object_get(gc, "after_request");
    ck_assert_uint_eq(json_array_size(json_object_get(inside, "collections")), 3);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(inside, "collections"), 0)), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(inside, "collections"), 2)), 0);
    ck_assert_double_eq_tol(json_real_value(json_array_get(json_object_get(inside, "time_ms"), 0)), 0.25, 1e-12);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(after, "collections"), 1)), 1);
    ck_assert_uint_eq(json_array_size(json_object_get(after, "time_ms")), 3);
    ck_assert_double_eq_tol(json_real_value(json_array_get(json_object_get(after, "time_ms"), 0)), 0.375, 1e-12);
}
END_TEST

START_TEST(existing_keys_keep_order_and_values) {
    std::string in = fixture("uwsgi_stats.json"), out;
    ck_assert(merge(in, {{kWorker1, sampled(kWorker1)}}, out));
    Json before = parse(in), after = parse(out);

    // Top level: uWSGI's keys in uWSGI's order, then "cowguard"; each value unchanged but "workers".
    std::vector<std::string> top_before = keys_of(before.get()), top_after = keys_of(after.get());
    ck_assert_uint_eq(top_after.size(), top_before.size() + 1);
    for (size_t i = 0; i < top_before.size(); i++) {
        ck_assert_str_eq(top_after[i].c_str(), top_before[i].c_str());
        if (top_before[i] != "workers")
            ck_assert_msg(json_equal(json_object_get(before.get(), top_before[i].c_str()),
                                     json_object_get(after.get(), top_before[i].c_str())),
                          "%s changed", top_before[i].c_str());
    }
    ck_assert_str_eq(top_after.back().c_str(), "cowguard");

    // Merged worker: same keys in place (rss/vsz replaced where they were), then the new ones.
    json_t* w_before = worker_with_pid(before.get(), kWorker1);
    json_t* w_after = worker_with_pid(after.get(), kWorker1);
    std::vector<std::string> wk_before = keys_of(w_before), wk_after = keys_of(w_after);
    ck_assert_uint_eq(wk_after.size(), wk_before.size() + 3);
    for (size_t i = 0; i < wk_before.size(); i++) {
        ck_assert_str_eq(wk_after[i].c_str(), wk_before[i].c_str());
        const char* k = wk_before[i].c_str();
        if (wk_before[i] != "rss" && wk_before[i] != "vsz")
            ck_assert_msg(json_equal(json_object_get(w_before, k), json_object_get(w_after, k)), "%s changed", k);
    }
    ck_assert_str_eq(wk_after[wk_before.size()].c_str(), "uss");
    ck_assert_str_eq(wk_after[wk_before.size() + 1].c_str(), "pss");
    ck_assert_str_eq(wk_after[wk_before.size() + 2].c_str(), "cowguard");

    // The worker whose pid is not in the map is untouched.
    ck_assert(json_equal(worker_with_pid(before.get(), kWorker2), worker_with_pid(after.get(), kWorker2)));
}
END_TEST

START_TEST(top_level_cowguard_object) {
    std::string out;
    ck_assert(merge(fixture("uwsgi_stats.json"), {}, out));
    Json doc = parse(out);
    json_t* cg = json_object_get(doc.get(), "cowguard");
    ck_assert(json_is_object(cg));
    std::vector<std::string> keys = keys_of(cg);
    std::vector<std::string> expected = {"version", "options", "frozen_objects", "freeze_ms", "immortal_objects",
                                         "immortalize_ms", "warmup_ms", "master", "totals", "sampler"};
    ck_assert_uint_eq(keys.size(), expected.size());
    for (size_t i = 0; i < keys.size(); i++) ck_assert_str_eq(keys[i].c_str(), expected[i].c_str());
    ck_assert_str_eq(json_string_value(json_object_get(cg, "version")), "0.1.0");
    json_t* options = json_object_get(cg, "options");
    ck_assert_str_eq(json_string_value(json_object_get(options, "cowguard-gc")), "young (thresholds 50000,20,100)");
    ck_assert_str_eq(json_string_value(json_object_get(options, "cowguard-guard")), "block");
    ck_assert_int_eq(int_at(cg, "frozen_objects"), 123456);
    ck_assert_double_eq_tol(json_number_value(json_object_get(cg, "freeze_ms")), 12.5, 1e-12);
    ck_assert_int_eq(int_at(cg, "immortal_objects"), 654321);
    ck_assert_double_eq_tol(json_number_value(json_object_get(cg, "immortalize_ms")), 250.5, 1e-12);
    ck_assert_double_eq_tol(json_number_value(json_object_get(cg, "warmup_ms")), 40, 1e-12);
    json_t* master = json_object_get(cg, "master");
    ck_assert_int_eq(int_at(master, "rss"), 31000000);
    ck_assert_int_eq(int_at(master, "uss"), 1000000);
    ck_assert_int_eq(int_at(master, "pss"), 5000000);
    ck_assert_int_eq(int_at(master, "shared"), 30000000);
    json_t* totals = json_object_get(cg, "totals");
    ck_assert_int_eq(int_at(totals, "pss"), 23000000);
    ck_assert_double_eq_tol(json_real_value(json_object_get(totals, "shared_fraction_avg")), 0.86, 1e-12);
    json_t* sampler = json_object_get(cg, "sampler");
    ck_assert_double_eq_tol(json_number_value(json_object_get(sampler, "interval_s")), 3.25, 1e-12);
    ck_assert_double_eq_tol(json_number_value(json_object_get(sampler, "round_ms")), 32.5, 1e-12);
    ck_assert_int_eq(int_at(sampler, "rounds"), 17);
}
END_TEST

START_TEST(empty_workers_map_keeps_document) {
    std::string in = fixture("uwsgi_stats.json"), out;
    TopFigures top = top_figures();
    top.master_ok = false;
    ck_assert(merge(in, {}, out, false, top));
    Json before = parse(in), after = parse(out);
    assert_uwsgitop_types(after.get());
    ck_assert(json_equal(json_object_get(before.get(), "workers"), json_object_get(after.get(), "workers")));
    json_t* cg = json_object_get(after.get(), "cowguard");
    ck_assert(json_is_object(cg));
    ck_assert_ptr_null(json_object_get(cg, "master"));
    ck_assert(json_is_object(json_object_get(cg, "totals")));
    // Deleting our addition gives back uWSGI's document.
    json_object_del(after.get(), "cowguard");
    ck_assert(json_equal(before.get(), after.get()));
}
END_TEST

START_TEST(unsampled_worker_keeps_uwsgi_memory) {
    // The minified capture was taken with --memory-report, so uWSGI's own rss/vsz are non-zero.
    std::string in = fixture("uwsgi_stats_minified.json"), out;
    ProcessFigures p = sampled(kMinWorker1);
    p.mem_ok = false;
    p.gc_ok = false;
    ck_assert(merge(in, {{kMinWorker1, p}, {kMinWorker2, sampled(kMinWorker2)}}, out, true));
    Json doc = parse(out);
    json_t* w = worker_with_pid(doc.get(), kMinWorker1);
    ck_assert_int_eq(int_at(w, "rss"), 11083776);
    ck_assert_int_eq(int_at(w, "vsz"), 61001728);
    ck_assert_ptr_null(json_object_get(w, "uss"));
    ck_assert_ptr_null(json_object_get(w, "pss"));
    json_t* cg = json_object_get(w, "cowguard");
    std::vector<std::string> keys = keys_of(cg);
    ck_assert_uint_eq(keys.size(), 2);
    ck_assert_str_eq(keys[0].c_str(), "peak_private");
    ck_assert_str_eq(keys[1].c_str(), "recycles");
    // The other worker was sampled: its uWSGI figures are replaced.
    json_t* w2 = worker_with_pid(doc.get(), kMinWorker2);
    ck_assert_int_eq(int_at(w2, "rss"), 30000000);
    ck_assert(json_is_object(json_object_get(json_object_get(w2, "cowguard"), "gc")));
}
END_TEST

START_TEST(minified_and_indented_output) {
    std::string min_out, indented_out;
    std::string in = fixture("uwsgi_stats_minified.json");
    Figures workers = {{kMinWorker1, sampled(kMinWorker1)}};
    ck_assert(merge(in, workers, min_out, true));
    ck_assert(merge(in, workers, indented_out, false));
    ck_assert(min_out.find('\n') == std::string::npos);
    ck_assert(min_out.find(": ") == std::string::npos);
    ck_assert(indented_out.find("\n \"version\"") != std::string::npos);
    Json a = parse(min_out), b = parse(indented_out);
    ck_assert(json_equal(a.get(), b.get()));
    // The indented input merges the same way.
    std::string from_indented;
    ck_assert(merge(fixture("uwsgi_stats.json"), {}, from_indented, true));
    ck_assert(from_indented.find('\n') == std::string::npos);
}
END_TEST

START_TEST(invalid_input_leaves_out_untouched) {
    const char* bad[] = {"", "not json", "[1,2,3]", "42", "\"str\"", "null", "{", "{\"a\":1} trailing",
                         "{\"a\":1,}", "{\"workers\":[{\"pid\":5160}]", "{\"a\":18446744073709551615}"};
    for (const char* text : bad) {
        std::string out = "sentinel";
        ck_assert_msg(!merge(text, {{5160, sampled(5160)}}, out), "accepted: %s", text);
        ck_assert_str_eq(out.c_str(), "sentinel");
    }
    std::string out = "sentinel";
    ck_assert(!into(cowguard::merge_stats(std::string_view(), top_figures(), {}, {}, true), out));
    ck_assert_str_eq(out.c_str(), "sentinel");
}
END_TEST

START_TEST(odd_shapes_are_tolerated) {
    // Not uWSGI's shape, but still an object: only our keys are added.
    const char* docs[] = {
        "{}",
        "{\"workers\":7}",
        "{\"workers\":[1,\"x\",null,{},{\"pid\":\"5160\"},{\"pid\":5160.0},{\"pid\":-5160},{\"pid\":4294972456}]}",
    };
    for (const char* text : docs) {
        std::string out;
        ck_assert_msg(merge(text, {{5160, sampled(5160)}}, out, true), "%s", text);
        Json before = parse(text), after = parse(out);
        json_object_del(after.get(), "cowguard");
        ck_assert_msg(json_equal(before.get(), after.get()), "%s -> %s", text, out.c_str());
    }
}
END_TEST

START_TEST(mules_are_merged) {
    std::string in = "{\"pid\":1,\"workers\":[{\"id\":1,\"pid\":10,\"rss\":0}],"
                     "\"mules\":[{\"id\":1,\"pid\":20,\"rss\":0,\"vsz\":0},{\"id\":2,\"pid\":21}]}";
    std::string out;
    ck_assert(merge(in, {{10, sampled(10)}}, out, true, top_figures(), {{20, sampled(20)}, {10, sampled(10)}}));
    Json doc = parse(out);
    json_t* mules = json_object_get(doc.get(), "mules");
    ck_assert_int_eq(int_at(json_array_get(mules, 0), "rss"), 30000000);
    ck_assert_int_eq(int_at(json_array_get(mules, 0), "pss"), 9000000);
    ck_assert(json_is_object(json_object_get(json_array_get(mules, 0), "cowguard")));
    ck_assert_ptr_null(json_object_get(json_array_get(mules, 1), "cowguard"));
    ck_assert_int_eq(int_at(json_array_get(json_object_get(doc.get(), "workers"), 0), "rss"), 30000000);
}
END_TEST

START_TEST(extreme_values) {
    ProcessFigures p = sampled(5160);
    p.rss = std::numeric_limits<uint64_t>::max();
    p.pss = static_cast<uint64_t>(LLONG_MAX) + 1;
    p.uss = static_cast<uint64_t>(LLONG_MAX);
    p.minflt_per_request = std::nan("");
    p.counted.gc_time_ns = std::numeric_limits<uint64_t>::max();  // a real: about 1.8e13 ms
    p.counted.threshold[0] = -1;
    TopFigures top = top_figures();
    top.options.push_back({"cowguard-cow-report", std::string("/tmp/caf\xe9\0x", 11)});  // Latin-1, NUL
    top.options.push_back({std::string("bad\xff" "name"), "v"});
    top.version = "\xc0\xaf";  // overlong '/'
    std::string out;
    ck_assert(merge(fixture("uwsgi_stats.json"), {{5160, p}}, out, true, top));
    Json doc = parse(out);
    json_t* w = worker_with_pid(doc.get(), 5160);
    ck_assert_int_eq(int_at(w, "rss"), LLONG_MAX);
    ck_assert_int_eq(int_at(w, "pss"), LLONG_MAX);
    ck_assert_int_eq(int_at(w, "uss"), LLONG_MAX);
    json_t* cg = json_object_get(w, "cowguard");
    ck_assert(json_is_null(json_object_get(cg, "minflt_per_request")));
    ck_assert(json_real_value(json_object_get(json_object_get(cg, "gc"), "time_ms")) > 1.8e13);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(json_object_get(cg, "gc"), "thresholds"), 0)), -1);
    json_t* top_cg = json_object_get(doc.get(), "cowguard");
    json_t* options = json_object_get(top_cg, "options");
    json_t* report = json_object_get(options, "cowguard-cow-report");
    ck_assert_uint_eq(json_string_length(report), 11);
    ck_assert(std::string(json_string_value(report), 11) == std::string("/tmp/caf?\0x", 11));
    ck_assert_str_eq(json_string_value(json_object_get(options, "bad?name")), "v");
    ck_assert_str_eq(json_string_value(json_object_get(top_cg, "version")), "??");
}
END_TEST

START_TEST(valid_utf8_passes_through) {
    TopFigures top = top_figures();
    top.options = {{"cowguard-warmup", "caf\xc3\xa9:r\xc3\xa9sum\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x84"}};
    std::string out;
    ck_assert(merge("{}", {}, out, true, top));
    Json doc = parse(out);
    json_t* v = json_object_get(json_object_get(json_object_get(doc.get(), "cowguard"), "options"), "cowguard-warmup");
    ck_assert_str_eq(json_string_value(v), top.options[0].second.c_str());
}
END_TEST

int main() {
    Suite* suite = suite_create("stats_doc");
    TCase* tc = tcase_create("merge_stats");
    tcase_add_test(tc, merged_worker_has_cowguard_figures);
    tcase_add_test(tc, existing_keys_keep_order_and_values);
    tcase_add_test(tc, top_level_cowguard_object);
    tcase_add_test(tc, empty_workers_map_keeps_document);
    tcase_add_test(tc, unsampled_worker_keeps_uwsgi_memory);
    tcase_add_test(tc, minified_and_indented_output);
    tcase_add_test(tc, invalid_input_leaves_out_untouched);
    tcase_add_test(tc, odd_shapes_are_tolerated);
    tcase_add_test(tc, mules_are_merged);
    tcase_add_test(tc, extreme_values);
    tcase_add_test(tc, valid_utf8_passes_through);
    suite_add_tcase(suite, tc);

    return run_suite(suite);
}
