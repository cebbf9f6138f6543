/* Holds kernel memory from user space: NPIPES pipes, each with BYTES written and never read,
 * kept open until the program is killed; closing them (at exit) frees it all again. With
 * PER_SECOND, opens them at that rate (a kernel leak that grows steadily) instead of at once.
 * Prints "pipe_pages N": the pipe buffer pages written, one page per 4 KiB. */
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>

#include "fixture.h"

NOINLINE int fill_pipe(int fds[2], const char *data, size_t bytes)
{
    if (pipe(fds) != 0)
        return -1;
    return write(fds[1], data, bytes) == (ssize_t)bytes ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s NPIPES BYTES [PER_SECOND]\n", argv[0]);
        return 2;
    }
    int npipes = atoi(argv[1]);
    long per_second = argc == 4 ? atol(argv[3]) : 0;
    /* two descriptors a pipe: as many as the hard limit allows */
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    size_t bytes = strtoul(argv[2], NULL, 0);
    long page = sysconf(_SC_PAGESIZE);
    char *data = malloc(bytes);
    memset(data, 'x', bytes);
    int (*fds)[2] = calloc((size_t)npipes, sizeof(*fds));
    report("pid", getpid());
    wait_for_go();
    for (int i = 0; i < npipes; i++) {
        if (fill_pipe(fds[i], data, bytes) != 0) {
            perror("pipe");
            return 1;
        }
        if (per_second > 0)
            sleep_ms(1000 / per_second);
    }
    report("pipe_pages", (long)npipes * (long)((bytes + page - 1) / page));
    for (;;)
        pause();
}
