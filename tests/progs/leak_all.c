/* Leaks through every allocator entry point, each from a function of its own, with a known
 * number of bytes; and balanced calls that must leave nothing outstanding.
 * Prints "leak <function> <bytes>" for each leaking function, then "done", then waits. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "fixture.h"

#define N 20
static void *keep[64 * N];
static int nkeep;

static void hold(void *p)
{
    keep[nkeep++] = p;
}

NOINLINE void leak_malloc(void)
{
    for (int i = 0; i < N; i++)
        hold(malloc(10000));
    printf("leak leak_malloc %d\n", N * 10000);
}

NOINLINE void leak_calloc(void)
{
    for (int i = 0; i < N; i++)
        hold(calloc(10, 1100));
    printf("leak leak_calloc %d\n", N * 11000);
}

NOINLINE void leak_realloc(void)
{
    for (int i = 0; i < N; i++) {
        void *p = malloc(100);
        hold(realloc(p, 12000));
    }
    printf("leak leak_realloc %d\n", N * 12000);
}

NOINLINE void leak_realloc_null(void)
{
    for (int i = 0; i < N; i++)
        hold(realloc(NULL, 13000));
    printf("leak leak_realloc_null %d\n", N * 13000);
}

NOINLINE void leak_reallocarray(void)
{
    for (int i = 0; i < N; i++)
        hold(reallocarray(NULL, 7, 2000));
    printf("leak leak_reallocarray %d\n", N * 14000);
}

NOINLINE void leak_posix_memalign(void)
{
    for (int i = 0; i < N; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, 15000) == 0)
            hold(p);
    }
    printf("leak leak_posix_memalign %d\n", N * 15000);
}

NOINLINE void leak_aligned_alloc(void)
{
    for (int i = 0; i < N; i++)
        hold(aligned_alloc(256, 16128));
    printf("leak leak_aligned_alloc %d\n", N * 16128);
}

NOINLINE void leak_memalign(void)
{
    for (int i = 0; i < N; i++)
        hold(memalign(128, 17000));
    printf("leak leak_memalign %d\n", N * 17000);
}

NOINLINE void leak_valloc(void)
{
    for (int i = 0; i < N; i++)
        hold(valloc(18000));
    printf("leak leak_valloc %d\n", N * 18000);
}

NOINLINE void leak_pvalloc(void)
{
    long page = sysconf(_SC_PAGESIZE);
    long rounded = (19000 + page - 1) / page * page;
    for (int i = 0; i < N; i++)
        hold(pvalloc(19000));
    printf("leak leak_pvalloc %ld\n", N * rounded);
}

NOINLINE void leak_mmap(void)
{
    long len = 6 * sysconf(_SC_PAGESIZE);
    for (int i = 0; i < N; i++)
        hold(mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    printf("leak leak_mmap %ld\n", N * len);
}

NOINLINE void *map_pages(long pages)
{
    return mmap(NULL, pages * sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

NOINLINE void leak_mremap(void)
{
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < N / 2; i++) {
        void *p = map_pages(4);
        hold(mremap(p, 4 * page, 8 * page, MREMAP_MAYMOVE));
    }
    printf("leak leak_mremap %ld\n", N / 2 * 8 * page);
}

NOINLINE void leak_partial_munmap(void)
{
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < N / 2; i++) {
        char *p = mmap(NULL, 8 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(p, 4 * page); /* the upper half stays mapped */
        hold(p + 4 * page);
    }
    printf("leak leak_partial_munmap %ld\n", N / 2 * 4 * page);
}

/* Above glibc's mmap threshold: malloc serves these with an mmap of its own, which must not
 * be counted a second time, nor take the place of the malloc. */
NOINLINE void leak_big_malloc(void)
{
    int mmapped = 0;
    for (int i = 0; i < 4; i++) {
        void *p = malloc(1048576 + 1000);
        mmapped += (((size_t *)p)[-1] & 2) != 0; /* glibc's IS_MMAPPED chunk bit */
        hold(p);
    }
    printf("leak leak_big_malloc %d\n", 4 * (1048576 + 1000));
    printf("big_mmapped %d\n", mmapped);
}

NOINLINE void balanced_calls(void)
{
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < 50; i++)
        free(malloc(5000));
    for (int i = 0; i < N; i++)
        munmap(map_pages(3), 3 * page);
    for (int i = 0; i < N; i++) {
        void *p = malloc(9000);
        p = realloc(p, 0); /* frees, returns NULL */
        if (p)
            free(p);
    }
    for (int i = 0; i < 5; i++)
        free(malloc(2 * 1048576));
    /* overflowing and failing calls record nothing */
    volatile size_t huge = SIZE_MAX / 2; /* volatile: the compiler would refuse the call */
    void *p = calloc(huge, 4);
    if (p)
        free(p);
    void *q = malloc(100);
    void *r = reallocarray(q, huge, 4); /* fails: q stays */
    free(r ? r : q);
    printf("balanced done\n");
}

int main(void)
{
    report("pid", getpid());
    wait_for_go();
    leak_big_malloc();
    leak_malloc();
    leak_calloc();
    leak_realloc();
    leak_realloc_null();
    leak_reallocarray();
    leak_posix_memalign();
    leak_aligned_alloc();
    leak_memalign();
    leak_valloc();
    leak_pvalloc();
    leak_mmap();
    leak_mremap();
    leak_partial_munmap();
    balanced_calls();
    printf("done\n");
    fflush(stdout);
    for (;;)
        pause();
}
