// Unit tests for include/cowguard/sampler.h: Sampler::sample over real processes (a forked
// child that allocates and touches memory on command), the slots it updates, the limits it
// decides, and what it does with a process that is gone.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "cowguard/options.h"
#include "cowguard/sampler.h"
#include "cowguard/worker_slot.h"

// Last: check.h defines a fail() macro that breaks <ios> and friends.
#include <check.h>
#include "run_suite.h"

using cowguard::LimitAction;
using cowguard::ProcessRef;
using cowguard::Sampler;
using cowguard::Settings;
using cowguard::Snapshot;
using cowguard::WorkerSlot;

namespace {

constexpr uint64_t MB = 1024 * 1024;
constexpr size_t kPage = 4096;

// Anonymous memory written page by page, without transparent huge pages, so that each page is
// one minor fault and counts as private (Private_Dirty) in the child.
void touch_new_memory(size_t bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) _exit(3);
    madvise(p, bytes, MADV_NOHUGEPAGE);
    auto* c = static_cast<volatile char*>(p);
    for (size_t off = 0; off < bytes; off += kPage) c[off] = 1;
}

// A child process that touches `initial_mb` at start, then `step_mb` more for each byte it reads
// on its command pipe, acknowledging each step with one byte; it exits when the pipe closes.
struct Child {
    pid_t pid = -1;
    int cmd = -1;  // write end
    int ack = -1;  // read end

    void wait_ack() const {
        char c;
        ck_assert_int_eq(read(ack, &c, 1), 1);
    }
    void grow() const {
        ck_assert_int_eq(write(cmd, "g", 1), 1);
        wait_ack();
    }
    void finish() {
        if (pid <= 0) return;
        close(cmd);
        close(ack);
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        pid = -1;
    }
};

Child spawn(size_t initial_mb, size_t step_mb = 4) {
    int cmd[2], ack[2];
    ck_assert_int_eq(pipe(cmd), 0);
    ck_assert_int_eq(pipe(ack), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        // Keep only its own pipe ends: an inherited write end of another child's command pipe
        // would keep that child from ever seeing EOF.
        for (int fd = 3; fd < 1024; fd++)
            if (fd != cmd[0] && fd != ack[1]) close(fd);
        touch_new_memory(initial_mb * MB);
        if (write(ack[1], "r", 1) != 1) _exit(4);
        char c;
        while (read(cmd[0], &c, 1) == 1) {
            touch_new_memory(step_mb * MB);
            if (write(ack[1], "g", 1) != 1) _exit(4);
        }
        _exit(0);
    }
    close(cmd[0]);
    close(ack[1]);
    Child ch;
    ch.pid = pid;
    ch.cmd = cmd[1];
    ch.ack = ack[0];
    ch.wait_ack();
    return ch;
}

// A WorkerSlot in a plain buffer, as the plugin has them in shared memory.
struct SlotBuffer {
    alignas(WorkerSlot) unsigned char buf[sizeof(WorkerSlot)];
    WorkerSlot* slot;
    explicit SlotBuffer(int pid) : slot(new (buf) WorkerSlot()) { slot->pid.store(pid); }
    ~SlotBuffer() { slot->~WorkerSlot(); }
};

pid_t dead_pid() {
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) _exit(0);
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    return child;
}

ProcessRef worker(int id, int pid, WorkerSlot* slot) {
    return ProcessRef{ProcessRef::Kind::Worker, id, pid, slot};
}

}  // namespace

// ---- figures ---------------------------------------------------------------------------------

