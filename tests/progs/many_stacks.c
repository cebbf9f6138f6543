/* Many distinct allocation stacks from one process: path number p (0 <= p < PATHS) descends
 * DEPTH levels, each through go_left() or go_right() as bit k of p says, and the innermost one
 * allocates SIZE bytes, which are kept. The call sites differ, so each path is a stack of its
 * own: 2^DEPTH of them at most (DEPTH 17: 131072).
 * Usage: many_stacks PATHS SIZE
 * Prints "pid N", waits for FIXTURE_GO, allocates once per path, prints "leaked BYTES" (the
 * truth: PATHS * SIZE, all still held) and sleeps until killed. */
#include "fixture.h"

#define DEPTH 17

NOINLINE void *go_right(unsigned path, int depth, size_t size);

NOINLINE void *go_left(unsigned path, int depth, size_t size)
{
    if (depth == 0)
        return malloc(size);
    if (path & 1)
        return go_right(path >> 1, depth - 1, size);
    return go_left(path >> 1, depth - 1, size);
}

NOINLINE void *go_right(unsigned path, int depth, size_t size)
{
    if (depth == 0)
        return malloc(size);
    if (path & 1)
        return go_right(path >> 1, depth - 1, size);
    return go_left(path >> 1, depth - 1, size);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PATHS SIZE\n", argv[0]);
        return 2;
    }
    unsigned long paths = strtoul(argv[1], NULL, 0);
    size_t size = strtoul(argv[2], NULL, 0);
    if (paths > 1ul << DEPTH || size == 0) {
        fprintf(stderr, "1 to %lu paths, a size of at least 1\n", 1ul << DEPTH);
        return 2;
    }
    void **kept = calloc(paths, sizeof(void *));
    report("pid", getpid());
    wait_for_go();
    for (unsigned long p = 0; p < paths; p++)
        kept[p] = go_left((unsigned)p, DEPTH, size);
    report("leaked", (long)(paths * size));
    for (;;)
        sleep_ms(1000);
}
