// Unit tests for include/cowguard/prometheus.h: the text exposition of a small instance (two
// workers, a mule, a spooler), parsed back line by line; odd names and label escaping; an empty
// process list; processes that could not be sampled; and Prometheus' own checker (promtool check
// metrics) on the output when promtool is installed (the integration tests require it).
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "counted_gc.h"

#include "cowguard/prometheus.h"

// Last: check.h defines a fail() macro that breaks <ios> and friends.
#include <check.h>
#include "run_suite.h"

using cowguard::ExposedProcess;
using cowguard::Exposition;
using cowguard::prometheus_label_value;
using cowguard::render_prometheus;

namespace {

ExposedProcess process(ExposedProcess::Kind kind, int id, uint64_t base) {
    ExposedProcess p;
    p.kind = kind;
    p.id = id;
    auto& f = p.figures;
    f.pid = 1000 + id;
    f.mem_ok = true;
    f.rss = base * 10;
    f.vsz = base * 100;
    f.uss = base * 3;
    f.pss = base * 5;
    f.shared = base * 7;
    f.private_ = f.uss;
    f.swap = 0;
    f.minflt = base + 1;
    f.majflt = 2;
    f.minflt_per_request = 12.5;
    f.peak_private = base * 4;
    f.recycles = 1;
    f.gc_ok = true;
    f.counted = counted_gc();
    f.counted.gc_time_ns = 1500000;
    if (kind == ExposedProcess::Kind::Worker) {
        p.has_uwsgi = true;
        p.uwsgi.requests = 40 + static_cast<uint64_t>(id);
        p.uwsgi.respawns = 3;
        p.uwsgi.status = id == 1 ? "busy" : "idle";
    }
    return p;
}

Exposition instance(const std::string& name) {
    Exposition e;
    e.instance_name = name;
    e.top.version = "1.0.0";
    e.top.frozen_objects = 54321;
    e.top.freeze_ms = 12;
    e.top.master_ok = true;
    e.top.master_rss = 50 << 20;
    e.top.master_uss = 10 << 20;
    e.top.master_pss = 20 << 20;
    e.top.master_shared = 40 << 20;
    e.top.pss_total = 123456789;
    e.top.shared_fraction_avg = 0.75;
    e.top.sampler_interval_s = 1;
    e.top.sampler_round_ms = 2.5;
    e.top.sampler_rounds = 17;
    e.processes = {process(ExposedProcess::Kind::Worker, 1, 1 << 20), process(ExposedProcess::Kind::Worker, 2, 2 << 20),
                   process(ExposedProcess::Kind::Mule, 1, 3 << 20), process(ExposedProcess::Kind::Spooler, 0, 4 << 20)};
    return e;
}

struct Sample {
    std::string name;
    std::map<std::string, std::string> labels;  // values unescaped
    std::string value;
};

struct Parsed {
    std::vector<Sample> samples;
    std::map<std::string, std::string> type;  // family -> gauge/counter
    std::set<std::string> help;
};

// A strict reader of the subset of the text format render_prometheus writes; aborts the test on
// anything else (unknown escape, a sample before its TYPE, a family split in two).
Parsed parse(const std::string& text) {
    Parsed p;
    ck_assert_msg(!text.empty() && text.back() == '\n', "output does not end with a newline");
    std::string current;  // the family whose samples come now
    std::set<std::string> finished;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        std::string line = text.substr(pos, eol - pos);
        pos = eol + 1;
        if (line.rfind("# HELP ", 0) == 0) {
            std::string name = line.substr(7, line.find(' ', 7) - 7);
            ck_assert_msg(!p.help.count(name), "two HELP lines for %s", name.c_str());
            ck_assert_msg(!finished.count(name), "family %s split", name.c_str());
            if (!current.empty()) finished.insert(current);
            p.help.insert(name);
            current = name;
            continue;
        }
        if (line.rfind("# TYPE ", 0) == 0) {
            std::string rest = line.substr(7);
            std::string name = rest.substr(0, rest.find(' '));
            ck_assert_str_eq(name.c_str(), current.c_str());
            p.type[name] = rest.substr(rest.find(' ') + 1);
            continue;
        }
        ck_assert_msg(line[0] != '#', "unexpected comment: %s", line.c_str());
        Sample s;
        size_t brace = line.find('{');
        ck_assert_msg(brace != std::string::npos, "sample without labels: %s", line.c_str());
        s.name = line.substr(0, brace);
        ck_assert_msg(s.name == current, "sample %s outside its family %s", s.name.c_str(), current.c_str());
        ck_assert_msg(p.type.count(s.name), "sample %s before its TYPE", s.name.c_str());
        size_t i = brace + 1;
        while (line[i] != '}') {
            size_t eq = line.find('=', i);
            std::string key = line.substr(i, eq - i);
            ck_assert_msg(line[eq + 1] == '"', "unquoted label value in %s", line.c_str());
            std::string value;
            size_t j = eq + 2;
            for (; line[j] != '"'; j++) {
                ck_assert_msg(j < line.size(), "unterminated label value in %s", line.c_str());
                if (line[j] == '\\') {
                    j++;
                    ck_assert_msg(line[j] == '\\' || line[j] == '"' || line[j] == 'n', "bad escape in %s", line.c_str());
                    value += line[j] == 'n' ? '\n' : line[j];
                } else {
                    value += line[j];
                }
            }
            ck_assert_msg(!s.labels.count(key), "label %s twice in %s", key.c_str(), line.c_str());
            s.labels[key] = value;
            i = j + 1;
            if (line[i] == ',') i++;
        }
        ck_assert_msg(line[i + 1] == ' ', "no space before the value in %s", line.c_str());
        s.value = line.substr(i + 2);
        ck_assert_msg(!s.value.empty() && s.value.find(' ') == std::string::npos, "bad value in %s", line.c_str());
        p.samples.push_back(s);
    }
    return p;
}