START_TEST(figures_of_a_real_child) {
    Child ch = spawn(20);
    SlotBuffer sb(ch.pid);
    Settings settings;
    Sampler sampler(settings);
    std::vector<LimitAction> actions = sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    ck_assert(actions.empty());  // no limits set

    Snapshot snap = sampler.snapshot();
    ck_assert_uint_eq(snap.rounds, 1);
    ck_assert_uint_eq(snap.workers.size(), 1);
    ck_assert(snap.mules.empty());
    const cowguard::ProcessFigures f = snap.workers.at(ch.pid);  // a copy: snap is reassigned below
    ck_assert_int_eq(f.pid, ch.pid);
    ck_assert(f.mem_ok);
    ck_assert_uint_ge(f.uss, 20 * MB);
    ck_assert_uint_ge(f.rss, f.uss);
    ck_assert_uint_eq(f.private_, f.uss);
    ck_assert_uint_eq(f.shared + f.private_, f.rss);  // one smaps_rollup read: exact
    ck_assert_uint_ge(f.pss, f.uss);                  // private pages count whole in pss
    ck_assert_uint_le(f.pss, f.rss);
    ck_assert_uint_gt(f.vsz, f.rss);
    ck_assert_uint_ge(f.minflt, 20 * MB / kPage);  // one fault per touched page, at least
    ck_assert_uint_eq(f.swap, 0);
    ck_assert(f.gc_ok);  // slot pid == process pid
    ck_assert_uint_eq(f.peak_private, f.uss);

    // The slot got the memory figures (the worker reads peak_private for its exit line; the
    // metrics read the others in place).
    ck_assert_int_eq(sb.slot->figures.uss.load(), static_cast<int64_t>(f.uss));
    ck_assert_int_eq(sb.slot->figures.pss.load(), static_cast<int64_t>(f.pss));
    ck_assert_int_eq(sb.slot->figures.shared.load(), static_cast<int64_t>(f.shared));
    ck_assert_int_eq(sb.slot->figures.minflt.load(), static_cast<int64_t>(f.minflt));
    ck_assert_int_eq(sb.slot->figures.peak_private.load(), static_cast<int64_t>(f.uss));

    // The master (this test process) and the totals.
    ck_assert(snap.master_ok);
    ck_assert_uint_gt(snap.master.rss, 0);
    ck_assert_uint_eq(snap.pss_total, snap.master.pss + f.pss);
    double frac = static_cast<double>(f.shared) / static_cast<double>(f.rss);
    ck_assert_double_eq_tol(snap.shared_fraction_avg, frac, 1e-12);
    ck_assert(snap.last_round_ms >= 0);

    // It grows: the next round sees it, and the peak follows.
    ch.grow();
    ch.grow();
    sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    snap = sampler.snapshot();
    ck_assert_uint_eq(snap.rounds, 2);
    ck_assert_uint_ge(snap.workers.at(ch.pid).uss, f.uss + 8 * MB);
    ck_assert_int_eq(sb.slot->figures.peak_private.load(), static_cast<int64_t>(snap.workers.at(ch.pid).uss));
    ch.finish();
}
END_TEST

START_TEST(gc_figures_come_from_the_slot) {
    Child ch = spawn(1);
    SlotBuffer sb(ch.pid);
    WorkerSlot* s = sb.slot;
    s->figures.gc_enabled.store(1);
    s->figures.threshold[0].store(50000);
    s->figures.threshold[1].store(20);
    s->figures.threshold[2].store(100);
    s->figures.frozen.store(123456);
    s->figures.collections[0].store(7);
    s->figures.collections[1].store(2);
    s->figures.collections[2].store(1);
    s->figures.collected.store(99);
    s->figures.uncollectable.store(3);
    s->figures.gc_time_ns.store(2500000);
    s->figures.blocked_calls.store(4);
    s->figures.restored.store(5);
    s->recycles.store(6);
    Settings settings;
    Sampler sampler(settings);
    sampler.sample(getpid(), {worker(2, ch.pid, s)});
    const cowguard::ProcessFigures f = sampler.snapshot().workers.at(ch.pid);
    ck_assert(f.gc_ok);
    ck_assert(f.counted.gc_enabled.load());
    ck_assert_int_eq(f.counted.threshold[0].load(), 50000);
    ck_assert_int_eq(f.counted.threshold[1].load(), 20);
    ck_assert_int_eq(f.counted.threshold[2].load(), 100);
    ck_assert_uint_eq(f.counted.frozen.load(), 123456);
    ck_assert_uint_eq(f.counted.collections[0].load(), 7);
    ck_assert_uint_eq(f.counted.collections[1].load(), 2);
    ck_assert_uint_eq(f.counted.collections[2].load(), 1);
    ck_assert_uint_eq(f.counted.collected.load(), 99);
    ck_assert_uint_eq(f.counted.uncollectable.load(), 3);
    ck_assert_double_eq_tol(cowguard::ns_to_ms(f.counted.gc_time_ns.load()), 2.5, 1e-9);
    ck_assert_uint_eq(f.counted.blocked_calls.load(), 4);
    ck_assert_uint_eq(f.counted.restored.load(), 5);
    ck_assert_uint_eq(f.recycles, 6);
    ck_assert_int_eq(s->figures.gc_collections_total.load(), 10);  // the metric's mirror
    ch.finish();
}
END_TEST

