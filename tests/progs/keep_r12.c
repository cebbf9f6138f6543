/* Leaks through malloc called with a known value in %r12, which malloc must give back (a
 * callee-saved register), and counts the calls that gave it back: glibc's malloc starts with
 * `push %r12`, so a breakpoint placed one byte in (in the middle of that instruction) makes the
 * kernel run `push %rsp` instead, and malloc returns with %r12 = the stack pointer.
 * Usage: keep_r12 LEAK_BYTES COUNT
 * Prints "pid N", waits for FIXTURE_GO, makes COUNT calls, prints "leaked BYTES" and
 * "kept N" (calls that gave %r12 back), then waits to be killed. x86-64 only (elsewhere it
 * prints "unsupported" and exits 2). */
#include <stdint.h>
#include <string.h>

#include "fixture.h"

static void* kept[1 << 16];

#if defined(__x86_64__)
NOINLINE void* leak_keeping_r12(size_t size, int* r12_kept) {
    void* p;
    uint64_t after;
    /* Past the red zone (the compiler may keep this function's locals there), %rsp aligned to
     * 16 bytes as at any call, %r12 and %rbx given back as they were. */
    __asm__ volatile(
        "sub $128, %%rsp\n\t"
        "push %%r12\n\t"
        "push %%rbx\n\t"
        "mov %%rsp, %%rbx\n\t"
        "and $-16, %%rsp\n\t"
        "movabs $0x5a5a5a5a5a5a5a5a, %%r12\n\t"
        "call malloc@PLT\n\t"
        "mov %%r12, %%rsi\n\t"
        "mov %%rbx, %%rsp\n\t"
        "pop %%rbx\n\t"
        "pop %%r12\n\t"
        "add $128, %%rsp\n\t"
        : "=a"(p), "=S"(after), "+D"(size)
        :
        : "rcx", "rdx", "r8", "r9", "r10", "r11", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3",
          "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
          "xmm14", "xmm15");
    *r12_kept = after == 0x5a5a5a5a5a5a5a5aULL;
    return p;
}
#endif

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LEAK_BYTES COUNT\n", argv[0]);
        return 2;
    }
#if defined(__x86_64__)
    size_t size = strtoul(argv[1], NULL, 0);
    long count = strtol(argv[2], NULL, 0);
    report("pid", getpid());
    wait_for_go();
    long good = 0;
    for (long i = 0; i < count; i++) {
        int ok = 0;
        void* p = leak_keeping_r12(size, &ok);
        memset(p, 0x5a, size);
        kept[i % (1 << 16)] = p;
        good += ok;
        sleep_ms(5);
    }
    report("leaked", (long)size * count);
    report("kept", good);
    for (;;) sleep_ms(1000);
#else
    (void)argv;
    printf("unsupported\n");
    return 2;
#endif
}
