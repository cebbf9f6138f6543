/* Code built with -O2 and without frame pointers, as most distributions' packages are, that
 * leaks through one path and churns (allocates and frees at once) through another, whose
 * functions keep varying data in rbp: a frame-pointer walk from malloc follows that data
 * and makes a new junk stack of nearly every churn allocation; the unwind tables do not.
 * Usage: churn_nofp LEAK_BYTES LEAKS CHURN_PER_LEAK
 * Leaks LEAKS blocks of LEAK_BYTES through leak_block (called by keep_layer, by main), with
 * CHURN_PER_LEAK malloc/free pairs between two leaks, prints "leaked N", then sleeps. */
#include <string.h>

#include "fixture.h"

static void *kept[1 << 16];
static volatile unsigned long sink;
static void *volatile last;

NOINLINE __attribute__((noclone)) void *leak_block(size_t size, unsigned i)
{
    char *p = malloc(size);
    memset(p, (int)i, size);
    kept[i % (sizeof kept / sizeof kept[0])] = p;
    return p;
}

NOINLINE __attribute__((noclone)) unsigned long keep_layer(size_t size, unsigned i)
{
    volatile char scratch[64];
    scratch[i % sizeof scratch] = (char)i;
    char *p = leak_block(size, i);
    return (unsigned long)p[0] + (unsigned long)scratch[i % sizeof scratch];
}

/* Random words that the churn's live pointers point into: a frame-pointer walk that follows
 * one of them reads random "frames". */
static unsigned long noise[4096];

/* A pointer into the noise lives in rbp across the call to malloc, as the compiler may put
 * any value there in code without frame pointers (here forced, so the test does not depend on
 * the compiler's register choice). */
NOINLINE __attribute__((noclone)) unsigned long churn_once(unsigned long a, unsigned long b)
{
    register unsigned long *cursor asm("rbp") = &noise[(a ^ b) % 4000];
    __asm__ volatile("" : "+r"(cursor));
    char *p = malloc(48 + (a & 63));
    last = p; /* escapes: the compiler keeps the pair */
    p[0] = (char)a;
    __asm__ volatile("" : "+r"(cursor));
    unsigned long r = (unsigned long)p[0] + cursor[0] + cursor[1];
    free(last);
    cursor[0] += 1;
    return r;
}

NOINLINE __attribute__((noclone)) unsigned long churn_layer(unsigned long seed, unsigned n)
{
    unsigned long acc = seed;
    for (unsigned k = 0; k < n; k++)
        acc += churn_once(acc + k, seed * 31 + k);
    return acc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s LEAK_BYTES LEAKS CHURN_PER_LEAK\n", argv[0]);
        return 2;
    }
    size_t size = strtoul(argv[1], NULL, 0);
    unsigned leaks = (unsigned)strtoul(argv[2], NULL, 0);
    unsigned churn = (unsigned)strtoul(argv[3], NULL, 0);
    unsigned long x = 0x2545f4914f6cdd1dUL;
    for (size_t k = 0; k < sizeof noise / sizeof noise[0]; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        noise[k] = x;
    }
    report("pid", getpid());
    wait_for_go();
    for (unsigned i = 0; i < leaks; i++) {
        sink += keep_layer(size, i);
        sink += churn_layer(i * 2654435761u, churn);
    }
    report("leaked", (long)(size * leaks));
    for (;;)
        sleep_ms(1000);
}
