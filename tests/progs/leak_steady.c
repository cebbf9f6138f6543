/* A steady leak through leak_record_entry() beside malloc/free churn in churn_buffers().
 * Usage: leak_steady LEAK_BYTES TICKS TICK_MS [IGNORED...]
 * (arguments after the third are ignored: a test may give it a command line of any length)
 * Leaks LEAK_BYTES every tick for TICKS ticks (the truth is LEAK_BYTES * TICKS), churns
 * 64 allocations of 1..8 KiB per tick, prints "leaked N" when done and keeps churning. */
#include <string.h>

#include "fixture.h"

static void** kept;
static long nkept;

NOINLINE void* leak_record_entry(size_t size) {
    void* p = malloc(size);
    memset(p, 0xab, size);
    kept[nkept++] = p; /* reachable, but never freed: a leak by growth */
    return p;
}

NOINLINE void churn_buffers(unsigned* seed) {
    void* bufs[64];
    for (int i = 0; i < 64; i++) {
        size_t n = 1024 + (size_t)(rand_r(seed) % (7 * 1024));
        bufs[i] = malloc(n);
        memset(bufs[i], 1, 16);
    }
    for (int i = 0; i < 64; i++) free(bufs[i]);
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s LEAK_BYTES TICKS TICK_MS\n", argv[0]);
        return 2;
    }
    size_t leak = strtoul(argv[1], NULL, 0);
    long ticks = strtol(argv[2], NULL, 0);
    long tick_ms = strtol(argv[3], NULL, 0);
    unsigned seed = 42;
    kept = calloc((size_t)ticks + 1, sizeof(void*));
    report("pid", getpid());
    wait_for_go();
    for (long t = 0; t < ticks; t++) {
        leak_record_entry(leak);
        churn_buffers(&seed);
        sleep_ms(tick_ms);
    }
    report("leaked", (long)(leak * (size_t)ticks));
    for (;;) {
        churn_buffers(&seed);
        sleep_ms(tick_ms);
    }
}
