/* Shared by the fixture programs: a ready line on stdout, then wait to be killed. */
#ifndef FIXTURE_H
#define FIXTURE_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Optional start signal: when FIXTURE_GO names a file, wait until it exists, so a test
 * can start the program, attach, and only then let it allocate. */
static inline void wait_for_go(void)
{
    const char *go = getenv("FIXTURE_GO");
    if (!go)
        return;
    while (access(go, F_OK) != 0)
        sleep_ms(10);
}

static inline void report(const char *what, long value)
{
    printf("%s %ld\n", what, value);
    fflush(stdout);
}

#endif
