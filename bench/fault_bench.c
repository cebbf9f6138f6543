/* Page-fault benchmark: maps anonymous memory, writes one byte in each page (a first-touch
 * write fault per page), unmaps it, again and again. What the watch tier's page-fault program
 * costs a process that faults (bench/faults.sh): it runs on every user page fault of the
 * machine, watched or not. Prints one parseable line:
 *   result faults=N elapsed_ns=T ns_per_fault=X cpu_ns_per_fault=Y
 * Usage: fault_bench [FAULTS [MIB]] (default 2000000 faults, through 64 MiB mappings).
 * With FAULT_GO=PATH it prints "pid N" and waits until PATH exists before faulting, so that a
 * tracer can take the process into its watch tier first. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

int main(int argc, char **argv)
{
    long faults = argc > 1 ? strtol(argv[1], NULL, 0) : 2000000;
    long mib = argc > 2 ? strtol(argv[2], NULL, 0) : 64;
    long page = sysconf(_SC_PAGESIZE);
    size_t len = (size_t)mib << 20;
    long pages = (long)(len / (size_t)page), done = 0;
    if (faults <= 0 || pages <= 0) {
        fprintf(stderr, "usage: fault_bench [FAULTS [MIB]]\n");
        return 2;
    }
    const char *go = getenv("FAULT_GO");
    if (go) {
        printf("pid %d\n", getpid());
        fflush(stdout);
        struct stat st;
        while (stat(go, &st) != 0)
            usleep(10000);
    }
    long long t0 = now_ns(CLOCK_MONOTONIC), c0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    while (done < faults) {
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        for (long i = 0; i < pages && done < faults; i++, done++)
            ((volatile char *)p)[i * page] = 1;
        munmap(p, len);
    }
    long long t = now_ns(CLOCK_MONOTONIC) - t0, c = now_ns(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("result faults=%ld elapsed_ns=%lld ns_per_fault=%.1f cpu_ns_per_fault=%.1f\n", done, t,
           (double)t / done, (double)c / done);
    return 0;
}