const Sample* find(const Parsed& p, const std::string& name, const std::map<std::string, std::string>& labels) {
    for (const Sample& s : p.samples) {
        if (s.name != name) continue;
        bool match = true;
        for (const auto& [k, v] : labels) match = match && s.labels.count(k) && s.labels.at(k) == v;
        if (match) return &s;
    }
    return nullptr;
}

void expect_value(const Parsed& p, const std::string& name, const std::map<std::string, std::string>& labels,
                  const std::string& want) {
    const Sample* s = find(p, name, labels);
    ck_assert_msg(s, "no sample %s", name.c_str());
    ck_assert_msg(s->value == want, "%s: %s, want %s", name.c_str(), s->value.c_str(), want.c_str());
}

bool has_promtool() { return system("command -v promtool >/dev/null 2>&1") == 0; }

// promtool's verdict on `text`: its exit status, its complaints in `out`.
int promtool(const std::string& text, std::string& out) {
    char path[] = "/tmp/cowguard-test-prometheus-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    close(fd);
    std::string cmd = std::string("promtool check metrics < ") + path + " 2>&1";
    FILE* f = popen(cmd.c_str(), "r");
    char buf[512];
    while (f && fgets(buf, sizeof(buf), f)) out += buf;
    int status = f ? pclose(f) : -1;
    unlink(path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

START_TEST(every_family_has_help_and_type_and_names_follow_the_conventions) {
    Parsed p = parse(render_prometheus(instance("web")));
    ck_assert_uint_ge(p.type.size(), 25);
    for (const auto& [name, type] : p.type) {
        ck_assert_msg(p.help.count(name), "%s without HELP", name.c_str());
        ck_assert_msg(name.rfind("cowguard_", 0) == 0, "%s lacks the prefix", name.c_str());
        bool total = name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
        ck_assert_msg(type == "counter" ? total : type == "gauge" && !total, "%s is a %s", name.c_str(), type.c_str());
        for (const char* unit : {"_kb", "_mb", "_ms", "_size", "_milliseconds"})
            ck_assert_msg(name.find(unit) == std::string::npos, "%s is not in base units", name.c_str());
    }
    for (const Sample& s : p.samples) {
        ck_assert_str_eq(s.labels.at("instance_name").c_str(), "web");
        if (s.name.rfind("cowguard_process_", 0) == 0 || s.name.rfind("cowguard_worker_", 0) == 0) {
            ck_assert_msg(s.labels.count("kind") && s.labels.count("worker"), "%s lacks kind/worker", s.name.c_str());
        } else {
            ck_assert_msg(!s.labels.count("worker"), "instance series %s has a worker label", s.name.c_str());
        }
    }
}
END_TEST

START_TEST(values_are_the_figures) {
    Exposition e = instance("web");
    e.processes[1].figures.minflt = std::numeric_limits<uint64_t>::max();
    Parsed p = parse(render_prometheus(e));
    std::map<std::string, std::string> w1 = {{"kind", "worker"}, {"worker", "1"}}, w2 = {{"kind", "worker"}, {"worker", "2"}};
    expect_value(p, "cowguard_process_uss_bytes", w1, std::to_string(3 << 20));
    expect_value(p, "cowguard_process_pss_bytes", w2, std::to_string(10 << 20));
    expect_value(p, "cowguard_process_shared_bytes", w2, std::to_string(14 << 20));
    expect_value(p, "cowguard_process_minor_faults_total", w2, "18446744073709551615");
    expect_value(p, "cowguard_process_major_faults_total", w1, "2");
    expect_value(p, "cowguard_process_gc_seconds_total", w1, "0.0015");
    expect_value(p, "cowguard_process_gc_collections_total", {{"worker", "1"}, {"generation", "0"}}, "7");
    expect_value(p, "cowguard_process_gc_threshold", {{"worker", "2"}, {"generation", "2"}}, "100");
    expect_value(p, "cowguard_process_gc_phase_collections_total",
                 {{"worker", "1"}, {"generation", "0"}, {"phase", "in_request"}}, "2");
    expect_value(p, "cowguard_process_gc_phase_collections_total",
                 {{"worker", "1"}, {"generation", "1"}, {"phase", "after_request"}}, "1");
    expect_value(p, "cowguard_process_gc_phase_collections_total",
                 {{"worker", "2"}, {"generation", "2"}, {"phase", "after_request"}}, "0");
    expect_value(p, "cowguard_process_gc_phase_seconds_total",
                 {{"worker", "1"}, {"generation", "1"}, {"phase", "after_request"}}, "0.000125");
    expect_value(p, "cowguard_worker_requests_total", w2, "42");
    expect_value(p, "cowguard_worker_respawns_total", w1, "3");
    expect_value(p, "cowguard_worker_status", {{"worker", "1"}, {"status", "busy"}}, "1");
    expect_value(p, "cowguard_worker_status", {{"worker", "1"}, {"status", "idle"}}, "0");
    expect_value(p, "cowguard_worker_status", {{"worker", "2"}, {"status", "idle"}}, "1");
    expect_value(p, "cowguard_process_uss_bytes", {{"kind", "mule"}, {"worker", "1"}}, std::to_string(9 << 20));
    expect_value(p, "cowguard_process_uss_bytes", {{"kind", "spooler"}, {"worker", "0"}}, std::to_string(12 << 20));
    // uWSGI's figures are worker figures: no mule or spooler series.
    ck_assert(!find(p, "cowguard_worker_requests_total", {{"kind", "mule"}}));
    ck_assert(!find(p, "cowguard_worker_status", {{"kind", "spooler"}}));
    expect_value(p, "cowguard_pss_bytes", {}, "123456789");
    expect_value(p, "cowguard_workers_shared_ratio", {}, "0.75");
    expect_value(p, "cowguard_freeze_seconds", {}, "0.012");
    expect_value(p, "cowguard_sampler_rounds_total", {}, "17");
    expect_value(p, "cowguard_info", {{"version", "1.0.0"}}, "1");
}
END_TEST

START_TEST(label_values_are_escaped) {
    ck_assert(prometheus_label_value("plain-name_1.2") == std::string("plain-name_1.2"));
    ck_assert(prometheus_label_value("a\\b\"c\nd") == std::string("a\\\\b\\\"c\\nd"));
    ck_assert(prometheus_label_value("\\\\n") == std::string("\\\\\\\\n"));  // not an escape already
    ck_assert(prometheus_label_value("tab\there{}=,") == std::string("tab\there{}=,"));  // legal as is
    ck_assert(prometheus_label_value("caf\xc3\xa9") == std::string("caf\xc3\xa9"));
    ck_assert(prometheus_label_value("bad\xff\xc3") == std::string("bad??"));  // not UTF-8
    ck_assert(prometheus_label_value("") == std::string(""));
    std::string nul("a\0b", 3);
    ck_assert_uint_eq(prometheus_label_value(nul).size(), 3);

    // The same names round-trip through a whole exposition.
    const char* odd[] = {"a\\b\"c\nd", "", " spaced name ", "}{,=\"", "\xff\xfe", "vassal.ini", "\n\n\\"};
    for (const char* name : odd) {
        Parsed p = parse(render_prometheus(instance(name)));
        std::string want = cowguard::valid_utf8(name);
        for (const Sample& s : p.samples) ck_assert_msg(s.labels.at("instance_name") == want, "label differs");
    }
}
END_TEST

START_TEST(no_process_leaves_instance_families_only) {
    Exposition e = instance("empty");
    e.processes.clear();
    std::string text = render_prometheus(e);
    Parsed p = parse(text);
    ck_assert_msg(text.find("cowguard_process_") == std::string::npos, "process family without samples");
    ck_assert_msg(text.find("cowguard_worker_") == std::string::npos, "worker family without samples");
    ck_assert(find(p, "cowguard_pss_bytes", {}));

    Exposition bare;  // nothing set at all: still valid
    parse(render_prometheus(bare));
}
END_TEST

START_TEST(unsampled_processes_leave_out_what_is_missing) {
    Exposition e = instance("web");
    e.processes[0].figures.mem_ok = false;  // /proc unreadable: no memory series
    e.processes[1].figures.gc_ok = false;   // slot not published yet: no GC series
    e.processes[2].figures.mem_ok = false;  // the mule: neither
    e.processes[2].figures.gc_ok = false;
    e.top.master_ok = false;
    e.top.shared_fraction_avg = std::nan("");
    e.top.sampler_round_ms = std::numeric_limits<double>::infinity();
    Parsed p = parse(render_prometheus(e));
    ck_assert(!find(p, "cowguard_process_uss_bytes", {{"kind", "worker"}, {"worker", "1"}}));
    ck_assert(find(p, "cowguard_process_gc_frozen_objects", {{"kind", "worker"}, {"worker", "1"}}));
    ck_assert(find(p, "cowguard_process_uss_bytes", {{"kind", "worker"}, {"worker", "2"}}));
    ck_assert(!find(p, "cowguard_process_gc_frozen_objects", {{"kind", "worker"}, {"worker", "2"}}));
    ck_assert(!find(p, "cowguard_process_peak_uss_bytes", {{"kind", "mule"}}));
    ck_assert(find(p, "cowguard_worker_requests_total", {{"worker", "1"}}));  // uWSGI's own figures stay
    ck_assert(!find(p, "cowguard_master_rss_bytes", {}));
    expect_value(p, "cowguard_workers_shared_ratio", {}, "NaN");
    expect_value(p, "cowguard_sampler_round_seconds", {}, "+Inf");
}
END_TEST

START_TEST(default_instance_names) {
    using cowguard::default_instance_name;
    using V = std::vector<std::string>;
    ck_assert(default_instance_name({"uwsgi", "--ini", "shop.ini"}, true, "") == std::string("shop"));
    ck_assert(default_instance_name({"/usr/bin/uwsgi", "--yaml", "/etc/vassals/api.v2.yaml"}, true, "x") == std::string("api.v2"));
    ck_assert(default_instance_name({"uwsgi", "--inherit", "exec://gen-config"}, true, "") == std::string("gen-config"));
    ck_assert(default_instance_name({"uwsgi", "--json", "emperor://db.json"}, true, "") == std::string("db"));
    ck_assert(default_instance_name({"uwsgi", "--ini", ".hidden"}, true, "") == std::string(".hidden"));
    // Not a vassal: the config file does not name the instance; procname does, else "uwsgi".
    ck_assert(default_instance_name({"uwsgi", "--ini", "shop.ini"}, false, "shop-master") == std::string("shop-master"));
    ck_assert(default_instance_name({"uwsgi", "--ini", "shop.ini"}, false, "") == std::string("uwsgi"));
    // A vassal whose command line names no config file (or nothing after the flag).
    ck_assert(default_instance_name({"uwsgi", "--master"}, true, "p") == std::string("p"));
    ck_assert(default_instance_name({"uwsgi", "--ini"}, true, "") == std::string("uwsgi"));
    ck_assert(default_instance_name(V{}, true, "") == std::string("uwsgi"));
    ck_assert(default_instance_name({"uwsgi", "--ini", "dir/"}, true, "") == std::string("uwsgi"));
}
END_TEST

START_TEST(promtool_accepts_the_output) {
    if (!has_promtool()) {
        fprintf(stderr, "test_prometheus: promtool is not installed (Debian package prometheus, `make deps`): "
                        "promtool_accepts_the_output checked nothing here; tests/integration/test_fleet.py requires it\n");
        return;
    }
    Exposition many = instance("web");
    for (int i = 3; i <= 64; i++) many.processes.push_back(process(ExposedProcess::Kind::Worker, i, 1 << 20));
    Exposition empty = instance("a\\b\"c\nd");
    empty.processes.clear();
    for (const Exposition* e : {&many, &empty}) {
        std::string out;
        int rc = promtool(render_prometheus(*e), out);
        ck_assert_msg(rc == 0 && out.empty(), "promtool check metrics: exit %d: %s", rc, out.c_str());
    }
    // The checker does find problems: a counter without _total.
    std::string out;
    ck_assert_int_ne(promtool("# HELP x_bytes x\n# TYPE x_bytes counter\nx_bytes 1\n", out), 0);
}
END_TEST

int main() {
    Suite* suite = suite_create("prometheus");
    TCase* tc = tcase_create("exposition");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, every_family_has_help_and_type_and_names_follow_the_conventions);
    tcase_add_test(tc, values_are_the_figures);
    tcase_add_test(tc, label_values_are_escaped);
    tcase_add_test(tc, no_process_leaves_instance_families_only);
    tcase_add_test(tc, unsampled_processes_leave_out_what_is_missing);
    tcase_add_test(tc, default_instance_names);
    tcase_add_test(tc, promtool_accepts_the_output);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
