// Prometheus text exposition (pure). See include/cowguard/prometheus.h.
#include "cowguard/prometheus.h"
#include "cowguard/figures.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <functional>

namespace cowguard {

namespace {

// One sample value, written exactly: counters and byte counts are integers, ratios are doubles.
struct Num {
    enum class T { U, I, D } t = T::U;
    uint64_t u = 0;
    int64_t i = 0;
    double d = 0;
};
Num u64(uint64_t v) { return Num{Num::T::U, v, 0, 0}; }
Num i64(int64_t v) { return Num{Num::T::I, 0, v, 0}; }
Num dbl(double v) { return Num{Num::T::D, 0, 0, v}; }

void append_num(std::string& out, const Num& n) {
    char buf[40];
    switch (n.t) {
        case Num::T::U: snprintf(buf, sizeof(buf), "%" PRIu64, n.u); break;
        case Num::T::I: snprintf(buf, sizeof(buf), "%" PRId64, n.i); break;
        case Num::T::D:
            if (std::isnan(n.d)) snprintf(buf, sizeof(buf), "NaN");
            else if (std::isinf(n.d)) snprintf(buf, sizeof(buf), n.d > 0 ? "+Inf" : "-Inf");
            else snprintf(buf, sizeof(buf), "%.17g", n.d);
            break;
    }
    out += buf;
}

const char* kind_name(ExposedProcess::Kind k) {
    switch (k) {
        case ExposedProcess::Kind::Worker: return "worker";
        case ExposedProcess::Kind::Mule: return "mule";
        case ExposedProcess::Kind::Spooler: return "spooler";
    }
    return "worker";
}

// The samples of one family, in the order they are emitted.
class Family {
public:
    Family(std::string& out, const char* name, const char* type, const char* help)
        : out_(out), name_(name), type_(type), help_(help) {}

