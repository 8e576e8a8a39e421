// Unit tests for include/cowguard/procfs.h. Fixtures are real files captured on a Debian 12
// machine (kernel 6.x); see tests/unit/fixtures/README.md.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "cowguard/procfs.h"

// Last: it brings check.h, whose fail() macro breaks <ios> and friends.
#include "fixture.h"
#include "run_suite.h"

using cowguard::MemFigures;
using cowguard::StatFigures;

namespace {

constexpr uint64_t KB = 1024;

bool smaps_fails(const std::string& text) {
    MemFigures m;
    m.rss = 4242;  // a failed parse must leave this alone
    return !into(cowguard::parse_smaps(text), m) && m.rss == 4242;
}

bool stat_fails(const std::string& text) {
    StatFigures s;
    s.pid = 4242;
    return !into(cowguard::parse_stat(text), s) && s.pid == 4242;
}

}  // namespace

// ---- parse_smaps ----------------------------------------------------------------------------

START_TEST(rollup_values_in_bytes) {
    // python_smaps_rollup.txt: Rss 11036, Pss 9560, Shared_Clean 1808, Shared_Dirty 0,
    // Private_Clean 3796, Private_Dirty 5432, Swap 0, Anonymous 5432 (kB).
    MemFigures m;
    ck_assert(into(cowguard::parse_smaps(fixture("python_smaps_rollup.txt")), m));
    ck_assert_uint_eq(m.rss, 11036 * KB);
    ck_assert_uint_eq(m.pss, 9560 * KB);
    ck_assert_uint_eq(m.shared_clean, 1808 * KB);
    ck_assert_uint_eq(m.shared_dirty, 0);
    ck_assert_uint_eq(m.private_clean, 3796 * KB);
    ck_assert_uint_eq(m.private_dirty, 5432 * KB);
    ck_assert_uint_eq(m.swap, 0);
    ck_assert_uint_eq(m.anonymous, 5432 * KB);
    ck_assert_uint_eq(m.uss(), (3796 + 5432) * KB);
    ck_assert_uint_eq(m.shared(), 1808 * KB);
    // The Pss_Anon/Pss_File/Pss_Dirty lines must not be mistaken for Pss.
}
END_TEST

START_TEST(rollup_of_cat) {
    MemFigures m;
    ck_assert(into(cowguard::parse_smaps(fixture("cat_smaps_rollup.txt")), m));
    ck_assert_uint_eq(m.rss, 1772 * KB);
    ck_assert_uint_eq(m.pss, 520 * KB);
    ck_assert_uint_eq(m.shared_clean, 1596 * KB);
    ck_assert_uint_eq(m.private_clean, 64 * KB);
    ck_assert_uint_eq(m.private_dirty, 112 * KB);
}
END_TEST

START_TEST(full_smaps_sums_match_rollup) {
    // Both captured from the same SIGSTOP'd python process, back to back.
    MemFigures rollup, full;
    std::string smaps = fixture("python_smaps.txt");
    ck_assert(into(cowguard::parse_smaps(fixture("python_smaps_rollup.txt")), rollup));
    ck_assert(into(cowguard::parse_smaps(smaps), full));
    ck_assert_uint_eq(full.rss, rollup.rss);
    ck_assert_uint_eq(full.shared_clean, rollup.shared_clean);
    ck_assert_uint_eq(full.shared_dirty, rollup.shared_dirty);
    ck_assert_uint_eq(full.private_clean, rollup.private_clean);
    ck_assert_uint_eq(full.private_dirty, rollup.private_dirty);
    ck_assert_uint_eq(full.swap, rollup.swap);
    ck_assert_uint_eq(full.anonymous, rollup.anonymous);
    // The kernel rounds each mapping's Pss down to whole kB but the rollup only once, so the sum
    // is below the rollup by less than 1 kB per mapping.
    size_t mappings = 0;
    for (size_t p = smaps.find("VmFlags:"); p != std::string::npos; p = smaps.find("VmFlags:", p + 1)) mappings++;
    ck_assert_uint_eq(mappings, 50);
    ck_assert_uint_le(full.pss, rollup.pss);
    ck_assert_uint_le(rollup.pss - full.pss, mappings * KB);
}
END_TEST

START_TEST(sums_mappings_and_ignores_other_fields) {
    const char* text =
        "00400000-00401000 r-xp 00000000 08:01 42     /tmp/Rss: 999999 kB\n"
        "Size:                  4 kB\n"
        "Rss:                   4 kB\n"
        "Pss:                   2 kB\n"
        "Pss_Anon:            100 kB\n"
        "Private_Dirty:         4 kB\n"
        "THPeligible:    0\n"
        "ProtectionKey:         0\n"
        "VmFlags: rd ex mr mw me\n"
        "7ffd0000-7ffd2000 rw-p 00000000 00:00 0      [stack]\n"
        "Rss:                   8 kB\n"
        "Pss:                   8 kB\n"
        "Swap:                 12 kB\n"
        "Anonymous:             8 kB";  // no final newline
    MemFigures m;
    ck_assert(into(cowguard::parse_smaps(text), m));
    ck_assert_uint_eq(m.rss, 12 * KB);
    ck_assert_uint_eq(m.pss, 10 * KB);
    ck_assert_uint_eq(m.private_dirty, 4 * KB);
    ck_assert_uint_eq(m.swap, 12 * KB);
    ck_assert_uint_eq(m.anonymous, 8 * KB);
}
END_TEST

