/* A leak whose allocation sits in two functions the compiler inlines into the leaking one,
 * built with -O2 -g: the tests check the source lines and the inline chain leakwatch reports.
 * The markers at line ends ("LINE:name") are how the tests find the expected line numbers.
 * Usage: leak_inline LEAK_BYTES TICKS TICK_MS
 * Leaks LEAK_BYTES every tick for TICKS ticks, prints "leaked N", then sleeps. */
#include <string.h>

#include "fixture.h"

struct node {
    struct node *next;
    size_t size;
    char data[];
};

static struct node *head;

static inline __attribute__((always_inline)) void *grab(size_t size)
{
    return malloc(size); /* LINE:grab_malloc */
}

static inline __attribute__((always_inline)) struct node *make_node(size_t size)
{
    struct node *n = grab(sizeof *n + size); /* LINE:make_node_grab */
    n->size = size;
    return n;
}

__attribute__((noinline, noclone)) void leak_nodes(size_t size)
{
    struct node *n = make_node(size); /* LINE:leak_nodes_make_node */
    memset(n->data, 0x5a, size); /* LINE:leak_nodes_memset */
    n->next = head; /* reachable, never freed: a leak by growth */
    head = n;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s LEAK_BYTES TICKS TICK_MS\n", argv[0]);
        return 2;
    }
    size_t leak = strtoul(argv[1], NULL, 0);
    long ticks = strtol(argv[2], NULL, 0);
    long tick_ms = strtol(argv[3], NULL, 0);
    report("pid", getpid());
    wait_for_go();
    for (long t = 0; t < ticks; t++) {
        leak_nodes(leak); /* LINE:main_leak_nodes */
        sleep_ms(tick_ms);
    }
    report("leaked", (long)(leak * (size_t)ticks));
    for (;;)
        sleep_ms(1000);
}
