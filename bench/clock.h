/* The clock the benchmark programs read: nanoseconds of CLOCK_MONOTONIC (wall) or
 * CLOCK_PROCESS_CPUTIME_ID (the process's CPU time). */
#ifndef LEAKWATCH_BENCH_CLOCK_H
#define LEAKWATCH_BENCH_CLOCK_H
#include <time.h>

static inline long long now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#endif
