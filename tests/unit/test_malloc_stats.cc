// Unit tests for include/cowguard/malloc_stats.h. Fixtures: sys._debugmallocstats() of a fresh
// python3 on Debian 12 (3.11.2) and Debian 13 (3.13.5); see tests/unit/fixtures/README.md.
#include <cstdlib>
#include <string>

#include "cowguard/malloc_stats.h"
#include "fixture.h"

// Last: check.h defines a fail() macro that breaks <ios> and friends.
#include <check.h>
#include "run_suite.h"

using cowguard::parse_malloc_stats;

START_TEST(reads_every_class_of_real_reports) {
    for (const char* name : {"malloc_stats_311.txt", "malloc_stats_313.txt"}) {
        auto t = parse_malloc_stats(fixture(name));
        ck_assert_msg(t.ok(), "%s", name);
        ck_assert_uint_eq(t->size(), 32);
        ck_assert_uint_eq(t->front().size, 16);
        ck_assert_uint_eq(t->back().size, 512);
    }
    auto t = parse_malloc_stats(fixture("malloc_stats_313.txt"));
    ck_assert_uint_eq((*t)[0].avail, 994);
    ck_assert_uint_eq((*t)[2].size, 48);
    ck_assert_uint_eq((*t)[2].avail, 38);
    ck_assert_uint_eq((*t)[31].avail, 11);
}
END_TEST

START_TEST(sizes_read_not_assumed) {
    std::string text =
        "class   size   num pools   blocks in use  avail blocks\n"
        "-----   ----   ---------   -------------  ------------\n"
        "    0      8           1              10            5\n"
        "    1     24           2              20            0\n"
        "\n# arenas allocated total = 2\n";
    auto t = parse_malloc_stats(text);
    ck_assert(t.ok());
    ck_assert_uint_eq(t->size(), 2);
    ck_assert_uint_eq((*t)[0].size, 8);
    ck_assert_uint_eq((*t)[1].size, 24);
    ck_assert_uint_eq((*t)[1].avail, 0);
    // The table may also end with the text.
    ck_assert(parse_malloc_stats(text.substr(0, text.find("\n\n") + 1)).ok());
}
END_TEST

START_TEST(bad_reports_refused) {
    std::string head = "class   size   num pools   blocks in use  avail blocks\n-----   ----   ---------   -------------  ------------\n";
    ck_assert(!parse_malloc_stats(""));
    ck_assert(!parse_malloc_stats("Small block threshold = 512, in 32 size classes.\n"));
    ck_assert(!parse_malloc_stats(head));                                         // no rows
    ck_assert(!parse_malloc_stats(head + "\n"));                                  // no rows
    ck_assert(!parse_malloc_stats(head + "    0     16           1\n"));          // short row
    ck_assert(!parse_malloc_stats(head + "    0     16   1   2   3   4\n"));      // six numbers
    ck_assert(!parse_malloc_stats(head + "    0     1x           1   2   3\n"));  // not a number
    ck_assert(!parse_malloc_stats(head + "    0      0           1   2   3\n"));  // size 0
    ck_assert(!parse_malloc_stats(head + "    0     32  1  2  3\n    1     16  1  2  3\n"));  // not increasing
    ck_assert(!parse_malloc_stats(head + "    0     16  1  2  99999999999999999999\n"));    // overflow
    std::string real = fixture("malloc_stats_313.txt");
    ck_assert(!parse_malloc_stats(real.substr(0, real.find("   12    208"))+ "   12    2"));  // cut in a row
}
END_TEST

int main() {
    Suite* suite = suite_create("malloc_stats");
    TCase* tc = tcase_create("all");
    tcase_add_test(tc, reads_every_class_of_real_reports);
    tcase_add_test(tc, sizes_read_not_assumed);
    tcase_add_test(tc, bad_reports_refused);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
