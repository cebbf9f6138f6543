/* A small library the trunc_leak fixture loads from a copy it is given, built without frame
 * pointers: stacks through its functions are walked with its unwind tables (.eh_frame), which
 * the root test then cuts off the file on disk while the fixture keeps running. */
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline, noclone))

/* A frame of its own (a local buffer) and work after the call: no tail call. */
NOINLINE void* wrap_first(size_t size) {
    volatile char scratch[64];
    scratch[size % sizeof scratch] = 1;
    char* p = malloc(size);
    memset(p, 0x11, size);
    return p + scratch[size % sizeof scratch] - 1;
}

NOINLINE void* wrap_second(size_t size) {
    volatile char scratch[80];
    scratch[size % sizeof scratch] = 2;
    char* p = malloc(size);
    memset(p, 0x22, size);
    return p + scratch[size % sizeof scratch] - 2;
}
