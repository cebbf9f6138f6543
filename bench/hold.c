/* hold: a process that keeps many live allocations from many distinct call stacks, for
 * measuring what leakwatchd costs itself at scale (bench/daemon_scale.sh).
 *
 *   hold [BLOCKS [STACKS [CHURN]]]
 *
 * BLOCKS   live blocks to allocate and keep (default 10,000)
 * STACKS   distinct call stacks they come from, 1..1000 (default 100); block i is allocated
 *          through stack i % STACKS
 * CHURN    malloc/free pairs per second after that (default 0): a random live block is freed
 *          and allocated again through the same stack, so the count stays BLOCKS
 *
 * Each stack is a path through three levels of ten distinct functions (outer_A -> middle_B ->
 * inner_C -> malloc), so stack s goes through outer s/100, middle (s/10)%10, inner s%10. The
 * functions differ in a constant, are not inlined and do work after their call, so the
 * compiler neither merges them nor turns the calls into jumps; with frame pointers every one
 * is a frame of its own.
 *
 * Environment:
 *   HOLD_GO=PATH    print "pid N" and wait until PATH exists before allocating, so a tracer
 *                   can attach first
 *   HOLD_STOP=PATH  exit once PATH exists (checked every 100 ms); SIGTERM/SIGINT also end it
 *
 * Output on stdout: "pid N" (with HOLD_GO), then "ready blocks=N stacks=S bytes=B" once every
 * block is allocated, then "done pairs=N" at exit.
 *
 * Built -O2 -fno-omit-frame-pointer -fno-builtin-malloc -fno-builtin-free -fno-ipa-icf.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_STACKS 1000
#define FANOUT 10

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* A compiler barrier after each call keeps it a call (no sibling-call jump) and keeps the
 * callers' frames on the stack. */
#define KEEP_FRAME() __asm__ volatile("" ::: "memory")

typedef void *(*level_fn)(size_t size, unsigned a, unsigned b, unsigned c);

/* Innermost level: the one that calls malloc. The constant makes each body distinct. */
/* M(0) ... M(9): ten distinct functions of one level. */
#define TEN(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9)

#define INNER(N)                                                                              \
    __attribute__((noinline)) static void *inner_##N(size_t size, unsigned a, unsigned b,     \
                                                     unsigned c)                              \
    {                                                                                         \
        (void)a;                                                                              \
        (void)b;                                                                              \
        (void)c;                                                                              \
        unsigned char *p = malloc(size);                                                      \
        KEEP_FRAME();                                                                         \
        if (p)                                                                                \
            p[0] = (unsigned char)(N);                                                        \
        return p;                                                                             \
    }
TEN(INNER)
static const level_fn inner_fns[FANOUT] = {inner_0, inner_1, inner_2, inner_3, inner_4,
                                           inner_5, inner_6, inner_7, inner_8, inner_9};

#define MIDDLE(N)                                                                             \
    __attribute__((noinline)) static void *middle_##N(size_t size, unsigned a, unsigned b,    \
                                                      unsigned c)                             \
    {                                                                                         \
        void *p = inner_fns[c](size, a, b, c);                                                \
        KEEP_FRAME();                                                                         \
        if (p)                                                                                \
            ((unsigned char *)p)[size > 1 ? 1 : 0] = (unsigned char)(0x10 + (N));             \
        return p;                                                                             \
    }
TEN(MIDDLE)
static const level_fn middle_fns[FANOUT] = {middle_0, middle_1, middle_2, middle_3, middle_4,
                                            middle_5, middle_6, middle_7, middle_8, middle_9};

#define OUTER(N)                                                                              \
    __attribute__((noinline)) static void *outer_##N(size_t size, unsigned a, unsigned b,     \
                                                     unsigned c)                              \
    {                                                                                         \
        void *p = middle_fns[b](size, a, b, c);                                               \
        KEEP_FRAME();                                                                         \
        if (p)                                                                                \
            ((unsigned char *)p)[size > 2 ? 2 : 0] = (unsigned char)(0x20 + (N));             \
        return p;                                                                             \
    }
