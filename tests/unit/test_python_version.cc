// Unit tests for include/cowguard/python_version.h: the startup refusal to run under another
// CPython than the one cowguard was built for (this machine has only one python plugin, so the
// refusal itself cannot be reached from an integration test).
#include <cstdlib>
#include <string>

#include "cowguard/python_version.h"

// Last: check.h defines a fail() macro that breaks <ios> and friends.
#include <check.h>
#include "run_suite.h"

using cowguard::check_python_version;

START_TEST(same_version_accepted) {
    ck_assert(check_python_version(3, 11, "3.11.2 (main, Apr 28 2025, 14:11:48) [GCC 12.2.0]"));
    ck_assert(check_python_version(3, 11, "3.11"));
    ck_assert(check_python_version(3, 11, "3.11.0rc1 (main) [GCC]"));
    ck_assert(check_python_version(3, 12, "3.12.0+ (heads/3.12:abc) [Clang]"));
}
END_TEST

START_TEST(other_versions_refused_with_one_line) {
    auto line = check_python_version(3, 11, "3.12.1 (main, Dec 8 2023) [GCC 13.2.0]");
    ck_assert(!line);
    ck_assert_str_eq(line.error().c_str(),
                     "built for Python 3.11 but this uWSGI runs Python 3.12.1: rebuild cowguard against that "
                     "Python (make build)");
    ck_assert(line.error().find('\n') == std::string::npos);
    ck_assert(!check_python_version(3, 11, "2.7.18 (default) [GCC]"));
    ck_assert(!check_python_version(3, 10, "3.11.2 (main)"));
}
END_TEST

START_TEST(prefixes_are_not_the_same_version) {
    ck_assert(!check_python_version(3, 1, "3.11.2 (main)"));    // 3.1 is not 3.11
    ck_assert(!check_python_version(3, 11, "3.110.0 (main)"));  // nor is 3.110
    ck_assert(!check_python_version(3, 11, "3.1 (main)"));
    ck_assert(!check_python_version(3, 11, "13.11.2 (main)"));
}
END_TEST

START_TEST(garbage_refused) {
    auto empty = check_python_version(3, 11, "");
    ck_assert(!empty);
    ck_assert_str_eq(empty.error().c_str(),
                     "built for Python 3.11 but this uWSGI runs Python an unknown version: rebuild cowguard against "
                     "that Python (make build)");
    ck_assert(!check_python_version(3, 11, nullptr));
    ck_assert(!check_python_version(3, 11, " 3.11.2"));
    ck_assert(!check_python_version(3, 11, "3.11x"));
    ck_assert(!check_python_version(-1, 11, "3.11.2"));
}
END_TEST

int main() {
    Suite* suite = suite_create("python_version");
    TCase* tc = tcase_create("check");
    tcase_add_test(tc, same_version_accepted);
    tcase_add_test(tc, other_versions_refused_with_one_line);
    tcase_add_test(tc, prefixes_are_not_the_same_version);
    tcase_add_test(tc, garbage_refused);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