START_TEST(slot_of_another_process_is_not_touched) {
    // The slot still names the previous process (the new one has not written it yet): no GC
    // figures, and the slot keeps its values.
    Child ch = spawn(2);
    SlotBuffer sb(ch.pid + 100000);
    sb.slot->figures.peak_private.store(77);
    Settings settings;
    settings.reload_on_uss_mb = 1;  // over it, but the slot is not this process's
    Sampler sampler(settings);
    std::vector<LimitAction> actions = sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    const cowguard::ProcessFigures f = sampler.snapshot().workers.at(ch.pid);
    ck_assert(f.mem_ok);
    ck_assert(!f.gc_ok);
    ck_assert_int_eq(sb.slot->figures.uss.load(), 0);
    ck_assert_int_eq(sb.slot->figures.peak_private.load(), 77);
    ck_assert(actions.empty());
    ch.finish();
}
END_TEST

START_TEST(peak_never_goes_down) {
    Child ch = spawn(2);
    SlotBuffer sb(ch.pid);
    sb.slot->figures.peak_private.store(int64_t{1} << 40);
    Settings settings;
    Sampler sampler(settings);
    sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    const cowguard::ProcessFigures f = sampler.snapshot().workers.at(ch.pid);
    ck_assert_int_eq(sb.slot->figures.peak_private.load(), int64_t{1} << 40);
    ck_assert_uint_eq(f.peak_private, uint64_t{1} << 40);
    ck_assert_int_eq(sb.slot->figures.uss.load(), static_cast<int64_t>(f.uss));
    ch.finish();
}
END_TEST

START_TEST(mules_are_kept_apart_and_not_averaged) {
    Child w = spawn(2);
    Child m = spawn(2);
    SlotBuffer ws(w.pid), ms(m.pid);
    Settings settings;
    settings.reload_on_uss_mb = 1;
    settings.evil_reload_on_uss_mb = 1;
    Sampler sampler(settings);
    std::vector<LimitAction> actions =
        sampler.sample(getpid(), {worker(1, w.pid, ws.slot), ProcessRef{ProcessRef::Kind::Mule, 1, m.pid, ms.slot},
                                  ProcessRef{ProcessRef::Kind::Spooler, 0, 0, nullptr} /* not running */});
    Snapshot snap = sampler.snapshot();
    ck_assert_uint_eq(snap.workers.size(), 1);
    ck_assert_uint_eq(snap.mules.size(), 1);
    ck_assert(snap.mules.at(m.pid).mem_ok);
    ck_assert(snap.mules.at(m.pid).gc_ok);
    ck_assert_int_eq(ms.slot->figures.uss.load(), static_cast<int64_t>(snap.mules.at(m.pid).uss));
    // Limits are for workers only: one action, for the worker.
    ck_assert_uint_eq(actions.size(), 1);
    ck_assert_int_eq(actions[0].proc.pid, w.pid);
    // pss_total counts the mule; the shared fraction averages workers only.
    const auto& wf = snap.workers.at(w.pid);
    ck_assert_uint_eq(snap.pss_total, snap.master.pss + wf.pss + snap.mules.at(m.pid).pss);
    ck_assert_double_eq_tol(snap.shared_fraction_avg, static_cast<double>(wf.shared) / static_cast<double>(wf.rss),
                            1e-12);
    w.finish();
    m.finish();
}
END_TEST

// ---- limits ----------------------------------------------------------------------------------

START_TEST(reload_on_uss_is_graceful) {
    Child ch = spawn(20);
    SlotBuffer sb(ch.pid);
    Settings settings;
    settings.reload_on_uss_mb = 10;
    Sampler sampler(settings);
    std::vector<LimitAction> actions = sampler.sample(getpid(), {worker(3, ch.pid, sb.slot)});
    ck_assert_uint_eq(actions.size(), 1);
    const LimitAction& a = actions[0];
    ck_assert(!a.evil);
    ck_assert_int_eq(a.proc.id, 3);
    ck_assert_int_eq(a.proc.pid, ch.pid);
    ck_assert_ptr_eq(a.proc.slot, sb.slot);
    ck_assert_msg(a.reason.rfind("uss ", 0) == 0, "%s", a.reason.c_str());
    ck_assert_msg(a.reason.find(" MB > cowguard-reload-on-uss 10 MB") != std::string::npos, "%s", a.reason.c_str());
    // The sampler decides, the glue acts: it does not set recycle_requested itself.
    ck_assert_uint_eq(sb.slot->figures.recycle_requested.load(), 0);

    // Under a generous limit: nothing.
    settings.reload_on_uss_mb = 1000;
    ck_assert(sampler.sample(getpid(), {worker(3, ch.pid, sb.slot)}).empty());
    ch.finish();
}
END_TEST

