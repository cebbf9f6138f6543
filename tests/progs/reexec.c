/* Leaks in leak_before_exec(), then execs itself and leaks in leak_after_exec(): the pid
 * stays, the image changes, and the two images' allocations must never mix.
 * Usage: reexec (phase 1; FIXTURE_GO gates the leak, FIXTURE_GO2 gates the exec)
 *        reexec after  (phase 2, run by the exec) */
#include <string.h>

#include "fixture.h"

NOINLINE void leak_before_exec(void)
{
    for (int i = 0; i < 64; i++)
        memset(malloc(16384), 1, 16384);
    report("leaked_before", 64 * 16384);
}

NOINLINE void leak_after_exec(void)
{
    for (int i = 0; i < 40; i++)
        memset(malloc(7500), 1, 7500);
    report("leaked_after", 40 * 7500);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "after") == 0) {
        report("pid_after", getpid());
        const char *go = getenv("FIXTURE_GO3");
        if (go)
            while (access(go, F_OK) != 0)
                sleep_ms(10);
        leak_after_exec();
        for (;;)
            pause();
    }
    report("pid", getpid());
    wait_for_go();
    leak_before_exec();
    const char *go2 = getenv("FIXTURE_GO2");
    if (go2)
        while (access(go2, F_OK) != 0)
            sleep_ms(10);
    /* exec the real path: exec through /proc/self/exe would rename the process "exe" */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    char *args[] = {argv[0], "after", NULL};
    execv(self, args);
    perror("execv");
    return 1;
}
