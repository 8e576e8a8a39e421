// uWSGI glue for the master's figures: the sampler thread, the stats server thread serving
// uWSGI's own document with cowguard's figures merged in, the Prometheus endpoint
// (cowguard-prometheus, a second server thread), the metrics, the memory limits, and each
// process's exit line. Everything here runs in the master except log_exit_line() and
// stats_after_fork().
#include <Python.h>  // first, as CPython asks (uwsgi.h pulls in system headers)

extern "C" {
#include <uwsgi.h>
}

#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cowguard/figures.h"
#include "cowguard/glue.h"
#include "cowguard/measure.h"
#include "cowguard/procfs.h"
#include "cowguard/prometheus.h"
#include "cowguard/sampler.h"
#include "cowguard/stats_doc.h"
#include "cowguard/stats_server.h"
#include "cowguard/version.h"

extern struct uwsgi_server uwsgi;

namespace cowguard::glue {

// The master's sampler, servers and metrics: allocated at init in the master (context().master),
// never destroyed: every process the master forks afterwards has a copy, and a joinable
// std::thread destroyed at a worker's exit() would abort that worker.
struct MasterStats {
    std::unique_ptr<Sampler> sampler;  // null: nothing asks for samples (no stats, limits, prometheus)
    std::unique_ptr<StatsServer> server;
    std::thread* server_thread = nullptr;
    bool started = false;
    std::atomic<int64_t> pss_total{0};      // read in place by uWSGI's metrics
    std::atomic<int64_t> frozen_metric{0};
    std::vector<int> evil_killed;  // pids already killed by the evil limits (until they are reaped)
    // The sampler's effective interval (stretched to stay under 1% of a core).
    std::atomic<double> effective_interval_s{0};
    // cowguard-prometheus: bound at init, served from master_cycle on.
    int prometheus_fd = -1;
    std::unique_ptr<StatsServer> prometheus;
    std::thread* prometheus_thread = nullptr;
    std::string instance_name;
};

namespace {

MasterStats& master() { return *context().master; }

std::vector<ProcessRef> processes() {
    const Context& ctx = context();
    std::vector<ProcessRef> v;
    for (int i = 1; i <= uwsgi.numproc; i++)
        v.push_back(ProcessRef{ProcessRef::Kind::Worker, i, uwsgi.workers[i].pid, ctx.slot_of({Role::Worker, i})});
    for (int i = 0; i < uwsgi.mules_cnt; i++)
        v.push_back(ProcessRef{ProcessRef::Kind::Mule, i + 1, uwsgi.mules[i].pid, ctx.slot_of({Role::Mule, i + 1})});
    int idx = 0;
    for (struct uwsgi_spooler* s = uwsgi.spoolers; s; s = s->next, idx++)
        v.push_back(ProcessRef{ProcessRef::Kind::Spooler, idx, s->pid, ctx.slot_of({Role::Spooler, idx})});
    return v;
}

void act_on_limits(const std::vector<LimitAction>& actions) {
    for (const LimitAction& a : actions) {
        WorkerSlot* s = a.proc.slot;
        if (a.evil) {
            bool already = false;
            std::vector<int>& killed = master().evil_killed;
            for (int pid : killed) already = already || pid == a.proc.pid;
            if (already) continue;
            killed.push_back(a.proc.pid);
            if (killed.size() > 256) killed.erase(killed.begin());
            if (s) s->recycles.fetch_add(1);
            log_line("killing worker %d (pid %d) now: %s", a.proc.id, a.proc.pid, a.reason.c_str());
            kill(a.proc.pid, SIGKILL);
        } else if (s && !s->figures.recycle_requested.exchange(1)) {
            log_line("worker %d (pid %d) will be recycled after its current request: %s", a.proc.id, a.proc.pid,
                     a.reason.c_str());
        }
    }
}

// The sampler's own CPU budget: reading smaps_rollup walks each worker's page tables (about
// 0.5 ms for a 40 MB worker here), so with many workers a round can take tens of ms. The loop
// stretches its interval so that sampling stays under 1% of a core: it aims at 0.75%, as the
// round's wall time misses the thread's wake-ups and the master's other reads.
constexpr double kSamplerDuty = 0.0075;

void sampler_loop() {
    const Settings& st = context().settings;
    MasterStats& m = master();
    int master_pid = getpid();
    bool logged_stretch = false;
    m.effective_interval_s = st.stats_interval_s;
    for (;;) {
        std::vector<ProcessRef> procs = processes();
        act_on_limits(m.sampler->sample(master_pid, procs));
        Snapshot snap = m.sampler->snapshot();
        m.pss_total.store(static_cast<int64_t>(snap.pss_total), std::memory_order_relaxed);
        if (st.stats) {
            // Live rss/vsz in uWSGI's own worker table: uwsgitop, core's metrics and
            // evil-reload-on-rss then see real values without memory-report.
            for (const ProcessRef& p : procs) {
                if (p.kind != ProcessRef::Kind::Worker) continue;
                auto it = snap.workers.find(p.pid);
                if (it == snap.workers.end() || !it->second.mem_ok) continue;
                uwsgi.workers[p.id].rss_size = it->second.rss;
                uwsgi.workers[p.id].vsz_size = it->second.vsz;
            }
        }
        double round_s = snap.last_round_ms / 1000.0;
        double interval = std::max(st.stats_interval_s, round_s / kSamplerDuty);
        m.effective_interval_s = interval;
        if (interval > st.stats_interval_s * 1.5 && !logged_stretch) {
            logged_stretch = true;
            log_line("sampling %zu processes takes %.1f ms: sampling every %.1f s instead of every %.1f s "
                     "(cowguard-stats-interval) to stay under 1%% of a core",
                     procs.size(), snap.last_round_ms, interval, st.stats_interval_s);
        }
        double sleep_s = std::max(0.0, interval - round_s);
        timespec ts;
        ts.tv_sec = static_cast<time_t>(sleep_s);
        ts.tv_nsec = static_cast<long>((sleep_s - static_cast<double>(ts.tv_sec)) * 1e9);
        nanosleep(&ts, nullptr);
    }
}

// What the slot says now about the process `pid` (GC figures are live; memory comes from the
// sampler's last round): the same reading for the stats document and the exposition.
void add_live_figures(ProcessFigures& f, int pid, const WorkerSlot* slot) {
    f.pid = pid;
    if (slot) add_slot_figures(f, *slot);
}

TopFigures top_figures(const Snapshot& snap) {
    const Context& s = context();
    TopFigures top;  // options: only the stats document lists them
    top.version = COWGUARD_VERSION;
    top.frozen_objects = s.freeze.frozen;
    top.freeze_ms = s.freeze.ms;
    top.immortal_objects = s.immortal_objects;
    top.immortalize_ms = s.immortalize_ms;
    top.warmup_ms = s.warmup_ms;
    top.master_ok = snap.master_ok;
    top.master_rss = snap.master.rss;
    top.master_uss = snap.master.uss();
    top.master_pss = snap.master.pss;
    top.master_shared = snap.master.shared();
    top.pss_total = snap.pss_total;
    top.shared_fraction_avg = snap.shared_fraction_avg;
    top.sampler_interval_s = master().effective_interval_s;
    top.sampler_round_ms = snap.last_round_ms;
    top.sampler_rounds = snap.rounds;
    return top;
}

// uWSGI's status word for worker `wid`, decided as its stats document decides it.
const char* worker_status(int wid) {
    const struct uwsgi_worker& w = uwsgi.workers[wid];
    if (w.cheaped) return "cheap";
    if (w.suspended && !uwsgi_worker_is_busy(wid)) return "pause";
    if (w.sig) return "sig";
    return uwsgi_worker_is_busy(wid) ? "busy" : "idle";
}

// The body of GET /metrics: the sampler's last round, the slots and uWSGI's worker table, read
// as they are (no /proc, no JSON): a scrape costs a copy of the snapshot and a walk of the slots.
std::string build_exposition() {
    Snapshot snap = master().sampler->snapshot();
    Exposition e;
    e.instance_name = master().instance_name;
    e.top = top_figures(snap);
    for (const ProcessRef& p : processes()) {
        ExposedProcess x;
        x.id = p.id;
        x.kind = p.kind == ProcessRef::Kind::Mule      ? ExposedProcess::Kind::Mule
                 : p.kind == ProcessRef::Kind::Spooler ? ExposedProcess::Kind::Spooler
                                                       : ExposedProcess::Kind::Worker;
        if (p.pid > 0) {
            const auto& round = p.kind == ProcessRef::Kind::Mule ? snap.mules : snap.workers;
            auto it = round.find(p.pid);
            if (it != round.end()) x.figures = it->second;
            add_live_figures(x.figures, p.pid, p.slot);
        }
        if (p.kind == ProcessRef::Kind::Worker) {
            // A cheaped worker (no process) still has its requests, respawns and status.
            x.has_uwsgi = true;
            x.uwsgi.requests = uwsgi.workers[p.id].requests;
            x.uwsgi.respawns = uwsgi.workers[p.id].respawn_count;
            x.uwsgi.status = worker_status(p.id);
        } else if (p.pid <= 0) {
            continue;
        }
        e.processes.push_back(std::move(x));
    }
    return render_prometheus(e);
}

std::string build_document() {
    struct uwsgi_stats* us = uwsgi_master_generate_stats();
    if (!us) return "{}";
    std::string raw(us->base, us->pos);
    free(us->base);
    free(us);

    Snapshot snap = master().sampler->snapshot();
    // GC figures are read live from the slots; memory figures come from the last round.
    for (int i = 1; i <= uwsgi.numproc; i++) {
        WorkerSlot* slot = context().slot_of({Role::Worker, i});
        int pid = uwsgi.workers[i].pid;
        if (!slot || !slot->written_by(pid)) continue;
        add_live_figures(snap.workers[pid], pid, slot);
    }
    TopFigures top = top_figures(snap);
    top.options = describe_settings(context().settings);
    // uWSGI's own document, unchanged, when it cannot be merged.
    return merge_stats(raw, top, snap.workers, snap.mules, uwsgi.stats_minified).value_or(raw);
}

void register_gauge(const char* name, const char* oid, void* ptr) {
    uwsgi_register_metric(const_cast<char*>(name), const_cast<char*>(oid), UWSGI_METRIC_GAUGE,
                          const_cast<char*>("ptr"), ptr, 0, nullptr);
}

}  // namespace

namespace {

[[noreturn]] void prometheus_fail(const std::string& why) { fail("cowguard-prometheus: " + printable(why)); }

// A listening socket on `a`, close-on-exec (a graceful reload's new master binds it afresh), or
// a stop with one line saying why.
int prometheus_listen(const ListenAddress& a) {
    const std::string& where = a.text;
    if (a.unix_socket) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) prometheus_fail("cannot create a unix socket: " + std::string(strerror(errno)));
        // A socket file left by an instance that died: bind() would fail on it (uWSGI does the same).
        struct stat sb;
        if (lstat(a.path.c_str(), &sb) == 0 && S_ISSOCK(sb.st_mode)) unlink(a.path.c_str());
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        memcpy(sun.sun_path, a.path.c_str(), a.path.size() + 1);  // validated: under 108 bytes
        if (bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0 || listen(fd, 128) != 0)
            prometheus_fail("cannot listen on " + where + ": " + strerror(errno));
        return fd;
    }
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    std::string port = std::to_string(a.port);
    int rc = getaddrinfo(a.host.empty() ? nullptr : a.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0 || !res) prometheus_fail("cannot resolve " + where + ": " + gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        int err = errno;
        freeaddrinfo(res);
        prometheus_fail("cannot listen on " + where + ": " + strerror(err));
    }
    freeaddrinfo(res);
    return fd;
}

}  // namespace

