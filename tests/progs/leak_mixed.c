/* Mixed-size allocations for byte-based sampling: every size from 16 B to 256 KiB, leaked
 * from two functions of their own and churned (allocated and freed) from a third. Sizes are
 * log-uniform from a fixed seed, so a run is repeatable; the program prints what it leaked.
 *
 * Prints "pid N", waits for FIXTURE_GO, then "leak leak_small BYTES COUNT",
 * "leak leak_mixed_sizes BYTES COUNT", "churned BYTES COUNT" and "done", then waits. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fixture.h"

#define SMALL 60000 /* 16 B .. 1 KiB */
#define MIXED 3000  /* 16 B .. 256 KiB */
#define CHURN 200000
#define CHURN_LIVE 64

static uint64_t state = 0x2545f4914f6cdd1dULL;

static double uniform(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state >> 11) / (double)(1ULL << 53);
}

static size_t log_uniform(size_t lo, size_t hi)
{
    return (size_t)exp(log((double)lo) + uniform() * (log((double)hi) - log((double)lo)));
}

static void *kept[SMALL + MIXED];
static size_t nkept;

NOINLINE void leak_small(void)
{
    size_t bytes = 0;
    for (int i = 0; i < SMALL; i++) {
        size_t s = log_uniform(16, 1024);
        char *p = malloc(s);
        p[0] = 1;
        kept[nkept++] = p;
        bytes += s;
    }
    printf("leak leak_small %zu %d\n", bytes, SMALL);
}

NOINLINE void leak_mixed_sizes(void)
{
    size_t bytes = 0;
    for (int i = 0; i < MIXED; i++) {
        size_t s = log_uniform(16, 256 * 1024);
        char *p = malloc(s);
        memset(p, 0x6d, s);
        kept[nkept++] = p;
        bytes += s;
    }
    printf("leak leak_mixed_sizes %zu %d\n", bytes, MIXED);
}

NOINLINE void churn_mixed(void)
{
    void *live[CHURN_LIVE] = {0};
    size_t bytes = 0;
    for (int i = 0; i < CHURN; i++) {
        int slot = (int)(uniform() * CHURN_LIVE);
        free(live[slot]);
        size_t s = log_uniform(16, 64 * 1024);
        live[slot] = malloc(s);
        bytes += s;
    }
    for (int i = 0; i < CHURN_LIVE; i++)
        free(live[i]);
    printf("churned %zu %d\n", bytes, CHURN);
}

int main(void)
{
    report("pid", getpid());
    wait_for_go();
    leak_small();
    leak_mixed_sizes();
    churn_mixed();
    printf("done\n");
    fflush(stdout);
    for (;;)
        pause();
}