START_TEST(smaps_empty_and_no_rss) {
    ck_assert(smaps_fails(""));
    ck_assert(smaps_fails("\n\n"));
    ck_assert(smaps_fails("00400000-00401000 r-xp 00000000 08:01 42 /bin/x\nPss: 4 kB\n"));
    ck_assert(smaps_fails(fixture("smaps_rollup_no_rss.txt")));
}
END_TEST

START_TEST(smaps_malformed_values) {
    ck_assert(smaps_fails(fixture("smaps_rollup_malformed.txt")));  // "Rss: abc kB"
    ck_assert(smaps_fails("Rss: abc kB\n"));
    ck_assert(smaps_fails("Rss: 12\n"));              // no unit
    ck_assert(smaps_fails("Rss: 12 MB\n"));           // wrong unit
    ck_assert(smaps_fails("Rss: 12kB\n"));            // no separator
    ck_assert(smaps_fails("Rss: -5 kB\n"));
    ck_assert(smaps_fails("Rss: 12 kB extra\n"));
    ck_assert(smaps_fails("Rss:  kB\n"));
    ck_assert(smaps_fails("Rss: 4 kB\nPss: 1.5 kB\n"));
    ck_assert(smaps_fails("Rss: 99999999999999999999 kB\n"));  // > UINT64_MAX
    ck_assert(smaps_fails("Rss: 18014398509481984 kB\n"));     // 2^54 kB: bytes overflow
    // Each value fits, the sum does not: 2 x 2^53 kB = 2^64 bytes.
    ck_assert(smaps_fails("Rss: 9007199254740992 kB\nRss: 9007199254740992 kB\n"));
    // A field it does not use may hold anything.
    MemFigures m;
    ck_assert(into(cowguard::parse_smaps("Size: lots\nRss: 4 kB\n"), m));
    ck_assert_uint_eq(m.rss, 4 * KB);
}
END_TEST

START_TEST(smaps_truncated) {
    ck_assert(smaps_fails(fixture("smaps_rollup_truncated.txt")));  // ends "Shared_Clean:       18"
    ck_assert(smaps_fails(fixture("smaps_truncated.txt")));         // ends "Private_Cl"
    ck_assert(smaps_fails("Rss:"));
    ck_assert(smaps_fails("not a proc file at all\nRss: 4 kB\n"));
}
END_TEST

// ---- parse_stat -----------------------------------------------------------------------------

START_TEST(stat_comm_with_space_and_paren) {
    // Captured from /bin/sleep copied to "/tmp/a b)c": comm is "a b)c".
    StatFigures s;
    ck_assert(into(cowguard::parse_stat(fixture("stat_comm_space_paren.txt")), s));
    ck_assert_int_eq(s.pid, 5047);
    ck_assert_int_eq(s.state, 'S');
    ck_assert_uint_eq(s.minflt, 139);
    ck_assert_uint_eq(s.majflt, 0);
    ck_assert_uint_eq(s.utime_ticks, 0);
    ck_assert_uint_eq(s.stime_ticks, 0);
    ck_assert_uint_eq(s.vsize, 2990080);
    ck_assert_uint_eq(s.rss_pages, 420);
}
END_TEST

START_TEST(stat_of_stopped_python) {
    StatFigures s;
    ck_assert(into(cowguard::parse_stat(fixture("python_stat.txt")), s));
    ck_assert_int_eq(s.pid, 5037);
    ck_assert_int_eq(s.state, 'T');
    ck_assert_uint_eq(s.minflt, 1546);
    ck_assert_uint_eq(s.majflt, 1);
    ck_assert_uint_eq(s.utime_ticks, 2);
    ck_assert_uint_eq(s.stime_ticks, 0);
    ck_assert_uint_eq(s.vsize, 16830464);
    ck_assert_uint_eq(s.rss_pages, 2727);
}
END_TEST

START_TEST(stat_comm_that_looks_like_fields) {
    // A comm may contain ") R 1 2 3": only the last ')' closes it.
    const char* text = "77 (x) R 1 2 3) S 1 1 1 0 -1 4194304 11 0 22 0 33 44 0 0 20 0 1 0 5 6000 7 rest\n";
    StatFigures s;
    ck_assert(into(cowguard::parse_stat(text), s));
    ck_assert_int_eq(s.pid, 77);
    ck_assert_int_eq(s.state, 'S');
    ck_assert_uint_eq(s.minflt, 11);
    ck_assert_uint_eq(s.majflt, 22);
    ck_assert_uint_eq(s.utime_ticks, 33);
    ck_assert_uint_eq(s.stime_ticks, 44);
    ck_assert_uint_eq(s.vsize, 6000);
    ck_assert_uint_eq(s.rss_pages, 7);
}
END_TEST