void stats_on_init() {
    const Settings& st = context().settings;
    context().master = new MasterStats();  // never freed: see MasterStats
    MasterStats& m = master();
    bool limits = st.reload_on_uss_mb || st.reload_on_pss_mb || st.evil_reload_on_uss_mb || st.evil_reload_on_pss_mb;
    bool prometheus = !st.prometheus.text.empty();
    if (st.stats || limits || prometheus) m.sampler = std::make_unique<Sampler>(st);
    if (limits && !uwsgi.master_process)
        log_line("cowguard-reload-on-* limits need the master (master = true): the master samples the workers");
    if (!prometheus) return;
    if (!uwsgi.master_process)
        prometheus_fail("needs the master (master = true): its thread serves the figures the master samples");
    std::vector<std::string> argv(uwsgi.argv, uwsgi.argv + uwsgi.argc);
    const char* procname = uwsgi.procname_master ? uwsgi.procname_master : uwsgi.procname;
    m.instance_name = !st.instance_name.empty()
                          ? st.instance_name
                          : default_instance_name(argv, uwsgi.has_emperor, procname ? procname : "");
    // Bound here, in the master before any fork: a taken port stops uWSGI now, not at the first scrape.
    m.prometheus_fd = prometheus_listen(st.prometheus);
    // After a graceful reload uWSGI closes every inherited descriptor it does not know, right after
    // this init: ours is new, but would go the same way without this.
    uwsgi_add_safe_fd(m.prometheus_fd);
}