START_TEST(evil_reload_on_uss_kills) {
    Child ch = spawn(20);
    SlotBuffer sb(ch.pid);
    Settings settings;
    settings.evil_reload_on_uss_mb = 10;
    Sampler sampler(settings);
    std::vector<LimitAction> actions = sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    ck_assert_uint_eq(actions.size(), 1);
    ck_assert(actions[0].evil);
    ck_assert_msg(actions[0].reason.find("> cowguard-evil-reload-on-uss 10 MB") != std::string::npos, "%s",
                  actions[0].reason.c_str());

    // Both limits over: one action per process and round, the evil one.
    settings.reload_on_uss_mb = 10;
    actions = sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    ck_assert_uint_eq(actions.size(), 1);
    ck_assert(actions[0].evil);
    ch.finish();
}
END_TEST

START_TEST(pss_limits) {
    Child ch = spawn(20);
    SlotBuffer sb(ch.pid);
    Settings settings;
    settings.reload_on_pss_mb = 10;  // private pages count whole in pss
    Sampler sampler(settings);
    std::vector<LimitAction> actions = sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    ck_assert_uint_eq(actions.size(), 1);
    ck_assert(!actions[0].evil);
    ck_assert_msg(actions[0].reason.rfind("pss ", 0) == 0, "%s", actions[0].reason.c_str());
    ck_assert_msg(actions[0].reason.find("> cowguard-reload-on-pss 10 MB") != std::string::npos, "%s",
                  actions[0].reason.c_str());
    settings.reload_on_pss_mb = 0;
    settings.evil_reload_on_pss_mb = 10;
    actions = sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    ck_assert_uint_eq(actions.size(), 1);
    ck_assert(actions[0].evil);
    ck_assert_msg(actions[0].reason.find("> cowguard-evil-reload-on-pss 10 MB") != std::string::npos, "%s",
                  actions[0].reason.c_str());
    ch.finish();
}
END_TEST

START_TEST(several_workers_only_the_big_one) {
    Child small = spawn(1);
    Child big = spawn(30);
    SlotBuffer s1(small.pid), s2(big.pid);
    Settings settings;
    settings.reload_on_uss_mb = 20;
    Sampler sampler(settings);
    std::vector<LimitAction> actions =
        sampler.sample(getpid(), {worker(1, small.pid, s1.slot), worker(2, big.pid, s2.slot)});
    ck_assert_uint_eq(actions.size(), 1);
    ck_assert_int_eq(actions[0].proc.id, 2);
    ck_assert_int_eq(actions[0].proc.pid, big.pid);
    small.finish();
    big.finish();
}
END_TEST

// ---- processes that are gone -----------------------------------------------------------------

START_TEST(dead_pid_is_not_sampled) {
    pid_t gone = dead_pid();
    SlotBuffer sb(gone);
    sb.slot->figures.peak_private.store(5 * MB);
    sb.slot->figures.blocked_calls.store(2);
    Settings settings;
    settings.reload_on_uss_mb = 1;
    settings.evil_reload_on_uss_mb = 1;
    Sampler sampler(settings);
    std::vector<LimitAction> actions = sampler.sample(getpid(), {worker(1, gone, sb.slot)});
    ck_assert(actions.empty());
    Snapshot snap = sampler.snapshot();
    const cowguard::ProcessFigures f = snap.workers.at(gone);
    ck_assert(!f.mem_ok);
    ck_assert_uint_eq(f.rss, 0);
    ck_assert_uint_eq(f.uss, 0);
    // Its history is still reported from the slot.
    ck_assert(f.gc_ok);
    ck_assert_uint_eq(f.peak_private, 5 * MB);
    ck_assert_uint_eq(f.counted.blocked_calls.load(), 2);
    ck_assert_int_eq(sb.slot->figures.uss.load(), 0);  // not overwritten
    ck_assert_uint_eq(snap.pss_total, snap.master.pss);
    ck_assert_double_eq(snap.shared_fraction_avg, 0);

    // A dead master, a pid that never existed, a null slot: no crash, nothing sampled.
    sampler.sample(gone, {worker(1, 0x3ffffff0, nullptr), worker(2, -5, nullptr)});
    snap = sampler.snapshot();
    ck_assert(!snap.master_ok);
    ck_assert_uint_eq(snap.workers.size(), 1);  // the negative pid is skipped
    ck_assert(!snap.workers.at(0x3ffffff0).mem_ok);
    ck_assert(!snap.workers.at(0x3ffffff0).gc_ok);
    ck_assert_uint_eq(snap.pss_total, 0);
    ck_assert_uint_eq(snap.rounds, 2);
}
END_TEST