TEN(OUTER)
static const level_fn outer_fns[FANOUT] = {outer_0, outer_1, outer_2, outer_3, outer_4,
                                           outer_5, outer_6, outer_7, outer_8, outer_9};

/* Block sizes: 32 to 144 bytes by stack, so stacks differ in bytes as well as in name. */
static size_t size_of_stack(unsigned s)
{
    return 32 + 16 * (s % 8);
}

static void *alloc_through(unsigned s)
{
    unsigned a = s / 100, b = (s / 10) % 10, c = s % 10;
    return outer_fns[a](size_of_stack(s), a, b, c);
}

/* Frees block i if it is live and allocates it again through its stack. */
__attribute__((noinline)) static int replace_block(void **live, long i, long stacks)
{
    if (live[i])
        free(live[i]);
    live[i] = alloc_through((unsigned)(i % stacks));
    KEEP_FRAME();
    return live[i] ? 0 : -1;
}

static uint64_t block_bytes(long blocks, long stacks)
{
    uint64_t bytes = 0;
    for (long i = 0; i < blocks; i++)
        bytes += size_of_stack((unsigned)(i % stacks));
    return bytes;
}

static int exists(const char *path)
{
    return path && *path && access(path, F_OK) == 0;
}

static long parse_count(const char *text, const char *what, long lo, long hi)
{
    char *end = NULL;
    long v = strtol(text, &end, 10);
    if (!*text || *end || v < lo || v > hi) {
        fprintf(stderr, "hold: %s must be a number from %ld to %ld, not \"%s\"\n", what, lo, hi,
                text);
        exit(2);
    }
    return v;
}

/* xorshift64*: picks the block a churn step replaces. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

int main(int argc, char **argv)
{
    long blocks = argc > 1 ? parse_count(argv[1], "BLOCKS", 1, 100000000) : 10000;
    long stacks = argc > 2 ? parse_count(argv[2], "STACKS", 1, MAX_STACKS) : 100;
    long churn = argc > 3 ? parse_count(argv[3], "CHURN", 0, 1000000) : 0;
    const char *go = getenv("HOLD_GO");
    const char *stop = getenv("HOLD_STOP");

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    const struct timespec poll = {0, 5 * 1000000L};
    if (go && *go) {
        printf("pid %d\n", (int)getpid());
        while (!exists(go) && !stop_requested)
            nanosleep(&poll, NULL);
    }

    void **live = calloc((size_t)blocks, sizeof(*live));
    if (!live) {
        fprintf(stderr, "hold: cannot allocate the block table\n");
        return 1;
    }
    /* One loop, one call site of replace_block for the fill and the churn: the blocks of a
     * stack keep the same call stack whichever phase allocated them. The churn runs in ticks
     * of 10 ms, CHURN/100 pairs each, the remainder spread over the ticks. */
    const struct timespec tick = {0, 10 * 1000000L};
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    long long pairs = 0;
    long ticks = 0, due = 0;
    for (long step = 0; !stop_requested; step++) {
        long i;
        if (step < blocks) {
            i = step;
        } else {
            if (step == blocks)
                printf("ready blocks=%ld stacks=%ld bytes=%llu\n", blocks, stacks,
                       (unsigned long long)block_bytes(blocks, stacks));
            while (due == 0 && !stop_requested) {
                if (ticks % 10 == 0 && exists(stop))
                    stop_requested = 1;
                nanosleep(&tick, NULL);
                due = churn * (ticks + 1) / 100 - churn * ticks / 100;
                ticks++;
            }
            if (stop_requested)
                break;
            due--;
            pairs++;
            i = (long)(next_random(&rng) % (uint64_t)blocks);
        }
        if (replace_block(live, i, stacks) != 0) {
            fprintf(stderr, "hold: malloc failed at block %ld\n", i);
            return 1;
        }
    }
    printf("done pairs=%lld\n", pairs);
    return 0;
}
