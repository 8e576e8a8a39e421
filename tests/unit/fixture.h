// The unit suites' reader of tests/unit/fixtures/ (COWGUARD_FIXTURES, set by CMake): real files
// captured from /proc and from uWSGI. Include it last: it brings <check.h>, whose fail() macro
// breaks <ios> and friends when it comes first.
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include <check.h>

// A parser's value into `out` (left untouched on an error); false on an error. For the suites'
// tables of good and bad inputs, which read best as one boolean each.
template <typename T, typename R>
bool into(R result, T& out) {
    if (!result) return false;
    out = std::move(*result);
    return true;
}

// The whole file, or the test aborts naming the missing fixture.
inline std::string fixture(const char* name) {
    std::ifstream in(std::string(COWGUARD_FIXTURES) + "/" + name, std::ios::binary);
    if (!in) ck_abort_msg("missing fixture %s", name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}
