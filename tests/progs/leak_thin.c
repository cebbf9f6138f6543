/* Frame pointers kept (-O2 -fno-omit-frame-pointer), and the function that calls malloc has no
 * locals: it calls right after `push rbp; mov rsp, rbp`, so at malloc's entry its frame record
 * sits just above the return address (rbp == the caller's sp). A walk by frame pointers must
 * take that record; it once stopped there and every stack ended at the function.
 * Usage: leak_thin BLOCKS [WARMUP]
 * With WARMUP, first allocates WARMUP blocks through the same path and frees them (the path is
 * warm: the unwind rules of the C library's frames are known). Then leaks BLOCKS blocks of 4096
 * bytes, prints "leaked N", then sleeps. */
#include <stdio.h>
#include <stdlib.h>

#include "fixture.h"

#define BLOCK 4096

/* No locals, no stack arguments: rbp == rsp at the call. */
__attribute__((noinline, noclone)) static void* thin_grab(size_t n) {
    void* p = malloc(n);
    if (p) *(volatile char*)p = 1;
    return p;
}

__attribute__((noinline, noclone)) static void* thin_layer(size_t n) {
    void* p = thin_grab(n);
    __asm__ volatile("" ::: "memory"); /* a call, not a jump */
    return p;
}

static void* kept[1 << 16];

int main(int argc, char** argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s BLOCKS [WARMUP]\n", argv[0]);
        return 2;
    }
    int blocks = atoi(argv[1]);
    int warmup = argc == 3 ? atoi(argv[2]) : 0;
    if (blocks < 0 || blocks > (1 << 16) || warmup < 0 || warmup > (1 << 16)) return 2;
    report("pid", getpid());
    wait_for_go();
    static volatile int rounds = 2;
    const int counts[2] = {warmup, blocks};
    for (int round = warmup > 0 ? 0 : 1; round < rounds; round++) {
        for (int i = 0; i < counts[round]; i++) kept[i] = thin_layer(BLOCK);
        if (round == 0) {
            for (int i = 0; i < counts[0]; i++) free(kept[i]);
            sleep_ms(300);
        }
    }
    report("leaked", (long)blocks * BLOCK);
    for (;;) sleep_ms(1000);
}