void stats_after_fork() {
    if (!context().master) return;
    MasterStats& m = master();
    // Workers, mules and spoolers have no use for the listening socket; holding it would keep the
    // port bound after the master is gone.
    if (m.prometheus_fd >= 0) close(m.prometheus_fd);
    m.prometheus_fd = -1;
}

void metrics_register() {
    if (!uwsgi.has_metrics || !context().settings.stats) return;
    MasterStats& m = master();
    char name[64], oid[64];
    for (int i = 1; i <= uwsgi.numproc; i++) {
        WorkerSlot* slot = context().slot_of({Role::Worker, i});
        if (!slot) continue;
        SlotFigures* s = &slot->figures;
        struct Gauge {
            const char* suffix;
            int oid;
            void* ptr;
        };
        std::vector<Gauge> gauges = {
            {"uss_size", 101, &s->uss},
            {"pss_size", 102, &s->pss},
            {"shared_size", 103, &s->shared},
            {"swap_size", 104, &s->swap},
            {"minor_faults", 105, &s->minflt},
            {"major_faults", 106, &s->majflt},
            {"peak_uss_size", 107, &s->peak_private},
            {"gc_collections", 108, &s->gc_collections_total},
            {"cowguard_recycles", 110, &slot->recycles},
            {"gc_in_request_collections", 111, &s->gc_in_request_total},
        };
        for (const GcFigure& f : kGcFigures)
            if (f.uwsgi_metric && f.value) gauges.push_back({f.uwsgi_metric, f.uwsgi_oid, &(s->*f.value)});
        // Registered in oid order (uWSGI lists its metrics in the order they were registered).
        std::sort(gauges.begin(), gauges.end(), [](const Gauge& a, const Gauge& b) { return a.oid < b.oid; });
        for (const Gauge& e : gauges) {
            snprintf(name, sizeof(name), "worker.%d.%s", i, e.suffix);
            snprintf(oid, sizeof(oid), "3.%d.%d", i, e.oid);
            register_gauge(name, oid, e.ptr);
        }
    }
    register_gauge("cowguard.pss_total", "100.1", &m.pss_total);
    register_gauge("cowguard.frozen_objects", "100.2", &m.frozen_metric);
}

