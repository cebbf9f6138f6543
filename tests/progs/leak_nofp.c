/* A leak three calls deep in code built with -O2 and without frame pointers: the stack of its
 * allocations can only be walked with the unwind tables (.eh_frame). Each layer keeps a frame
 * of its own (a local buffer) and works after its call, so no call is a tail call.
 * Usage: leak_nofp BLOCK_BYTES BLOCKS
 * Leaks BLOCKS blocks of BLOCK_BYTES, prints "leaked N", then sleeps. */
#include <string.h>

#include "fixture.h"

static void *kept[1 << 16];
static volatile unsigned long checksum;

NOINLINE __attribute__((noclone)) void *leak_records(size_t size, unsigned i)
{
    char *p = malloc(size);
    memset(p, (int)i, size);
    kept[i % (sizeof kept / sizeof kept[0])] = p;
    return p;
}

NOINLINE __attribute__((noclone)) unsigned long middle_layer(size_t size, unsigned i)
{
    volatile char scratch[96];
    scratch[i % sizeof scratch] = (char)i;
    char *p = leak_records(size, i);
    return (unsigned long)p[0] + (unsigned long)scratch[i % sizeof scratch];
}

NOINLINE __attribute__((noclone)) unsigned long outer_layer(size_t size, unsigned i)
{
    volatile char scratch[200];
    scratch[i % sizeof scratch] = (char)(i >> 1);
    unsigned long v = middle_layer(size, i);
    return v ^ (unsigned long)scratch[i % sizeof scratch];
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s BLOCK_BYTES BLOCKS\n", argv[0]);
        return 2;
    }
    size_t size = strtoul(argv[1], NULL, 0);
    unsigned blocks = (unsigned)strtoul(argv[2], NULL, 0);
    report("pid", getpid());
    wait_for_go();
    for (unsigned i = 0; i < blocks; i++)
        checksum += outer_layer(size, i);
    report("leaked", (long)(size * blocks));
    for (;;)
        sleep_ms(1000);
}
