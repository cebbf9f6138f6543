/* Allocation patterns for the leak detector: one real leak and the shapes that must not be
 * called one. Each pattern allocates through a function of its own, so that the stack's site
 * names it.
 *
 * Usage: patterns MODE [KEY=VALUE ...]
 *   leak      leak_steady_growth(): CHUNK bytes every TICK_MS, never freed (until CAP, a
 *             safety bound), e.g. 64 KiB every 100 ms = 640 KiB/s
 *   plateau   cache_fill(): a cache that fills to CAP in FILL_MS, then stays full: each tick
 *             it evicts its oldest entry and inserts a new one of the same size
 *   churn     churn_alloc_free(): OPS random allocations (1..SIZE bytes) or frees of SLOTS
 *             slots every TICK_MS; the level stays around SLOTS/2 * SIZE/2
 *   step      startup_allocation(): one allocation of SIZE bytes at start, then nothing
 *   sawtooth  sawtooth_grow(): CHUNK bytes every TICK_MS for PERIOD_MS, then
 *             sawtooth_release() frees it all; again and again
 * Keys (sizes take KiB/MiB/GiB): chunk (64KiB), tick_ms (100), cap (plateau 8MiB, leak 1GiB),
 * fill_ms (10000), period_ms (8000), size (step 16MiB, churn 32KiB), slots (512), ops (64),
 * seed (1).
 *
 * Prints "pid N", waits for FIXTURE_GO, prints "started MODE", then per mode: "full BYTES"
 * when the cache is full, "allocated BYTES" after the step, "released BYTES" at each release
 * of the sawtooth, "capped BYTES" if the leak reaches CAP. Runs until killed. */
#include <stdint.h>
#include <string.h>

#include "fixture.h"

struct options {
    size_t chunk;
    long tick_ms;
    size_t cap;
    long fill_ms;
    long period_ms;
    size_t size;
    long slots;
    long ops;
    unsigned seed;
};

NOINLINE void leak_steady_growth(size_t bytes)
{
    char *p = malloc(bytes);
    memset(p, 0x6c, bytes); /* the pointer is dropped: a real leak */
}

NOINLINE void *cache_fill(size_t bytes)
{
    char *p = malloc(bytes);
    memset(p, 0x63, bytes);
    return p;
}

NOINLINE void cache_evict(void *entry)
{
    free(entry);
}

NOINLINE void churn_alloc_free(void **slots, long nslots, long ops, size_t max_size,
                               unsigned *seed)
{
    for (long i = 0; i < ops; i++) {
        long k = rand_r(seed) % nslots;
        if (slots[k]) {
            free(slots[k]);
            slots[k] = NULL;
        } else {
            size_t n = 1 + (size_t)rand_r(seed) % max_size;
            slots[k] = malloc(n);
            memset(slots[k], 0x2a, n < 64 ? n : 64);
        }
    }
}

NOINLINE void *startup_allocation(size_t bytes)
{
    char *p = malloc(bytes);
    memset(p, 0x73, bytes);
    return p;
}

NOINLINE void *sawtooth_grow(size_t bytes)
{
    char *p = malloc(bytes);
    memset(p, 0x77, bytes);
    return p;
}

NOINLINE void sawtooth_release(void **blocks, long n)
{
    for (long i = 0; i < n; i++)
        free(blocks[i]);
}

static void run_leak(const struct options *o)
{
    size_t leaked = 0;
    for (;;) {
        if (leaked + o->chunk <= o->cap) {
            leak_steady_growth(o->chunk);
            leaked += o->chunk;
            if (leaked + o->chunk > o->cap)
                report("capped", (long)leaked);
        }
        sleep_ms(o->tick_ms);
    }
}

static void run_plateau(const struct options *o)
{
    long ticks = o->fill_ms / o->tick_ms > 0 ? o->fill_ms / o->tick_ms : 1;
    size_t entry = o->cap / (size_t)ticks;
    void **cache = calloc((size_t)ticks, sizeof(void *));
    for (long i = 0;; i++) {
        long k = i % ticks;
        if (cache[k])
            cache_evict(cache[k]); /* full: the oldest entry makes room */
        cache[k] = cache_fill(entry);
        if (i == ticks - 1)
            report("full", (long)(entry * (size_t)ticks));
        sleep_ms(o->tick_ms);
    }
}

