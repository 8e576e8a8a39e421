// How cowguard measures time and prints sizes: the one monotonic clock and the one "12.3 MB".
#pragma once

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace cowguard {

// CLOCK_MONOTONIC through the vDSO: no system call, safe on the request path.
inline uint64_t mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

inline double mono_ms() { return static_cast<double>(mono_ns()) / 1e6; }

constexpr double kMiB = 1024.0 * 1024.0;

// "612.0 MB" (MiB, as uWSGI and the README write them).
inline std::string mb_text(uint64_t bytes) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%.1f MB", static_cast<double>(bytes) / kMiB);
    return buf;
}

}  // namespace cowguard
