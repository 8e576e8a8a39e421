// The master's sampler (see sampler.h).
#include "cowguard/sampler.h"
#include "cowguard/measure.h"

namespace cowguard {

namespace {

constexpr size_t kWindowPoints = 10;  // samples kept for minor faults per request
constexpr uint64_t kMB = 1024 * 1024;

// /proc/PID/smaps_rollup and /proc/PID/stat: what the document shows (mem_ok false when either fails).
ProcessFigures read_process(int pid) {
    ProcessFigures f;
    f.pid = pid;
    auto mem = read_mem(pid);
    auto stat = mem ? read_stat(pid) : Result<StatFigures>(fail_with(mem.error()));
    f.mem_ok = mem && stat;
    if (!f.mem_ok) return f;
    const MemFigures& m = *mem;
    const StatFigures& st = *stat;
    f.rss = m.rss;
    f.vsz = st.vsize;
    f.uss = m.uss();
    f.pss = m.pss;
    f.shared = m.shared();
    f.private_ = m.uss();
    f.swap = m.swap;
    f.minflt = st.minflt;
    f.majflt = st.majflt;
    f.peak_private = f.uss;  // until its slot says more
    return f;
}

// The sampled memory figures into the process's slot (its own reads, the metrics, its exit line).
void write_memory(SlotFigures& s, const ProcessFigures& f) {
    s.uss.store(static_cast<int64_t>(f.uss));
    s.pss.store(static_cast<int64_t>(f.pss));
    s.shared.store(static_cast<int64_t>(f.shared));
    s.swap.store(static_cast<int64_t>(f.swap));
    s.minflt.store(static_cast<int64_t>(f.minflt));
    s.majflt.store(static_cast<int64_t>(f.majflt));
    s.peak_private.raise_to(static_cast<int64_t>(f.uss));
    const SlotFigures& c = f.counted;
    s.gc_collections_total.store(static_cast<int64_t>(c.collections[0].load() + c.collections[1].load() +
                                                      c.collections[2].load()));
    const GcPhase inside = gc_phases(c).in_request;
    s.gc_in_request_total.store(static_cast<int64_t>(inside.collections[0] + inside.collections[1] + inside.collections[2]));
}

// The first memory limit `f` is over (evil ones first), if any.
std::optional<LimitAction> limit_action(const Settings& settings, const ProcessRef& p, const ProcessFigures& f) {
    struct Limit {
        uint64_t value, limit_mb;
        const char *what, *option;
        bool evil;
    } limits[] = {
        {f.uss, settings.evil_reload_on_uss_mb, "uss", "cowguard-evil-reload-on-uss", true},
        {f.pss, settings.evil_reload_on_pss_mb, "pss", "cowguard-evil-reload-on-pss", true},
        {f.uss, settings.reload_on_uss_mb, "uss", "cowguard-reload-on-uss", false},
        {f.pss, settings.reload_on_pss_mb, "pss", "cowguard-reload-on-pss", false},
    };
    for (const Limit& l : limits) {
        if (!l.limit_mb || l.value <= l.limit_mb * kMB) continue;
        return LimitAction{p, l.evil, std::string(l.what) + " " + mb_text(l.value) + " > " + l.option + " " +
                                          std::to_string(l.limit_mb) + " MB"};
    }
    return std::nullopt;
}

}  // namespace

void add_slot_figures(ProcessFigures& f, const WorkerSlot& slot) {
    if (!slot.written_by(f.pid)) return;
    f.counted = slot.figures;  // one read
    f.gc_ok = true;
    f.recycles = slot.recycles.load();
    f.peak_private = peak_private(f.counted, f.mem_ok ? f.uss : 0);
}

double Sampler::faults_per_request(const WorkerSlot* slot, int pid, uint64_t minflt, uint64_t requests) {
    Window& w = windows_[slot];
    if (w.pid != pid) w = Window{pid, {}};
    w.points.emplace_back(minflt, requests);
    if (w.points.size() > kWindowPoints) w.points.pop_front();
    uint64_t dreq = w.points.back().second - w.points.front().second;
    uint64_t dflt = w.points.back().first - w.points.front().first;
    return dreq ? static_cast<double>(dflt) / static_cast<double>(dreq) : 0;
}

std::vector<LimitAction> Sampler::sample(int master_pid, const std::vector<ProcessRef>& procs) {
    double t0 = mono_ms();
    Snapshot next;
    std::vector<LimitAction> actions;
    if (auto master = read_mem(master_pid)) {
        next.master_ok = true;
        next.master = *master;
    }
    if (next.master_ok) next.pss_total += next.master.pss;
    double shared_sum = 0;
    int shared_n = 0;

    for (const ProcessRef& p : procs) {
        if (p.pid <= 0) continue;
        ProcessFigures f = read_process(p.pid);
        if (f.mem_ok) {
            next.pss_total += f.pss;
            if (p.kind == ProcessRef::Kind::Worker && f.rss > 0) {
                shared_sum += static_cast<double>(f.shared) / static_cast<double>(f.rss);
                shared_n++;
            }
        }
        // A slot another process still writes (the new one has not published it yet) is left alone.
        if (WorkerSlot* s = p.slot; s && s->written_by(p.pid)) {
            add_slot_figures(f, *s);
            if (f.mem_ok) {
                write_memory(s->figures, f);
                f.peak_private = peak_private(s->figures, f.uss);
                f.minflt_per_request = faults_per_request(s, p.pid, f.minflt, s->figures.requests.load());
                // Memory limits: workers only (uWSGI's reload-on-rss is a worker feature too).
                if (p.kind == ProcessRef::Kind::Worker)
                    if (auto a = limit_action(settings_, p, f)) actions.push_back(std::move(*a));
            }
        }
        (p.kind == ProcessRef::Kind::Mule ? next.mules : next.workers)[p.pid] = f;
    }
    next.shared_fraction_avg = shared_n ? shared_sum / shared_n : 0;
    next.last_round_ms = mono_ms() - t0;

    std::lock_guard<std::mutex> lock(mu_);
    next.rounds = snap_.rounds + 1;
    snap_ = std::move(next);
    return actions;
}

Snapshot Sampler::snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return snap_;
}

}  // namespace cowguard