static void run_churn(const struct options *o)
{
    void **slots = calloc((size_t)o->slots, sizeof(void *));
    unsigned seed = o->seed;
    for (;;) {
        churn_alloc_free(slots, o->slots, o->ops, o->size, &seed);
        sleep_ms(o->tick_ms);
    }
}

static void *startup_block; /* held for the program's life */

static void run_step(const struct options *o)
{
    startup_block = startup_allocation(o->size);
    report("allocated", (long)o->size);
    for (;;)
        pause();
}

static void run_sawtooth(const struct options *o)
{
    long ticks = o->period_ms / o->tick_ms > 0 ? o->period_ms / o->tick_ms : 1;
    void **blocks = calloc((size_t)ticks, sizeof(void *));
    for (;;) {
        for (long i = 0; i < ticks; i++) {
            blocks[i] = sawtooth_grow(o->chunk);
            sleep_ms(o->tick_ms);
        }
        sawtooth_release(blocks, ticks);
        report("released", (long)(o->chunk * (size_t)ticks));
    }
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (end == s)
        return -1;
    unsigned long long unit = 1;
    if (strcmp(end, "KiB") == 0)
        unit = 1ULL << 10;
    else if (strcmp(end, "MiB") == 0)
        unit = 1ULL << 20;
    else if (strcmp(end, "GiB") == 0)
        unit = 1ULL << 30;
    else if (*end)
        return -1;
    *out = (size_t)(v * unit);
    return 0;
}

static int parse_long(const char *s, long *out)
{
    char *end;
    *out = strtol(s, &end, 0);
    return end == s || *end || *out <= 0 ? -1 : 0;
}

static int parse_option(struct options *o, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq)
        return -1;
    size_t klen = (size_t)(eq - arg);
    const char *v = eq + 1;
    long l;
#define KEY(name) (klen == strlen(name) && strncmp(arg, name, klen) == 0)
    if (KEY("chunk"))
        return parse_size(v, &o->chunk);
    if (KEY("cap"))
        return parse_size(v, &o->cap);
    if (KEY("size"))
        return parse_size(v, &o->size);
    if (KEY("tick_ms"))
        return parse_long(v, &o->tick_ms);
    if (KEY("fill_ms"))
        return parse_long(v, &o->fill_ms);
    if (KEY("period_ms"))
        return parse_long(v, &o->period_ms);
    if (KEY("slots"))
        return parse_long(v, &o->slots);
    if (KEY("ops"))
        return parse_long(v, &o->ops);
    if (KEY("seed")) {
        if (parse_long(v, &l) != 0)
            return -1;
        o->seed = (unsigned)l;
        return 0;
    }
#undef KEY
    return -1;
}

int main(int argc, char **argv)
{
    static const char *const modes[] = {"leak", "plateau", "churn", "step", "sawtooth"};
    static void (*const runs[])(const struct options *) = {run_leak, run_plateau, run_churn,
                                                           run_step, run_sawtooth};
    int mode = -1;
    for (int i = 0; argc >= 2 && i < 5; i++)
        if (strcmp(argv[1], modes[i]) == 0)
            mode = i;
    struct options o = {
        .chunk = 64 << 10,
        .tick_ms = 100,
        .cap = mode == 0 ? (size_t)1 << 30 : (size_t)8 << 20,
        .fill_ms = 10000,
        .period_ms = 8000,
        .size = mode == 3 ? (size_t)16 << 20 : (size_t)32 << 10,
        .slots = 512,
        .ops = 64,
        .seed = 1,
    };
    int bad = mode < 0;
    for (int i = 2; !bad && i < argc; i++)
        bad = parse_option(&o, argv[i]) != 0;
    if (bad || o.chunk == 0 || o.cap == 0 || o.size == 0) {
        fprintf(stderr,
                "usage: %s leak|plateau|churn|step|sawtooth [KEY=VALUE ...]\n"
                "keys: chunk cap size (bytes, or with KiB/MiB/GiB), tick_ms fill_ms "
                "period_ms slots ops seed (positive integers)\n",
                argv[0]);
        return 2;
    }
    report("pid", getpid());
    wait_for_go();
    printf("started %s\n", modes[mode]);
    fflush(stdout);
    runs[mode](&o);
    return 0;
}
