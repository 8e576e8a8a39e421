// The one way every unit suite runs: all its tests, the process status saying whether any failed.
// Include it after the headers of the unit under test (it brings <check.h>, see fixture.h).
#pragma once

#include <cstdlib>

#include <check.h>

inline int run_suite(Suite* suite) {
    SRunner* runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
