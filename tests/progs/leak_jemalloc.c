/* Allocations through jemalloc's own API and its C++ operators, which reach jemalloc's
 * internals without passing through malloc or free. Linked against Debian's libjemalloc.so.2.
 * Prints "pid N", waits for FIXTURE_GO, then "leak <function> <bytes>" for each leaking
 * function, "done", and waits. Balanced pairs must leave nothing. */
#include <stddef.h>

#include "fixture.h"

/* jemalloc's non-standard API and the Itanium C++ ABI names of operator new / delete, declared
 * here so that no jemalloc development package is needed. */
void *mallocx(size_t size, int flags);
void *rallocx(void *ptr, size_t size, int flags);
void dallocx(void *ptr, int flags);
void sdallocx(void *ptr, size_t size, int flags);
void *_Znwm(size_t size);
void _ZdlPvm(void *ptr, size_t size);

#define N 1000
static void *keep[4 * N];
static int nkeep;

NOINLINE void leak_mallocx(void)
{
    for (int i = 0; i < N; i++)
        keep[nkeep++] = mallocx(2000, 0);
    printf("leak leak_mallocx %d\n", N * 2000);
}

NOINLINE void leak_operator_new(void)
{
    for (int i = 0; i < N; i++)
        keep[nkeep++] = _Znwm(3000);
    printf("leak leak_operator_new %d\n", N * 3000);
}

NOINLINE void leak_rallocx(void)
{
    for (int i = 0; i < N; i++)
        keep[nkeep++] = rallocx(mallocx(100, 0), 4000, 0);
    printf("leak leak_rallocx %d\n", N * 4000);
}

NOINLINE void balanced_pairs(void)
{
    for (int i = 0; i < N; i++) {
        sdallocx(malloc(1000), 1000, 0);
        dallocx(mallocx(1500, 0), 0);
        _ZdlPvm(_Znwm(700), 700);
    }
}

int main(void)
{
    report("pid", getpid());
    wait_for_go();
    leak_mallocx();
    leak_operator_new();
    leak_rallocx();
    balanced_pairs();
    printf("done\n");
    fflush(stdout);
    for (;;)
        pause();
}
