/* Leaks through a library loaded from a path it is given (a copy the test makes), first from
 * wrap_first(), then, once told, from wrap_second(): the test truncates the library's file in
 * place between the two, as a process may do to a file it owns while another program has it
 * mapped. Only the library's code page is ever executed, which the truncation keeps.
 * Usage: trunc_leak LIBRARY BYTES COUNT
 * Prints "pid N", waits for FIXTURE_GO, leaks COUNT blocks of BYTES through wrap_first, prints
 * "first N"; waits for FIXTURE_GO2 (a file), does the same through wrap_second, prints
 * "second N", then leaks a block through wrap_second every 50 ms until killed. */
#include <dlfcn.h>

#include "fixture.h"

typedef void* (*wrap_fn)(size_t);
static void* kept[1 << 12];

static void wait_for(const char* name) {
    const char* go = getenv(name);
    if (!go) return;
    while (access(go, F_OK) != 0) sleep_ms(10);
}

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s LIBRARY BYTES COUNT\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    wrap_fn first = (wrap_fn)dlsym(lib, "wrap_first");
    wrap_fn second = (wrap_fn)dlsym(lib, "wrap_second");
    size_t bytes = strtoul(argv[2], NULL, 0);
    long count = strtol(argv[3], NULL, 0);
    report("pid", getpid());
    wait_for_go();
    for (long i = 0; i < count; i++) kept[i % 4096] = first(bytes);
    report("first", (long)bytes * count);
    wait_for("FIXTURE_GO2");
    for (long i = 0; i < count; i++) kept[(count + i) % 4096] = second(bytes);
    report("second", (long)bytes * count);
    /* Then on, through wrap_second, slowly, for as long as it runs. */
    for (long i = 0;; i++) {
        kept[i % 4096] = second(bytes);
        sleep_ms(50);
    }
}
