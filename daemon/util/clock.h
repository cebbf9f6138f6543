// The daemon's clocks: CLOCK_MONOTONIC in nanoseconds (the clock of bpf_ktime_get_ns() and of
// systemd's MONOTONIC_USEC), and wall-clock time in unix seconds (what metrics, the API and the
// detector's series carry).
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>

namespace leakwatch {

inline uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

inline double unix_seconds() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace leakwatch
