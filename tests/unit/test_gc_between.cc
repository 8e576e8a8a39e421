// Unit tests for include/cowguard/gc_between.h: when the collection between requests runs, which
// generation it takes, harakiri, the growth trigger, and bad inputs.
#include "cowguard/gc_between.h"

#include <climits>

// Last: check.h defines a fail() macro that breaks <ios> and friends.
#include <check.h>
#include "run_suite.h"

using cowguard::between::Decider;
using cowguard::between::kNone;
using cowguard::between::Observation;
using cowguard::between::Trigger;

namespace {

constexpr int64_t MB = 1024 * 1024;

Observation counts(long c0, long c1 = 0, long c2 = 0) {
    Observation o;
    o.count[0] = c0;
    o.count[1] = c1;
    o.count[2] = c2;
    return o;
}

}  // namespace

START_TEST(below_threshold_waits) {
    Decider d{Trigger{}};
    ck_assert_int_eq(d.decide(counts(0)), kNone);
    ck_assert_int_eq(d.decide(counts(1)), kNone);
    ck_assert_int_eq(d.decide(counts(699)), kNone);
}
END_TEST

START_TEST(threshold_collects_young) {
    Decider d{Trigger{}};
    ck_assert_int_eq(d.decide(counts(700)), 0);
    ck_assert_int_eq(d.decide(counts(5000, 3, 1)), 0);
}
END_TEST

START_TEST(older_generations_follow_cpython_rule) {
    Decider d{Trigger{}};
    ck_assert_int_eq(d.decide(counts(700, 9, 9)), 0);
    ck_assert_int_eq(d.decide(counts(700, 10, 9)), 1);
    ck_assert_int_eq(d.decide(counts(700, 10, 10)), 2);
    ck_assert_int_eq(d.decide(counts(700, 0, 10)), 2);  // the oldest one due, as collect_generations
    // Older counts alone never start a collection: only gen 0 (or growth) does.
    ck_assert_int_eq(d.decide(counts(10, 50, 50)), kNone);
}
END_TEST

START_TEST(custom_thresholds) {
    Trigger t;
    t.threshold[0] = 1;
    t.threshold[1] = 2;
    t.threshold[2] = 0;  // never a full collection from here
    Decider d{t};
    ck_assert_int_eq(d.decide(counts(1)), 0);
    ck_assert_int_eq(d.decide(counts(1, 2, 1000)), 1);
    ck_assert_int_eq(d.trigger().threshold[0], 1);
}
END_TEST

START_TEST(threshold_zero_means_growth_only) {
    Trigger t;
    t.threshold[0] = 0;
    Decider d{t};
    ck_assert_int_eq(d.decide(counts(1000000)), kNone);
    Observation o = counts(5);
    o.private_bytes = 10 * MB;
    ck_assert_int_eq(d.decide(o), kNone);  // the baseline
    o.private_bytes = 18 * MB;
    ck_assert_int_eq(d.decide(o), 0);
}
END_TEST

START_TEST(growth_triggers_below_threshold) {
    Decider d{Trigger{}};
    Observation o = counts(3);
    o.private_bytes = 20 * MB;
    ck_assert_int_eq(d.decide(o), kNone);  // first sample: the baseline
    o.private_bytes = 27 * MB;
    ck_assert_int_eq(d.decide(o), kNone);
    o.private_bytes = 28 * MB;
    ck_assert_int_eq(d.decide(o), 0);
    d.collected(28 * MB);  // measured from here on
    ck_assert_int_eq(d.decide(o), kNone);
    o.private_bytes = 36 * MB;
    ck_assert_int_eq(d.decide(o), 0);
    // Growth with nothing pending: nothing a collection could free.
    o.count[0] = 0;
    ck_assert_int_eq(d.decide(o), kNone);
}
END_TEST

START_TEST(growth_off_or_unknown_memory) {
    Trigger t;
    t.growth_bytes = 0;
    Decider d{t};
    Observation o = counts(3);
    o.private_bytes = 1 * MB;
    ck_assert_int_eq(d.decide(o), kNone);
    o.private_bytes = 1000 * MB;
    ck_assert_int_eq(d.decide(o), kNone);

    Decider unknown{Trigger{}};
    o.private_bytes = 0;  // not sampled yet
    ck_assert_int_eq(unknown.decide(o), kNone);
    o.private_bytes = -5;
    ck_assert_int_eq(unknown.decide(o), kNone);
    unknown.collected(-1);  // ignored: no baseline from a bad sample
    o.private_bytes = 100 * MB;
    ck_assert_int_eq(unknown.decide(o), kNone);  // becomes the baseline, no growth yet
}
END_TEST

START_TEST(harakiri_close_skips) {
    Decider d{Trigger{}};
    Observation o = counts(5000, 10, 10);
    o.harakiri_left_s = 0;
    ck_assert_int_eq(d.decide(o), kNone);
    o.harakiri_left_s = 1;
    ck_assert_int_eq(d.decide(o), 2);
    Trigger wide;
    wide.harakiri_margin_s = 5;
    Decider careful{wide};
    o.harakiri_left_s = 4;
    ck_assert_int_eq(careful.decide(o), kNone);
    o.harakiri_left_s = 5;
    ck_assert_int_eq(careful.decide(o), 2);
    o.harakiri_left_s = -1;  // not armed
    ck_assert_int_eq(d.decide(o), 2);
    o.harakiri_left_s = -1000;
    ck_assert_int_eq(d.decide(o), 2);
}
END_TEST

START_TEST(bad_counts) {
    Decider d{Trigger{}};
    ck_assert_int_eq(d.decide(counts(-1)), kNone);
    ck_assert_int_eq(d.decide(counts(-1000000, 100, 100)), kNone);
    ck_assert_int_eq(d.decide(counts(700, -5, -5)), 0);
    ck_assert_int_eq(d.decide(counts(LONG_MAX, LONG_MAX, LONG_MAX)), 2);
    Trigger t;
    t.threshold[0] = -7;
    t.threshold[1] = -1;
    t.threshold[2] = -1;
    Decider neg{t};
    ck_assert_int_eq(neg.decide(counts(LONG_MAX)), kNone);
}
END_TEST

static Suite* suite() {
    Suite* s = suite_create("gc_between");
    TCase* tc = tcase_create("decide");
    tcase_add_test(tc, below_threshold_waits);
    tcase_add_test(tc, threshold_collects_young);
    tcase_add_test(tc, older_generations_follow_cpython_rule);
    tcase_add_test(tc, custom_thresholds);
    tcase_add_test(tc, threshold_zero_means_growth_only);
    tcase_add_test(tc, growth_triggers_below_threshold);
    tcase_add_test(tc, growth_off_or_unknown_memory);
    tcase_add_test(tc, harakiri_close_skips);
    tcase_add_test(tc, bad_counts);
    suite_add_tcase(s, tc);
    return s;
}

int main() { return run_suite(suite()); }