namespace {

StatsServerConfig server_config(int fd, StatsProtocol protocol, const char* name) {
    StatsServerConfig cfg;
    cfg.listen_fd = fd;
    cfg.protocol = protocol;
    cfg.timeout_s = uwsgi.socket_timeout > 0 ? uwsgi.socket_timeout : 4;
    cfg.log = [name](const std::string& line) { log_line("%s: %s", name, line.c_str()); };
    return cfg;
}

// The server's loop on a thread of its own (never destroyed: see MasterStats).
std::thread* start_thread(StatsServer& server, const char* thread_name) {
    return new std::thread([&server, thread_name] {
        pthread_setname_np(pthread_self(), thread_name);
        server.run();
    });
}

}  // namespace

void master_cycle() {
    MasterStats& m = master();
    if (context().instance_slot()->stop_instance.exchange(0)) {
        log_line("a worker's warmup failed (cowguard-warmup-errors = fatal): stopping the instance");
        uwsgi.status.dying_for_need_app = 1;  // the master then exits with status 22, as need-app does
        kill_them_all(0);
    }
    if (m.started || !m.sampler) return;
    m.started = true;
    m.frozen_metric.store(static_cast<int64_t>(context().freeze.frozen), std::memory_order_relaxed);
    std::thread([] {
        pthread_setname_np(pthread_self(), "cowguard-sample");
        sampler_loop();
    }).detach();

    // Take over uWSGI's stats socket: core bound it (TCP or unix, chmod-socket, abstract) just
    // before its first loop; from now on cowguard's thread answers on it, so a slow or idle
    // client never stalls the master.
    if (context().settings.stats && uwsgi.stats && uwsgi.stats_fd > -1) {
        int fd = uwsgi.stats_fd;
        StatsServerConfig cfg = server_config(fd, uwsgi.stats_http ? StatsProtocol::StatsHttp : StatsProtocol::Raw,
                                              "stats server");
        m.server = std::make_unique<StatsServer>(cfg, build_document);
        if (m.server->open()) {
            event_queue_del_fd(uwsgi.master_queue, fd, event_queue_read());
            uwsgi.stats_fd = -1;
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            m.server_thread = start_thread(*m.server, "cowguard-stats");
            log_line("stats server on %s now serves uWSGI's document with cowguard's figures", uwsgi.stats);
        } else {
            log_line("stats server on %s: uWSGI serves its own document, without cowguard's figures (see above)",
                     uwsgi.stats);
        }
    }
    if (m.prometheus_fd >= 0) {
        StatsServerConfig cfg = server_config(m.prometheus_fd, StatsProtocol::Metrics, "prometheus");
        cfg.content_type = kPrometheusContentType;
        m.prometheus = std::make_unique<StatsServer>(cfg, build_exposition);
        if (m.prometheus->open()) {
            // its own line in top -H, its own CPU figure
            m.prometheus_thread = start_thread(*m.prometheus, "cowguard-prom");
            log_line("prometheus: GET /metrics on %s (instance_name \"%s\")",
                     context().settings.prometheus.text.c_str(), printable(m.instance_name).c_str());
        } else {
            log_line("prometheus: %s is not served (see above)", context().settings.prometheus.text.c_str());
        }
    }
}

