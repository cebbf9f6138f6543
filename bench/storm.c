/* The exec storm's processes (bench/exec_storm.sh), one program in three roles:
 *   storm spawn RATE SECONDS PROGRAM   starts PROGRAM (no arguments) RATE times a second for
 *                                      SECONDS, reaping as it goes; prints "spawned N", the
 *                                      rate it kept, and how many children failed
 *   storm                              (the spawned child) allocates 16 blocks, frees 8, exits
 *   storm leak BYTES TICKS TICK_MS     leaks BYTES every tick through leak_tick(), TICKS times;
 *                                      prints "pid N", waits until the file $STORM_GO exists,
 *                                      then leaks, prints "leaked TOTAL", then sleeps */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void *volatile sink[16];

static int child(void)
{
    for (int i = 0; i < 16; i++)
        sink[i] = malloc(256 + 16 * (size_t)i);
    for (int i = 0; i < 16; i += 2)
        free(sink[i]);
    return 0;
}

__attribute__((noinline)) static void *leak_tick(size_t bytes)
{
    void *p = malloc(bytes);
    memset(p, 0x5a, bytes);
    return p;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

__attribute__((noreturn)) static void leak(size_t bytes, long ticks, long tick_ms)
{
    printf("pid %d\n", getpid());
    fflush(stdout);
    const char *go = getenv("STORM_GO");
    while (go && access(go, F_OK) != 0)
        sleep_ms(10);
    for (long t = 0; t < ticks; t++) {
        sink[t % 16] = leak_tick(bytes); /* kept: the blocks are never freed */
        sleep_ms(tick_ms);
    }
    printf("leaked %zu\n", bytes * (size_t)ticks);
    fflush(stdout);
    for (;;)
        sleep_ms(1000);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long reap(long *failed)
{
    long n = 0;
    int status;
    while (waitpid(-1, &status, WNOHANG) > 0) {
        n++;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            (*failed)++;
    }
    return n;
}

static int spawn(double rate, double seconds, const char *program)
{
    char *argv[] = {(char *)program, NULL};
    long spawned = 0, reaped = 0, failed = 0, errors = 0;
    double start = now(), period = 1.0 / rate;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    while (now() - start < seconds) {
        pid_t pid;
        if (posix_spawn(&pid, program, NULL, NULL, argv, environ) == 0)
            spawned++;
        else
            errors++;
        reaped += reap(&failed);
        long ns = next.tv_nsec + (long)(period * 1e9);
        next.tv_sec += ns / 1000000000L;
        next.tv_nsec = ns % 1000000000L;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    double took = now() - start;
    while (reaped < spawned) {
        int status;
        if (waitpid(-1, &status, 0) < 0)
            break;
        reaped++;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    printf("spawned %ld\nrate %.1f\nfailed %ld\nspawn_errors %ld\n", spawned, spawned / took,
           failed, errors);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 1)
        return child();
    if (argc == 5 && strcmp(argv[1], "spawn") == 0)
        return spawn(atof(argv[2]), atof(argv[3]), argv[4]);
    if (argc == 5 && strcmp(argv[1], "leak") == 0)
        leak(strtoul(argv[2], NULL, 0), atol(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: storm | storm spawn RATE SECONDS PROGRAM | storm leak BYTES TICKS TICK_MS\n");
    return 2;
}