    // `labels` is the series' label set without braces, already escaped.
    void sample(const std::string& labels, const Num& v) {
        if (!started_) {
            started_ = true;
            out_ += "# HELP ";
            out_ += name_;
            out_ += ' ';
            out_ += help_;  // our own text: no backslash, no newline
            out_ += "\n# TYPE ";
            out_ += name_;
            out_ += ' ';
            out_ += type_;
            out_ += '\n';
        }
        out_ += name_;
        out_ += '{';
        out_ += labels;
        out_ += "} ";
        append_num(out_, v);
        out_ += '\n';
    }

private:
    std::string& out_;
    const char* name_;
    const char* type_;
    const char* help_;
    bool started_ = false;
};

std::string label(const char* name, std::string_view value) {
    return std::string(name) + "=\"" + prometheus_label_value(value) + "\"";
}

// Emits one process's samples of one family; `extra` is a further label ("generation=\"0\"").
using Emit = std::function<void(const Num& v, const std::string& extra)>;
struct ProcessFamily {
    const char* name;
    const char* type;
    const char* help;
    std::function<void(const ExposedProcess&, const Emit&)> samples;
};

// The memory figures read from /proc, as integers: one sample when the process was sampled.
struct MemFamily {
    const char* name;
    const char* type;
    const char* help;
    uint64_t ProcessFigures::*value;
};
constexpr MemFamily kMemFamilies[] = {
    {"cowguard_process_rss_bytes", "gauge", "Resident set size (smaps_rollup Rss).", &ProcessFigures::rss},
    {"cowguard_process_virtual_memory_bytes", "gauge", "Virtual memory size (stat vsize).", &ProcessFigures::vsz},
    {"cowguard_process_uss_bytes", "gauge", "Unique set size: private memory, Private_Clean + Private_Dirty.",
     &ProcessFigures::uss},
    {"cowguard_process_pss_bytes", "gauge", "Proportional set size: private memory plus its share of shared pages.",
     &ProcessFigures::pss},
    {"cowguard_process_shared_bytes", "gauge",
     "Resident memory shared with other processes, Shared_Clean + Shared_Dirty.", &ProcessFigures::shared},
    {"cowguard_process_swap_bytes", "gauge", "Swapped-out memory.", &ProcessFigures::swap},
    {"cowguard_process_minor_faults_total", "counter", "Minor page faults since the process started.",
     &ProcessFigures::minflt},
    {"cowguard_process_major_faults_total", "counter", "Major page faults since the process started.",
     &ProcessFigures::majflt},
};
ProcessFamily mem(const MemFamily& m) {
    return {m.name, m.type, m.help, [&m](const ExposedProcess& p, const Emit& emit) {
                if (p.figures.mem_ok) emit(u64(p.figures.*m.value), "");
            }};
}
std::string generation_label(int g) { return "generation=\"" + std::to_string(g) + "\""; }

// One sample per GC generation (label generation="0".."2"), from `value(slot figures, generation)`.
template <typename F>
ProcessFamily gc_generations(const char* name, const char* type, const char* help, F value) {
    return {name, type, help, [value](const ExposedProcess& p, const Emit& emit) {
                if (!p.figures.gc_ok) return;
                for (int g = 0; g < 3; g++) emit(value(p.figures.counted, g), generation_label(g));
            }};
}
// One row of kGcFigures: one sample, or one per generation; seconds for a time.
ProcessFamily gc_figure(const GcFigure& f) {
    return {f.family, f.type, f.help, [&f](const ExposedProcess& p, const Emit& emit) {
                if (!p.figures.gc_ok) return;
                auto value = [&](int g) {
                    uint64_t v = counted(p.figures.counted, f, g);
                    return f.unit == FigureUnit::Nanoseconds ? dbl(ns_to_ms(v) / 1000.0) : u64(v);
                };
                if (f.value) emit(value(0), "");
                else
                    for (int g = 0; g < 3; g++) emit(value(g), generation_label(g));
            }};
}
// One sample per GC generation and phase (labels generation="0".."2", phase="in_request" or
// "after_request"), from `value(phase figures, generation)`.
template <typename F>
ProcessFamily gc_phase_family(const char* name, const char* type, const char* help, F value) {
    return {name, type, help, [value](const ExposedProcess& p, const Emit& emit) {
                if (!p.figures.gc_ok) return;
                GcPhases phases = gc_phases(p.figures.counted);
                for (const auto& [phase, figures] : {std::pair<const char*, const GcPhase*>{"in_request", &phases.in_request},
                                                     {"after_request", &phases.after_request}})
                    for (int g = 0; g < 3; g++)
                        emit(value(*figures, g), generation_label(g) + ",phase=\"" + phase + "\"");
            }};
}
template <typename F>
ProcessFamily uwsgi(const char* name, const char* type, const char* help, F value) {
    return {name, type, help, [value](const ExposedProcess& p, const Emit& emit) {
                if (p.has_uwsgi) emit(value(p.uwsgi), "");
            }};
}

constexpr const char* kStatuses[] = {"idle", "busy", "cheap", "pause", "sig"};

const std::vector<ProcessFamily>& process_families() {
    using U = UwsgiWorkerFigures;
    static const std::vector<ProcessFamily> families = [] {
        std::vector<ProcessFamily> v;
        for (const MemFamily& m : kMemFamilies) v.push_back(mem(m));
        v.insert(v.end(), {
            {"cowguard_process_minor_faults_per_request", "gauge", "Minor page faults per request over the last 10 samples.",
             [](const ExposedProcess& p, const Emit& emit) {
                 if (p.figures.mem_ok) emit(dbl(p.figures.minflt_per_request), "");
             }},
            {"cowguard_process_peak_uss_bytes", "gauge", "Highest unique set size sampled since the process started.",
             [](const ExposedProcess& p, const Emit& emit) {
                 if (p.figures.mem_ok || p.figures.gc_ok) emit(u64(p.figures.peak_private), "");
             }},
            {"cowguard_process_memory_limit_recycles_total", "counter",
             "Recycles of this slot by cowguard's memory limits (cowguard-reload-on-* and cowguard-evil-reload-on-*).",
             [](const ExposedProcess& p, const Emit& emit) {
                 if (p.figures.mem_ok || p.figures.gc_ok) emit(u64(p.figures.recycles), "");
             }},
            {"cowguard_process_gc_enabled", "gauge", "1 when the process's garbage collector is enabled.",
             [](const ExposedProcess& p, const Emit& emit) {
                 if (p.figures.gc_ok) emit(u64(p.figures.counted.gc_enabled.load() ? 1 : 0), "");
             }},
            gc_generations("cowguard_process_gc_threshold", "gauge", "Garbage collector threshold of each generation.",
                           [](const SlotFigures& s, int gen) { return i64(s.threshold[gen].load()); }),
        });
        for (const GcFigure& f : kGcFigures) v.push_back(gc_figure(f));
        v.insert(v.end(), {
            gc_phase_family("cowguard_process_gc_phase_collections_total", "counter",
                            "Garbage collections of each generation, by phase: in_request (started by CPython's thresholds; "
                            "in a mule or spooler, anywhere) or after_request (run by cowguard-gc = between once the response "
                            "is sent; in a mule or spooler, on its tick).",
                            [](const GcPhase& ph, int gen) { return u64(ph.collections[gen]); }),
            gc_phase_family("cowguard_process_gc_phase_seconds_total", "counter",
                            "Time spent in garbage collections of each generation, by phase (as "
                            "cowguard_process_gc_phase_collections_total).",
                            [](const GcPhase& ph, int gen) { return dbl(ph.time_ms[gen] / 1000.0); }),
            uwsgi("cowguard_worker_requests_total", "counter", "Requests the worker served (uWSGI's count, kept across respawns).",
                  [](const U& u) { return u64(u.requests); }),
            uwsgi("cowguard_worker_respawns_total", "counter", "Times uWSGI respawned the worker.",
                  [](const U& u) { return u64(u.respawns); }),
            {"cowguard_worker_status", "gauge", "1 for the worker's current uWSGI status, 0 for the others.",
             [](const ExposedProcess& p, const Emit& emit) {
                 if (!p.has_uwsgi) return;
                 for (const char* s : kStatuses) emit(u64(p.uwsgi.status == s ? 1 : 0), "status=\"" + std::string(s) + "\"");
             }},
        });
        return v;
    }();
    return families;
}

}  // namespace

std::string prometheus_label_value(std::string_view v) {
    std::string clean = valid_utf8(v);
    std::string out;
    out.reserve(clean.size());
    for (char c : clean) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

std::string default_instance_name(const std::vector<std::string>& argv, bool vassal, const std::string& procname) {
    static const char* const kConfigFlags[] = {"--ini", "--xml", "--yaml", "--json", "--config", "--inherit"};
    for (size_t i = 1; vassal && i + 1 < argv.size(); i++) {
        bool flag = false;
        for (const char* f : kConfigFlags) flag = flag || argv[i] == f;
        if (!flag) continue;
        std::string name = argv[i + 1];
        size_t scheme = name.find("://");
        if (scheme != std::string::npos) name = name.substr(scheme + 3);
        size_t slash = name.rfind('/');
        if (slash != std::string::npos) name = name.substr(slash + 1);
        size_t dot = name.rfind('.');
        if (dot != std::string::npos && dot > 0) name = name.substr(0, dot);
        if (!name.empty()) return name;
    }
    if (!procname.empty()) return procname;
    return "uwsgi";
}

std::string render_prometheus(const Exposition& e) {
    std::string out;
    out.reserve(4096 + e.processes.size() * 4096);
    const std::string inst = label("instance_name", e.instance_name);
    const TopFigures& t = e.top;

    Family(out, "cowguard_info", "gauge", "Always 1; the version label says which cowguard serves these figures.")
        .sample(inst + "," + label("version", t.version), u64(1));
    auto instance = [&](const char* name, const char* type, const char* help, const Num& v) {
        Family(out, name, type, help).sample(inst, v);
    };
    instance("cowguard_frozen_objects", "gauge", "Objects the master froze (gc.freeze()) before the fork.",
             u64(t.frozen_objects));
    instance("cowguard_freeze_seconds", "gauge", "How long the master's collection and freeze took.",
             dbl(t.freeze_ms / 1000.0));
    instance("cowguard_warmup_seconds", "gauge", "How long the cowguard-warmup callables took.", dbl(t.warmup_ms / 1000.0));
    if (t.master_ok) {
        instance("cowguard_master_rss_bytes", "gauge", "The master's resident set size.", u64(t.master_rss));
        instance("cowguard_master_uss_bytes", "gauge", "The master's unique set size.", u64(t.master_uss));
        instance("cowguard_master_pss_bytes", "gauge", "The master's proportional set size.", u64(t.master_pss));
        instance("cowguard_master_shared_bytes", "gauge", "The master's shared resident memory.", u64(t.master_shared));
    }
    instance("cowguard_pss_bytes", "gauge", "Proportional set size of the master and every sampled process: the instance's memory.",
             u64(t.pss_total));
    instance("cowguard_workers_shared_ratio", "gauge", "Average over the workers of shared / rss.",
             dbl(t.shared_fraction_avg));
    instance("cowguard_sampler_interval_seconds", "gauge",
             "The sampler's effective interval (cowguard-stats-interval, stretched to stay under 1% of a core).",
             dbl(t.sampler_interval_s));
    instance("cowguard_sampler_round_seconds", "gauge", "How long the sampler's last round took.",
             dbl(t.sampler_round_ms / 1000.0));
    instance("cowguard_sampler_rounds_total", "counter", "Sampling rounds since the master started.",
             u64(t.sampler_rounds));

    std::vector<std::string> process_labels;
    process_labels.reserve(e.processes.size());
    for (const ExposedProcess& p : e.processes)
        process_labels.push_back(inst + ",kind=\"" + kind_name(p.kind) + "\",worker=\"" + std::to_string(p.id) + "\"");
    for (const ProcessFamily& pf : process_families()) {
        Family fam(out, pf.name, pf.type, pf.help);
        for (size_t i = 0; i < e.processes.size(); i++) {
            const std::string& labels = process_labels[i];
            pf.samples(e.processes[i], [&](const Num& v, const std::string& extra) {
                fam.sample(extra.empty() ? labels : labels + "," + extra, v);
            });
        }
    }
    return out;
}

}  // namespace cowguard
