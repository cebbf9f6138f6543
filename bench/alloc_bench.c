/* alloc_bench: the cost of a malloc/free pair, to compare untraced, empty-probe and
 * leakwatchd-traced runs of the same loop (bench/run.sh).
 *
 *   alloc_bench fixed  [N]   N malloc(64)/free pairs in one thread (default N 10,000,000)
 *   alloc_bench random [N]   N pairs in total over 4 threads; sizes 16 B..64 KiB, log-uniform-ish,
 *                            fixed seed; each thread keeps a window of live blocks and frees a
 *                            random one of them, so a free is not always of the last malloc
 *
 * Output, one line each, on stdout:
 *   pid PID
 *   result mode=MODE threads=T pairs=N elapsed_ns=E ns_per_pair=X cpu_ns_per_pair=Y
 * ns_per_pair is wall time (CLOCK_MONOTONIC around the whole loop, all threads) over N pairs;
 * cpu_ns_per_pair is the process CPU time (user + system, so uprobe handling counts) over N.
 *
 * With BENCH_GO=PATH in the environment it prints its pid and waits until PATH exists before
 * the timed loop, so a tracer can attach first. With BENCH_DEPTH=D the fixed loop runs D calls
 * deeper (D frames more on every allocation's stack, for the cost of walking them).
 *
 * Built -O2 -fno-omit-frame-pointer -fno-builtin-malloc -fno-builtin-free; every block is
 * written to, so the compiler cannot drop a malloc/free pair.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_PAIRS 10000000L
#define RANDOM_THREADS 4
#define WINDOW 16 /* live blocks per thread in random mode (a power of two) */
#define MIN_SHIFT 4 /* 16 B */
#define MAX_SHIFT 16 /* 64 KiB */

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void wait_for_go(void)
{
    const char *go = getenv("BENCH_GO");
    if (!go || !*go)
        return;
    struct timespec ts = {0, 5 * 1000000L};
    while (access(go, F_OK) != 0)
        nanosleep(&ts, NULL);
}

/* xorshift64*: cheap next to malloc, and the same sequence on every run. */
static inline uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A size whose power of two is uniform in [16 B, 64 KiB), then uniform inside that octave. */
static inline size_t random_size(uint64_t *state)
{
    uint64_t r = next_random(state);
    unsigned shift = MIN_SHIFT + (unsigned)((r >> 32) % (MAX_SHIFT - MIN_SHIFT));
    size_t base = (size_t)1 << shift;
    return base + (size_t)(r & (base - 1));
}

static void run_fixed(long pairs)
{
    for (long i = 0; i < pairs; i++) {
        char *p = malloc(64);
        if (!p)
            abort();
        *(volatile char *)p = (char)i;
        free(p);
    }
}

/* Runs the fixed loop under `depth` more frames; the work after each call keeps it a call. */
static __attribute__((noinline)) long nested(int depth, long pairs)
{
    if (depth <= 0) {
        run_fixed(pairs);
        return 0;
    }
    long r = nested(depth - 1, pairs);
    *(volatile long *)&r += 1;
    return r;
}

struct worker {
    pthread_t thread;
    long pairs;
    uint64_t seed;
    pthread_barrier_t *start;
};

static void *run_random(void *arg)
{
    struct worker *w = arg;
    uint64_t state = w->seed;
    char *live[WINDOW] = {0};

    pthread_barrier_wait(w->start);
    for (long i = 0; i < w->pairs; i++) {
        uint64_t r = next_random(&state);
        unsigned slot = (unsigned)(r & (WINDOW - 1));
        free(live[slot]); /* free(NULL) for the first use of a slot, still a call */
        size_t size = random_size(&state);
        char *p = malloc(size);
        if (!p)
            abort();
        *(volatile char *)p = (char)i;
        live[slot] = p;
    }
    for (unsigned s = 0; s < WINDOW; s++)
        free(live[s]);
    return NULL;
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s fixed|random [PAIRS]\n", argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3)
        usage(argv[0]);
    int random_mode;
    if (strcmp(argv[1], "fixed") == 0)
        random_mode = 0;
    else if (strcmp(argv[1], "random") == 0)
        random_mode = 1;
    else
        usage(argv[0]);
    long pairs = DEFAULT_PAIRS;
    if (argc == 3) {
        char *end;
        errno = 0;
        pairs = strtol(argv[2], &end, 10);
        if (errno || *end || pairs <= 0)
            usage(argv[0]);
    }

    printf("pid %ld\n", (long)getpid());
    fflush(stdout);
    wait_for_go();

    int threads = random_mode ? RANDOM_THREADS : 1;
    uint64_t start, end, cpu_start, cpu_end;
    if (!random_mode) {
        cpu_start = now_ns(CLOCK_PROCESS_CPUTIME_ID);
        start = now_ns(CLOCK_MONOTONIC);
        const char *depth = getenv("BENCH_DEPTH");
        nested(depth ? atoi(depth) : 0, pairs);
        end = now_ns(CLOCK_MONOTONIC);
        cpu_end = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    } else {
        struct worker workers[RANDOM_THREADS];
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, RANDOM_THREADS + 1);
        for (int t = 0; t < RANDOM_THREADS; t++) {
            workers[t].pairs = pairs / RANDOM_THREADS + (t < pairs % RANDOM_THREADS ? 1 : 0);
            workers[t].seed = 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1);
            workers[t].start = &barrier;
            int err = pthread_create(&workers[t].thread, NULL, run_random, &workers[t]);
            if (err) {
                fprintf(stderr, "pthread_create: %s\n", strerror(err));
                return 1;
            }
        }
        cpu_start = now_ns(CLOCK_PROCESS_CPUTIME_ID);
        start = now_ns(CLOCK_MONOTONIC);
        pthread_barrier_wait(&barrier);
        for (int t = 0; t < RANDOM_THREADS; t++)
            pthread_join(workers[t].thread, NULL);
        end = now_ns(CLOCK_MONOTONIC);
        cpu_end = now_ns(CLOCK_PROCESS_CPUTIME_ID);
        pthread_barrier_destroy(&barrier);
    }

    uint64_t elapsed = end - start;
    printf("result mode=%s threads=%d pairs=%ld elapsed_ns=%llu ns_per_pair=%.1f "
           "cpu_ns_per_pair=%.1f\n",
           argv[1], threads, pairs, (unsigned long long)elapsed, (double)elapsed / (double)pairs,
           (double)(cpu_end - cpu_start) / (double)pairs);
    fflush(stdout);
    return 0;
}
