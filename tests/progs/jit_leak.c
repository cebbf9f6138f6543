/* Leaks from code in an anonymous executable mapping, as a JIT compiler's code is: a small
 * generated function (push %rbp; mov %rsp,%rbp; call leak_from_jit; pop %rbp; ret) calls
 * leak_from_jit(), which mallocs and keeps the block. A frame of every leaking stack is then
 * in anonymous memory, which leakwatchd names from the runtime's perf map,
 * /tmp/perf-PID.map: the root tests make that file hostile (a FIFO, a symlink, a huge file).
 * Usage: jit_leak LEAK_BYTES TICKS TICK_MS
 * Prints "pid N" and "jit ADDRESS SIZE" (the generated code), waits for FIXTURE_GO, leaks
 * LEAK_BYTES every tick for TICKS ticks, prints "leaked N" and then waits to be killed.
 * x86-64 only (on other architectures it prints "unsupported" and exits 2). */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "fixture.h"

static void** kept;
static long nkept;

NOINLINE void* leak_from_jit(size_t size) {
    void* p = malloc(size);
    memset(p, 0xcd, size);
    kept[nkept++] = p;
    return p;
}

typedef void* (*jit_fn)(size_t);

#if defined(__x86_64__)
static jit_fn make_jit(size_t* size) {
    uint8_t code[] = {
        0x55,                                  /* push %rbp */
        0x48, 0x89, 0xe5,                      /* mov %rsp,%rbp */
        0x48, 0xb8, 0,    0, 0, 0, 0, 0, 0, 0, /* movabs $leak_from_jit,%rax */
        0xff, 0xd0,                            /* call *%rax (the size stays in %rdi) */
        0x5d,                                  /* pop %rbp */
        0xc3,                                  /* ret */
    };
    uint64_t target = (uint64_t)(uintptr_t)leak_from_jit;
    memcpy(code + 6, &target, sizeof(target));
    void* page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return NULL;
    memcpy(page, code, sizeof(code));
    if (mprotect(page, 4096, PROT_READ | PROT_EXEC) != 0) return NULL;
    *size = sizeof(code);
    return (jit_fn)page;
}
#else
static jit_fn make_jit(size_t* size) {
    (void)size;
    return NULL;
}
#endif

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s LEAK_BYTES TICKS TICK_MS\n", argv[0]);
        return 2;
    }
    size_t leak = strtoul(argv[1], NULL, 0);
    long ticks = strtol(argv[2], NULL, 0);
    long tick_ms = strtol(argv[3], NULL, 0);
    size_t size = 0;
    jit_fn jit = make_jit(&size);
    if (jit == NULL) {
        printf("unsupported\n");
        return 2;
    }
    kept = calloc((size_t)ticks + 1, sizeof(void*));
    report("pid", getpid());
    printf("jit %lx %zx\n", (unsigned long)(uintptr_t)jit, size);
    fflush(stdout);
    wait_for_go();
    for (long t = 0; t < ticks; t++) {
        jit(leak);
        sleep_ms(tick_ms);
    }
    report("leaked", (long)(leak * (size_t)ticks));
    for (;;) sleep_ms(1000);
}
