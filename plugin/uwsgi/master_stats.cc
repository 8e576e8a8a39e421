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

#include "cowguard/glue_state.h"
#include "cowguard/procfs.h"
#include "cowguard/prometheus.h"
#include "cowguard/sampler.h"
#include "cowguard/stats_doc.h"
#include "cowguard/stats_server.h"
#include "cowguard/version.h"

extern struct uwsgi_server uwsgi;

namespace cowguard::glue {

namespace {

std::unique_ptr<Sampler> g_sampler;
std::unique_ptr<StatsServer> g_server;
// Never destroyed: every process the master forks afterwards has a copy of it, and a joinable
// std::thread destroyed at a worker's exit() would abort that worker.
std::thread* g_server_thread = nullptr;
bool g_started = false;
std::atomic<int64_t> g_pss_total{0};
std::atomic<int64_t> g_frozen_metric{0};
std::vector<int> g_evil_killed;  // pids already killed by the evil limits (until they are reaped)
// cowguard-prometheus: bound at init, served from master_cycle on.
int g_prometheus_fd = -1;
std::unique_ptr<StatsServer> g_prometheus;
std::thread* g_prometheus_thread = nullptr;  // never destroyed, as g_server_thread
std::string g_instance_name;

constexpr double kMB = 1024.0 * 1024.0;

std::vector<ProcessRef> processes() {
    std::vector<ProcessRef> v;
    for (int i = 1; i <= uwsgi.numproc; i++)
        v.push_back(ProcessRef{ProcessRef::Kind::Worker, i, uwsgi.workers[i].pid, worker_slot(i)});
    for (int i = 0; i < uwsgi.mules_cnt; i++)
        v.push_back(ProcessRef{ProcessRef::Kind::Mule, i + 1, uwsgi.mules[i].pid, mule_slot(i + 1)});
    int idx = 0;
    for (struct uwsgi_spooler* s = uwsgi.spoolers; s; s = s->next, idx++)
        v.push_back(ProcessRef{ProcessRef::Kind::Spooler, idx, s->pid, spooler_slot(idx)});
    return v;
}

void act_on_limits(const std::vector<LimitAction>& actions) {
    for (const LimitAction& a : actions) {
        WorkerSlot* s = a.proc.slot;
        if (a.evil) {
            bool already = false;
            for (int pid : g_evil_killed) already = already || pid == a.proc.pid;
            if (already) continue;
            g_evil_killed.push_back(a.proc.pid);
            if (g_evil_killed.size() > 256) g_evil_killed.erase(g_evil_killed.begin());
            if (s) s->recycles.fetch_add(1, std::memory_order_relaxed);
            log_line("killing worker %d (pid %d) now: %s", a.proc.id, a.proc.pid, a.reason.c_str());
            kill(a.proc.pid, SIGKILL);
        } else if (s && !s->recycle_requested.exchange(1)) {
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
std::atomic<double> g_effective_interval_s{0};

void sampler_loop() {
    const Settings& st = state().settings;
    int master_pid = getpid();
    bool logged_stretch = false;
    g_effective_interval_s = st.stats_interval_s;
    for (;;) {
        std::vector<ProcessRef> procs = processes();
        act_on_limits(g_sampler->sample(master_pid, procs));
        Snapshot snap = g_sampler->snapshot();
        g_pss_total.store(static_cast<int64_t>(snap.pss_total), std::memory_order_relaxed);
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
        g_effective_interval_s = interval;
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
void add_slot_figures(ProcessFigures& f, int pid, WorkerSlot* slot) {
    f.pid = pid;
    if (!slot || pid <= 0 || slot->pid.load(std::memory_order_relaxed) != pid) return;
    f.gc_ok = true;
    f.gc = gc_figures_from(*slot);
    f.recycles = slot->recycles.load(std::memory_order_relaxed);
    // The slot's peak is reset at the fork and raised by the sampler: a round may not have
    // seen this process yet.
    f.peak_private = std::max(static_cast<uint64_t>(slot->peak_private.load(std::memory_order_relaxed)),
                              f.mem_ok ? f.uss : 0);
}

TopFigures top_figures(const Snapshot& snap) {
    const State& s = state();
    TopFigures top;  // options: only the stats document lists them
    top.version = COWGUARD_VERSION;
    top.frozen_objects = s.frozen_objects;
    top.freeze_ms = s.freeze_ms;
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
    top.sampler_interval_s = g_effective_interval_s;
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
    Snapshot snap = g_sampler->snapshot();
    Exposition e;
    e.instance_name = g_instance_name;
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
            add_slot_figures(x.figures, p.pid, p.slot);
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

    Snapshot snap = g_sampler->snapshot();
    // GC figures are read live from the slots; memory figures come from the last round.
    for (int i = 1; i <= uwsgi.numproc; i++) {
        WorkerSlot* slot = worker_slot(i);
        int pid = uwsgi.workers[i].pid;
        if (!slot || pid <= 0 || slot->pid.load(std::memory_order_relaxed) != pid) continue;
        add_slot_figures(snap.workers[pid], pid, slot);
    }
    TopFigures top = top_figures(snap);
    top.options = describe_settings(state().settings);
    std::string out;
    if (!merge_stats(raw, top, snap.workers, snap.mules, uwsgi.stats_minified, out)) return raw;
    return out;
}

void register_gauge(const char* name, const char* oid, void* ptr) {
    uwsgi_register_metric(const_cast<char*>(name), const_cast<char*>(oid), UWSGI_METRIC_GAUGE,
                          const_cast<char*>("ptr"), ptr, 0, nullptr);
}

}  // namespace

namespace {

[[noreturn]] void prometheus_fail(const std::string& why) {
    log_line("cowguard-prometheus: %s", printable(why).c_str());
    exit(1);
}

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
    const Settings& st = state().settings;
    bool limits = st.reload_on_uss_mb || st.reload_on_pss_mb || st.evil_reload_on_uss_mb || st.evil_reload_on_pss_mb;
    bool prometheus = !st.prometheus.text.empty();
    if (st.stats || limits || prometheus) g_sampler = std::make_unique<Sampler>(st);
    if (limits && !uwsgi.master_process)
        log_line("cowguard-reload-on-* limits need the master (master = true): the master samples the workers");
    if (!prometheus) return;
    if (!uwsgi.master_process)
        prometheus_fail("needs the master (master = true): its thread serves the figures the master samples");
    std::vector<std::string> argv(uwsgi.argv, uwsgi.argv + uwsgi.argc);
    const char* procname = uwsgi.procname_master ? uwsgi.procname_master : uwsgi.procname;
    g_instance_name = !st.instance_name.empty()
                          ? st.instance_name
                          : default_instance_name(argv, uwsgi.has_emperor, procname ? procname : "");
    // Bound here, in the master before any fork: a taken port stops uWSGI now, not at the first scrape.
    g_prometheus_fd = prometheus_listen(st.prometheus);
    // After a graceful reload uWSGI closes every inherited descriptor it does not know, right after
    // this init: ours is new, but would go the same way without this.
    uwsgi_add_safe_fd(g_prometheus_fd);
}

void stats_after_fork() {
    // Workers, mules and spoolers have no use for the listening socket; holding it would keep the
    // port bound after the master is gone.
    if (g_prometheus_fd >= 0) close(g_prometheus_fd);
    g_prometheus_fd = -1;
}

void metrics_register() {
    if (!uwsgi.has_metrics || !state().settings.stats) return;
    char name[64], oid[64];
    for (int i = 1; i <= uwsgi.numproc; i++) {
        WorkerSlot* s = worker_slot(i);
        if (!s) continue;
        struct {
            const char* suffix;
            int oid;
            void* ptr;
        } m[] = {
            {"uss_size", 101, &s->uss},
            {"pss_size", 102, &s->pss},
            {"shared_size", 103, &s->shared},
            {"swap_size", 104, &s->swap},
            {"minor_faults", 105, &s->minflt},
            {"major_faults", 106, &s->majflt},
            {"peak_uss_size", 107, &s->peak_private},
            {"gc_collections", 108, &s->gc_collections_total},
            {"gc_blocked_calls", 109, &s->blocked_calls},
            {"cowguard_recycles", 110, &s->recycles},
            {"gc_in_request_collections", 111, &s->gc_in_request_total},
        };
        for (auto& e : m) {
            snprintf(name, sizeof(name), "worker.%d.%s", i, e.suffix);
            snprintf(oid, sizeof(oid), "3.%d.%d", i, e.oid);
            register_gauge(name, oid, e.ptr);
        }
    }
    register_gauge("cowguard.pss_total", "100.1", &g_pss_total);
    register_gauge("cowguard.frozen_objects", "100.2", &g_frozen_metric);
}

void master_cycle() {
    WorkerSlot& instance = state().slots[0];
    if (instance.stop_instance.exchange(0)) {
        log_line("a worker's warmup failed (cowguard-warmup-errors = fatal): stopping the instance");
        uwsgi.status.dying_for_need_app = 1;  // the master then exits with status 22, as need-app does
        kill_them_all(0);
    }
    if (g_started || !g_sampler) return;
    g_started = true;
    g_frozen_metric.store(static_cast<int64_t>(state().frozen_objects), std::memory_order_relaxed);
    std::thread([] {
        pthread_setname_np(pthread_self(), "cowguard-sample");
        sampler_loop();
    }).detach();

    // Take over uWSGI's stats socket: core bound it (TCP or unix, chmod-socket, abstract) just
    // before its first loop; from now on cowguard's thread answers on it, so a slow or idle
    // client never stalls the master.
    if (state().settings.stats && uwsgi.stats && uwsgi.stats_fd > -1) {
        event_queue_del_fd(uwsgi.master_queue, uwsgi.stats_fd, event_queue_read());
        int fd = uwsgi.stats_fd;
        uwsgi.stats_fd = -1;
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        StatsServerConfig cfg;
        cfg.listen_fd = fd;
        cfg.protocol = uwsgi.stats_http ? StatsProtocol::StatsHttp : StatsProtocol::Raw;
        cfg.timeout_s = uwsgi.socket_timeout > 0 ? uwsgi.socket_timeout : 4;
        g_server = std::make_unique<StatsServer>(cfg, build_document);
        g_server_thread = new std::thread([] {
            pthread_setname_np(pthread_self(), "cowguard-stats");
            g_server->run();
        });
        log_line("stats server on %s now serves uWSGI's document with cowguard's figures", uwsgi.stats);
    }
    if (g_prometheus_fd >= 0) {
        StatsServerConfig cfg;
        cfg.listen_fd = g_prometheus_fd;
        cfg.protocol = StatsProtocol::Metrics;
        cfg.content_type = kPrometheusContentType;
        cfg.timeout_s = uwsgi.socket_timeout > 0 ? uwsgi.socket_timeout : 4;
        g_prometheus = std::make_unique<StatsServer>(cfg, build_exposition);
        g_prometheus_thread = new std::thread([] {
            pthread_setname_np(pthread_self(), "cowguard-prom");  // its own line in top -H, its own CPU figure
            g_prometheus->run();
        });
        log_line("prometheus: GET /metrics on %s (instance_name \"%s\")", state().settings.prometheus.text.c_str(),
                 printable(g_instance_name).c_str());
    }
}

void stats_cleanup() {
    // Before a graceful reload closes every descriptor and execs, and at the master's exit: a
    // client in the middle of a document gets the rest of it (within the server's drain time)
    // instead of a connection closed under it.
    if (getpid() != uwsgi.workers[0].pid) return;
    // Both stop first, so their drains run side by side.
    bool stats = g_server_thread && g_server_thread->joinable();
    bool prometheus = g_prometheus_thread && g_prometheus_thread->joinable();
    if (stats) g_server->stop();
    if (prometheus) g_prometheus->stop();
    if (stats) g_server_thread->join();
    if (prometheus) g_prometheus_thread->join();
}

void log_busy_exit_line() {
    WorkerSlot* s = my_slot();
    if (!s || s->pid.load(std::memory_order_relaxed) != getpid()) return;
    // Only counters and one write: the signal that ends this process may have interrupted
    // anything, malloc included, so no /proc reading (stdio) here.
    log_line("worker %d (pid %d) exiting busy (in a request, or hijacked) after %llu requests: no exit path runs "
             "(no atexit handlers, no report), as with the python plugin",
             uwsgi.mywid, static_cast<int>(getpid()),
             static_cast<unsigned long long>(s->requests.load(std::memory_order_relaxed)));
}

void log_exit_line() {
    WorkerSlot* s = my_slot();
    const char* kind = uwsgi.muleid > 0 ? "mule" : uwsgi.i_am_a_spooler ? "spooler" : "worker";
    int id = uwsgi.muleid > 0 ? uwsgi.muleid : uwsgi.i_am_a_spooler ? 0 : uwsgi.mywid;
    if (!s || s->pid.load(std::memory_order_relaxed) != getpid()) return;
    MemFigures m;
    StatFigures st;
    uint64_t peak = static_cast<uint64_t>(s->peak_private.load(std::memory_order_relaxed));
    if (read_mem(getpid(), m) && m.uss() > peak) peak = m.uss();
    read_stat(getpid(), st);
    log_line("%s %d (pid %d) exiting: %llu requests, peak private %.1f MB, %llu minor faults, %llu major faults, "
             "gc collections %llu/%llu/%llu (%.1f ms), %llu guarded calls; of those collections, after requests %llu/%llu/%llu (%.1f ms)",
             kind, id, static_cast<int>(getpid()),
             static_cast<unsigned long long>(s->requests.load(std::memory_order_relaxed)),
             static_cast<double>(peak) / kMB, static_cast<unsigned long long>(st.minflt),
             static_cast<unsigned long long>(st.majflt),
             static_cast<unsigned long long>(s->collections[0].load(std::memory_order_relaxed)),
             static_cast<unsigned long long>(s->collections[1].load(std::memory_order_relaxed)),
             static_cast<unsigned long long>(s->collections[2].load(std::memory_order_relaxed)),
             static_cast<double>(s->gc_time_ns.load(std::memory_order_relaxed)) / 1e6,
             static_cast<unsigned long long>(s->blocked_calls.load(std::memory_order_relaxed)),
             static_cast<unsigned long long>(s->after_collections[0].load(std::memory_order_relaxed)),
             static_cast<unsigned long long>(s->after_collections[1].load(std::memory_order_relaxed)),
             static_cast<unsigned long long>(s->after_collections[2].load(std::memory_order_relaxed)),
             static_cast<double>(s->after_time_ns[0].load(std::memory_order_relaxed) +
                                 s->after_time_ns[1].load(std::memory_order_relaxed) +
                                 s->after_time_ns[2].load(std::memory_order_relaxed)) / 1e6);
}

}  // namespace cowguard::glue