START_TEST(stat_malformed_and_truncated) {
    ck_assert(stat_fails(""));
    ck_assert(stat_fails(fixture("stat_truncated.txt")));  // cut inside vsize
    ck_assert(stat_fails(fixture("stat_malformed.txt")));  // minflt "1x9"
    const std::string good = "77 (x) S 1 1 1 0 -1 4194304 11 0 22 0 33 44 0 0 20 0 1 0 5 6000 7\n";
    StatFigures s;
    ck_assert(into(cowguard::parse_stat(good), s));
    ck_assert(stat_fails(good.substr(0, good.size() - 1)));  // rss field could be cut short
    ck_assert(stat_fails(good.substr(0, good.size() - 3)));  // fields missing
    ck_assert(stat_fails("x7 (x) S 1 1 1 0 -1 4194304 11 0 22 0 33 44 0 0 20 0 1 0 5 6000 7\n"));
    ck_assert(stat_fails("0 (x) S 1 1 1 0 -1 4194304 11 0 22 0 33 44 0 0 20 0 1 0 5 6000 7\n"));
    ck_assert(stat_fails("77 x) S 1 1 1 0 -1 4194304 11 0 22 0 33 44 0 0 20 0 1 0 5 6000 7\n"));
    ck_assert(stat_fails("77 (x S 1 1 1 0 -1 4194304 11 0 22 0 33 44 0 0 20 0 1 0 5 6000 7\n"));
    ck_assert(stat_fails("77 (x) 1 1 1 0 -1 4194304 11 0 22 0 33 44 0 0 20 0 1 0 5 6000 7\n"));   // no state
    ck_assert(stat_fails("77 (x) S 1 1 1 0 -1 4194304 -11 0 22 0 33 44 0 0 20 0 1 0 5 6000 7\n"));  // minflt < 0
    ck_assert(stat_fails("77 (x) S 1 1 1 0 -1 4194304 11 0 22 0 33 44 0 0 20 0 1 0 5 99999999999999999999 7\n"));
    ck_assert(stat_fails("77 (x) S 1  1 0 -1 4194304 11 0 22 0 33 44 0 0 20 0 1 0 5 6000 7\n"));  // empty field
    ck_assert(stat_fails("77 (x)"));
}
END_TEST

// ---- reading /proc ---------------------------------------------------------------------------

START_TEST(read_self) {
    MemFigures m;
    ck_assert(into(cowguard::read_mem(getpid()), m));
    ck_assert_uint_gt(m.rss, 0);
    ck_assert_uint_gt(m.pss, 0);
    ck_assert_uint_le(m.uss(), m.rss);
    StatFigures s;
    ck_assert(into(cowguard::read_stat(getpid()), s));
    ck_assert_int_eq(s.pid, getpid());
    ck_assert_int_eq(s.state, 'R');
    ck_assert_uint_gt(s.vsize, 0);
    std::string text;
    ck_assert(into(cowguard::read_proc_file("/proc/self/status"), text));
    ck_assert(text.find("VmRSS:") != std::string::npos);
}
END_TEST

START_TEST(read_gone_process) {
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) _exit(0);
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    MemFigures m;
    StatFigures s;
    ck_assert(!into(cowguard::read_mem(child), m));
    ck_assert(!into(cowguard::read_stat(child), s));
    ck_assert(!into(cowguard::read_mem(0), m));
    ck_assert(!into(cowguard::read_mem(-1), m));
    std::string text;
    ck_assert(!into(cowguard::read_proc_file("/proc/self/no-such-file"), text));
}
END_TEST

int main() {
    Suite* suite = suite_create("procfs");
    TCase* smaps = tcase_create("parse_smaps");
    tcase_add_test(smaps, rollup_values_in_bytes);
    tcase_add_test(smaps, rollup_of_cat);
    tcase_add_test(smaps, full_smaps_sums_match_rollup);
    tcase_add_test(smaps, sums_mappings_and_ignores_other_fields);
    tcase_add_test(smaps, smaps_empty_and_no_rss);
    tcase_add_test(smaps, smaps_malformed_values);
    tcase_add_test(smaps, smaps_truncated);
    suite_add_tcase(suite, smaps);
    TCase* stat = tcase_create("parse_stat");
    tcase_add_test(stat, stat_comm_with_space_and_paren);
    tcase_add_test(stat, stat_of_stopped_python);
    tcase_add_test(stat, stat_comm_that_looks_like_fields);
    tcase_add_test(stat, stat_malformed_and_truncated);
    suite_add_tcase(suite, stat);
    TCase* io = tcase_create("read");
    tcase_add_test(io, read_self);
    tcase_add_test(io, read_gone_process);
    suite_add_tcase(suite, io);

    return run_suite(suite);
}
