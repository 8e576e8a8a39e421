// Unit tests for include/cowguard/process_role.h: which process this is and which slot it owns,
// including ids out of range and the instance's slot 0.
#include <set>
#include <string>

#include "cowguard/process_role.h"
#include "cowguard/worker_slot.h"

// Last: check.h defines a fail() macro that breaks <ios> and friends.
#include <check.h>
#include "run_suite.h"

using cowguard::describe;
using cowguard::identify;
using cowguard::ProcessId;
using cowguard::Role;
using cowguard::SlotLayout;

START_TEST(identify_reads_uwsgi_fields) {
    ck_assert(identify(0, 0, -1) == (ProcessId{Role::Master, 0}));
    ck_assert(identify(3, 0, -1) == (ProcessId{Role::Worker, 3}));
    // A mule or spooler inherits the master's mywid (0) or its own; its own id decides.
    ck_assert(identify(0, 2, -1) == (ProcessId{Role::Mule, 2}));
    ck_assert(identify(0, 0, 0) == (ProcessId{Role::Spooler, 0}));
    ck_assert(identify(0, 0, 4) == (ProcessId{Role::Spooler, 4}));
    // Named strings: ck_assert_str_eq keeps the pointer past a temporary's full-expression.
    const std::string worker = describe(identify(3, 0, -1));
    const std::string spooler = describe(identify(0, 0, 1));
    const std::string master = describe(identify(0, 0, -1));
    ck_assert_str_eq(worker.c_str(), "worker 3");
    ck_assert_str_eq(spooler.c_str(), "spooler 1");
    ck_assert_str_eq(master.c_str(), "master");
}
END_TEST

START_TEST(every_process_has_its_own_slot) {
    SlotLayout l{4, 2, 3};
    ck_assert_int_eq(l.count(), 10);
    std::set<int> seen;
    ck_assert_int_eq(l.index_of({Role::Master, 0}), 0);
    seen.insert(0);
    for (int w = 1; w <= 4; w++) ck_assert(seen.insert(l.index_of({Role::Worker, w})).second);
    for (int m = 1; m <= 2; m++) ck_assert(seen.insert(l.index_of({Role::Mule, m})).second);
    for (int s = 0; s < 3; s++) ck_assert(seen.insert(l.index_of({Role::Spooler, s})).second);
    // Dense: every index in 0..count-1 is used once, none past the end.
    ck_assert_int_eq(static_cast<int>(seen.size()), l.count());
    ck_assert_int_eq(*seen.begin(), 0);
    ck_assert_int_eq(*seen.rbegin(), l.count() - 1);
}
END_TEST

START_TEST(ids_out_of_range_have_no_slot) {
    SlotLayout l{2, 1, 1};
    ck_assert_int_eq(l.index_of({Role::Worker, 0}), -1);
    ck_assert_int_eq(l.index_of({Role::Worker, 3}), -1);
    ck_assert_int_eq(l.index_of({Role::Worker, -1}), -1);
    ck_assert_int_eq(l.index_of({Role::Mule, 0}), -1);
    ck_assert_int_eq(l.index_of({Role::Mule, 2}), -1);
    ck_assert_int_eq(l.index_of({Role::Spooler, -1}), -1);
    ck_assert_int_eq(l.index_of({Role::Spooler, 1}), -1);
    SlotLayout none{0, 0, 0};
    ck_assert_int_eq(none.count(), 1);
    ck_assert_int_eq(none.index_of({Role::Worker, 1}), -1);
}
END_TEST

START_TEST(a_slot_starts_afresh_but_keeps_its_recycles) {
    cowguard::WorkerSlot s;
    s.publish(1234);
    s.figures.requests.store(7);
    s.figures.collections[2].store(3);
    s.figures.peak_private.store(99);
    s.recycles.store(2);
    ck_assert(s.written_by(1234));
    ck_assert(!s.written_by(0));
    ck_assert_int_eq(static_cast<int>(cowguard::peak_private(s.figures, 50)), 99);
    ck_assert_int_eq(static_cast<int>(cowguard::peak_private(s.figures, 150)), 150);
    s.start();
    ck_assert(!s.written_by(1234));
    ck_assert_int_eq(static_cast<int>(s.figures.requests.load()), 0);
    ck_assert_int_eq(static_cast<int>(s.figures.collections[2].load()), 0);
    ck_assert_int_eq(static_cast<int>(s.figures.peak_private.load()), 0);
    ck_assert_int_eq(static_cast<int>(s.recycles.load()), 2);
}
END_TEST

int main() {
    Suite* suite = suite_create("process_role");
    TCase* tc = tcase_create("check");
    tcase_add_test(tc, identify_reads_uwsgi_fields);
    tcase_add_test(tc, every_process_has_its_own_slot);
    tcase_add_test(tc, ids_out_of_range_have_no_slot);
    tcase_add_test(tc, a_slot_starts_afresh_but_keeps_its_recycles);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