START_TEST(process_dies_between_rounds) {
    Child ch = spawn(4);
    SlotBuffer sb(ch.pid);
    Settings settings;
    Sampler sampler(settings);
    sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    ck_assert(sampler.snapshot().workers.at(ch.pid).mem_ok);
    int pid = ch.pid;
    ch.finish();  // reaped: the pid is gone
    sampler.sample(getpid(), {worker(1, pid, sb.slot)});
    Snapshot snap = sampler.snapshot();
    ck_assert(!snap.workers.at(pid).mem_ok);
    ck_assert_uint_ge(snap.workers.at(pid).peak_private, 4 * MB);  // kept
}
END_TEST

// ---- faults per request ----------------------------------------------------------------------

START_TEST(minflt_per_request_over_the_window) {
    Child ch = spawn(1, 4);
    SlotBuffer sb(ch.pid);
    sb.slot->figures.requests.store(5);
    Settings settings;
    Sampler sampler(settings);
    sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    ck_assert_double_eq(sampler.snapshot().workers.at(ch.pid).minflt_per_request, 0);  // one point
    uint64_t flt0 = sampler.snapshot().workers.at(ch.pid).minflt;

    // 10 requests that touched 4 MB = 1024 new pages between them: about 102 faults each.
    ch.grow();
    sb.slot->figures.requests.fetch_add(10);
    sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    const cowguard::ProcessFigures f = sampler.snapshot().workers.at(ch.pid);
    double expected = static_cast<double>(f.minflt - flt0) / 10.0;
    ck_assert_double_eq_tol(f.minflt_per_request, expected, 1e-9);
    ck_assert_msg(f.minflt_per_request >= 102.4 && f.minflt_per_request < 150, "%f", f.minflt_per_request);

    // No request since: the window still spans the 10 requests.
    sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    ck_assert_msg(sampler.snapshot().workers.at(ch.pid).minflt_per_request >= 102.4, "%f",
                  sampler.snapshot().workers.at(ch.pid).minflt_per_request);

    // The window holds 10 points: after 10 more idle rounds the busy stretch has left it.
    for (int i = 0; i < 10; i++) sampler.sample(getpid(), {worker(1, ch.pid, sb.slot)});
    ck_assert_double_eq(sampler.snapshot().workers.at(ch.pid).minflt_per_request, 0);

    // A new process in the same slot starts a new window (its counters start from zero).
    Child next = spawn(1, 4);
    sb.slot->pid.store(next.pid);
    sb.slot->figures.requests.store(0);
    sampler.sample(getpid(), {worker(1, next.pid, sb.slot)});
    ck_assert_double_eq(sampler.snapshot().workers.at(next.pid).minflt_per_request, 0);
    next.grow();
    sb.slot->figures.requests.store(4);
    sampler.sample(getpid(), {worker(1, next.pid, sb.slot)});
    double v = sampler.snapshot().workers.at(next.pid).minflt_per_request;
    ck_assert_msg(v >= 256 && v < 350, "%f", v);  // 1024 pages / 4 requests
    ch.finish();
    next.finish();
}
END_TEST

int main() {
    Suite* suite = suite_create("sampler");
    TCase* fig = tcase_create("figures");
    tcase_set_timeout(fig, 30);
    tcase_add_test(fig, figures_of_a_real_child);
    tcase_add_test(fig, gc_figures_come_from_the_slot);
    tcase_add_test(fig, slot_of_another_process_is_not_touched);
    tcase_add_test(fig, peak_never_goes_down);
    tcase_add_test(fig, mules_are_kept_apart_and_not_averaged);
    suite_add_tcase(suite, fig);
    TCase* lim = tcase_create("limits");
    tcase_set_timeout(lim, 30);
    tcase_add_test(lim, reload_on_uss_is_graceful);
    tcase_add_test(lim, evil_reload_on_uss_kills);
    tcase_add_test(lim, pss_limits);
    tcase_add_test(lim, several_workers_only_the_big_one);
    suite_add_tcase(suite, lim);
    TCase* gone = tcase_create("gone");
    tcase_set_timeout(gone, 30);
    tcase_add_test(gone, dead_pid_is_not_sampled);
    tcase_add_test(gone, process_dies_between_rounds);
    suite_add_tcase(suite, gone);
    TCase* flt = tcase_create("faults");
    tcase_set_timeout(flt, 30);
    tcase_add_test(flt, minflt_per_request_over_the_window);
    suite_add_tcase(suite, flt);

    return run_suite(suite);
}
