// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns() and of systemd's
// MONOTONIC_USEC.
#pragma once

#include <time.h>

#include <cstdint>

namespace leakwatch {

inline uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace leakwatch
