// The master's sampler (see sampler.h).
#include "cowguard/sampler.h"

#include <ctime>

namespace cowguard {

namespace {

constexpr size_t kWindowPoints = 10;  // samples kept for minor faults per request
constexpr uint64_t kMB = 1024 * 1024;

double mono_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

std::string mb(uint64_t bytes) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%.1f MB", static_cast<double>(bytes) / kMB);
    return buf;
}

}  // namespace

GcFigures gc_figures_from(const WorkerSlot& s) {
    GcFigures g;
    g.enabled = s.gc_enabled.load(std::memory_order_relaxed) != 0;
    for (int i = 0; i < 3; i++) {
        g.threshold[i] = static_cast<long>(s.threshold[i].load(std::memory_order_relaxed));
        g.collections[i] = s.collections[i].load(std::memory_order_relaxed);
    }
    g.frozen = s.frozen.load(std::memory_order_relaxed);
    g.collected = s.collected.load(std::memory_order_relaxed);
    g.uncollectable = s.uncollectable.load(std::memory_order_relaxed);
    g.time_ms = static_cast<double>(s.gc_time_ns.load(std::memory_order_relaxed)) / 1e6;
    g.blocked_calls = s.blocked_calls.load(std::memory_order_relaxed);
    g.restored = s.restored.load(std::memory_order_relaxed);
    for (int i = 0; i < 3; i++) {
        // After-request first: the GC callback adds to the totals before it adds to them.
        uint64_t after_n = s.after_collections[i].load(std::memory_order_relaxed);
        uint64_t after_ns = s.after_time_ns[i].load(std::memory_order_relaxed);
        uint64_t all_ns = s.gen_time_ns[i].load(std::memory_order_relaxed);
        g.after_request.collections[i] = after_n;
        g.after_request.time_ms[i] = static_cast<double>(after_ns) / 1e6;
        g.in_request.collections[i] = g.collections[i] > after_n ? g.collections[i] - after_n : 0;
        g.in_request.time_ms[i] = all_ns > after_ns ? static_cast<double>(all_ns - after_ns) / 1e6 : 0;
    }
    return g;
}

std::vector<LimitAction> Sampler::sample(int master_pid, const std::vector<ProcessRef>& procs) {
    double t0 = mono_ms();
    Snapshot next;
    std::vector<LimitAction> actions;
    next.master_ok = read_mem(master_pid, next.master);
    if (next.master_ok) next.pss_total += next.master.pss;
    double shared_sum = 0;
    int shared_n = 0;

    for (const ProcessRef& p : procs) {
        if (p.pid <= 0) continue;
        ProcessFigures f;
        f.pid = p.pid;
        MemFigures m;
        StatFigures st;
        f.mem_ok = read_mem(p.pid, m) && read_stat(p.pid, st);
        if (f.mem_ok) {
            f.rss = m.rss;
            f.vsz = st.vsize;
            f.uss = m.uss();
            f.pss = m.pss;
            f.shared = m.shared();
            f.private_ = m.uss();
            f.swap = m.swap;
            f.minflt = st.minflt;
            f.majflt = st.majflt;
            next.pss_total += m.pss;
            if (p.kind == ProcessRef::Kind::Worker && m.rss > 0) {
                shared_sum += static_cast<double>(m.shared()) / static_cast<double>(m.rss);
                shared_n++;
            }
        }
        if (WorkerSlot* s = p.slot; s && s->pid.load(std::memory_order_relaxed) == p.pid) {
            f.gc_ok = true;
            f.gc = gc_figures_from(*s);
            f.recycles = s->recycles.load(std::memory_order_relaxed);
            if (f.mem_ok) {
                s->uss.store(static_cast<int64_t>(f.uss), std::memory_order_relaxed);
                s->pss.store(static_cast<int64_t>(f.pss), std::memory_order_relaxed);
                s->shared.store(static_cast<int64_t>(f.shared), std::memory_order_relaxed);
                s->swap.store(static_cast<int64_t>(f.swap), std::memory_order_relaxed);
                s->minflt.store(static_cast<int64_t>(f.minflt), std::memory_order_relaxed);
                s->majflt.store(static_cast<int64_t>(f.majflt), std::memory_order_relaxed);
                if (static_cast<int64_t>(f.uss) > s->peak_private.load(std::memory_order_relaxed))
                    s->peak_private.store(static_cast<int64_t>(f.uss), std::memory_order_relaxed);
                uint64_t total = f.gc.collections[0] + f.gc.collections[1] + f.gc.collections[2];
                s->gc_collections_total.store(static_cast<int64_t>(total), std::memory_order_relaxed);
                uint64_t inside = f.gc.in_request.collections[0] + f.gc.in_request.collections[1] +
                                  f.gc.in_request.collections[2];
                s->gc_in_request_total.store(static_cast<int64_t>(inside), std::memory_order_relaxed);

                Window& w = windows_[s];
                if (w.pid != p.pid) w = Window{p.pid, {}};
                w.points.emplace_back(f.minflt, s->requests.load(std::memory_order_relaxed));
                if (w.points.size() > kWindowPoints) w.points.pop_front();
                uint64_t dreq = w.points.back().second - w.points.front().second;
                uint64_t dflt = w.points.back().first - w.points.front().first;
                f.minflt_per_request = dreq ? static_cast<double>(dflt) / static_cast<double>(dreq) : 0;
            }
            f.peak_private = static_cast<uint64_t>(s->peak_private.load(std::memory_order_relaxed));

            // Memory limits: workers only (uWSGI's reload-on-rss is a worker feature too).
            if (f.mem_ok && p.kind == ProcessRef::Kind::Worker) {
                auto over = [&](uint64_t value, uint64_t limit_mb, const char* what, const char* option, bool evil) {
                    if (!limit_mb || value <= limit_mb * kMB) return false;
                    actions.push_back(LimitAction{p, evil, std::string(what) + " " + mb(value) + " > " + option + " " +
                                                               std::to_string(limit_mb) + " MB"});
                    return true;
                };
                over(f.uss, settings_.evil_reload_on_uss_mb, "uss", "cowguard-evil-reload-on-uss", true) ||
                    over(f.pss, settings_.evil_reload_on_pss_mb, "pss", "cowguard-evil-reload-on-pss", true) ||
                    over(f.uss, settings_.reload_on_uss_mb, "uss", "cowguard-reload-on-uss", false) ||
                    over(f.pss, settings_.reload_on_pss_mb, "pss", "cowguard-reload-on-pss", false);
            }
        }
        if (f.mem_ok && f.uss > f.peak_private) f.peak_private = f.uss;  // a slot not published yet
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