void stats_cleanup() {
    // Before a graceful reload closes every descriptor and execs, and at the master's exit: a
    // client in the middle of a document gets the rest of it (within the server's drain time)
    // instead of a connection closed under it.
    if (getpid() != uwsgi.workers[0].pid || !context().master) return;
    MasterStats& m = master();
    // Both stop first, so their drains run side by side.
    bool stats = m.server_thread && m.server_thread->joinable();
    bool prometheus = m.prometheus_thread && m.prometheus_thread->joinable();
    if (stats) m.server->stop();
    if (prometheus) m.prometheus->stop();
    if (stats) m.server_thread->join();
    if (prometheus) m.prometheus_thread->join();
}

void log_busy_exit_line() {
    const WorkerSlot* s = context().slot;
    if (!s || !s->written_by(getpid())) return;
    // Only counters and one write: the signal that ends this process may have interrupted
    // anything, malloc included, so no /proc reading (stdio) here.
    const struct uwsgi_worker& w = uwsgi.workers[uwsgi.mywid];
    log_line("worker %d (pid %d) exiting busy (%s) after %llu requests: no exit path runs "
             "(no atexit handlers, no report), as with the python plugin",
             context().process.id, static_cast<int>(getpid()),
             w.hijacked ? "hijacked" : w.sig ? "handling a uWSGI signal" : "in a request",
             static_cast<unsigned long long>(s->figures.requests.load()));
}

void log_exit_line() {
    const WorkerSlot* s = context().slot;
    if (!s || !s->written_by(getpid())) return;
    SlotFigures f = s->figures;  // one read
    auto m = read_mem(getpid());
    uint64_t peak = peak_private(f, m ? m->uss() : 0);
    StatFigures st = read_stat(getpid()).value_or(StatFigures{});
    log_line("%s (pid %d) exiting: %llu requests, peak private %s, %llu minor faults, %llu major faults, "
             "gc collections %llu/%llu/%llu (%.1f ms), %llu guarded calls; of those collections, after requests "
             "%llu/%llu/%llu (%.1f ms)",
             describe(context().process).c_str(), static_cast<int>(getpid()),
             static_cast<unsigned long long>(f.requests.load()), mb_text(peak).c_str(),
             static_cast<unsigned long long>(st.minflt), static_cast<unsigned long long>(st.majflt),
             static_cast<unsigned long long>(f.collections[0].load()),
             static_cast<unsigned long long>(f.collections[1].load()),
             static_cast<unsigned long long>(f.collections[2].load()),
             static_cast<double>(f.gc_time_ns.load()) / 1e6, static_cast<unsigned long long>(f.blocked_calls.load()),
             static_cast<unsigned long long>(f.after_collections[0].load()),
             static_cast<unsigned long long>(f.after_collections[1].load()),
             static_cast<unsigned long long>(f.after_collections[2].load()),
             static_cast<double>(f.after_time_ns[0].load() + f.after_time_ns[1].load() + f.after_time_ns[2].load()) / 1e6);
}

}  // namespace cowguard::glue
