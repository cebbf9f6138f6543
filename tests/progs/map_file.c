/* Maps a file into its address space as code is mapped (read and execute), low down, before
 * any library, and never runs it: what a process does to show a file of its choosing as one of
 * its libraries. Usage: map_file PATH
 * Prints "pid N" and "mapped ADDRESS SIZE", then waits to be killed. */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "fixture.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror(argv[1]);
        return 1;
    }
    /* Below the executable and every library (mmap_min_addr is far lower). */
    void* want = (void*)0x10000000UL;
    void* at = mmap(want, (size_t)st.st_size, PROT_READ | PROT_EXEC,
                    MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0);
    if (at == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    close(fd);
    report("pid", getpid());
    printf("mapped %lx %lx\n", (unsigned long)at, (unsigned long)st.st_size);
    fflush(stdout);
    for (;;) sleep_ms(1000);
}
