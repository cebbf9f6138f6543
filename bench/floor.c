/* floor: attach empty BPF programs (bench/empty.bpf.c) to malloc and free in one process's
 * libc, the overhead floor any uprobe-based tracker pays, then wait to be stopped.
 *
 *   floor PID [PROBES]
 *
 * PROBES is a comma-separated list of malloc (entry uprobe), free (entry uprobe), malloc_ret
 * (uretprobe on malloc) and free+OFFSET (entry-only uprobe OFFSET bytes into free, e.g. free+9
 * past glibc's `test %rdi,%rdi; je`); the default is malloc,free,malloc_ret. The libc is the
 * one PID maps (found in /proc/PID/maps, opened through /proc/PID/root); libbpf resolves the
 * symbols (func_name). Prints "attached ..." once the probes are in place; exits on SIGINT or
 * SIGTERM, or when PID is gone, destroying the links (about 130 ms each on Linux 6.18).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "empty.skel.h"

/* One probe to attach: PROBES names them malloc, free, malloc_ret, or free+OFFSET for an entry
 * probe OFFSET bytes into free (past the instruction the kernel would single-step). */
struct probe {
    const char *func; /* libc symbol */
    size_t offset;    /* from the symbol */
    int retprobe;
};
#define MAX_PROBES 8

static struct bpf_program *program_for(struct empty_bpf *skel, const struct probe *p)
{
    if (p->retprobe)
        return skel->progs.empty_malloc_return;
    return strcmp(p->func, "malloc") == 0 ? skel->progs.empty_malloc : skel->progs.empty_free;
}

/* The path of the libc PID maps, as seen through /proc/PID/root. */
static int find_libc(long pid, char *out, size_t outlen)
{
    char maps[64];
    snprintf(maps, sizeof(maps), "/proc/%ld/maps", pid);
    FILE *f = fopen(maps, "re");
    if (!f) {
        fprintf(stderr, "floor: %s: %s\n", maps, strerror(errno));
        return -1;
    }
    char line[4096];
    int found = -1;
    while (fgets(line, sizeof(line), f)) {
        char *path = strchr(line, '/');
        if (!path)
            continue;
        path[strcspn(path, "\n")] = '\0';
        const char *base = strrchr(path, '/') + 1;
        if (strncmp(base, "libc.so", 7) == 0 ||
            (strncmp(base, "libc-", 5) == 0 && strstr(base, ".so"))) {
            snprintf(out, outlen, "/proc/%ld/root%s", pid, path);
            found = 0;
            break;
        }
    }
    fclose(f);
    if (found)
        fprintf(stderr, "floor: pid %ld maps no libc\n", pid);
    return found;
}

/* Parses PROBES into probes[]; returns how many, or -1. */
static int parse_probes(const char *list, struct probe probes[MAX_PROBES])
{
    char *copy = strdup(list);
    char *save = NULL;
    int n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        struct probe p = {NULL, 0, 0};
        char *end;
        if (strcmp(tok, "malloc") == 0) {
            p.func = "malloc";
        } else if (strcmp(tok, "malloc_ret") == 0) {
            p.func = "malloc";
            p.retprobe = 1;
        } else if (strcmp(tok, "free") == 0) {
            p.func = "free";
        } else if (strncmp(tok, "free+", 5) == 0 && tok[5] &&
                   (p.offset = strtoul(tok + 5, &end, 0), *end == '\0')) {
            p.func = "free";
        } else {
            fprintf(stderr, "floor: unknown probe \"%s\" (malloc, free, malloc_ret, free+OFFSET)\n",
                    tok);
            n = -1;
            break;
        }
        if (n == MAX_PROBES) {
            fprintf(stderr, "floor: at most %d probes\n", MAX_PROBES);
            n = -1;
            break;
        }
        probes[n++] = p;
    }
    free(copy);
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s PID [malloc,free,malloc_ret,free+OFFSET]\n", argv[0]);
        return 2;
    }
    char *end;
    long pid = strtol(argv[1], &end, 10);
    if (*end || pid <= 0) {
        fprintf(stderr, "floor: bad pid \"%s\"\n", argv[1]);
        return 2;
    }
    struct probe probes[MAX_PROBES];
    int nprobes = parse_probes(argc == 3 ? argv[2] : "malloc,free,malloc_ret", probes);
    if (nprobes <= 0)
        return 2;

    /* Block the stop signals before anything can arrive; sigtimedwait takes them below. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigprocmask(SIG_BLOCK, &stop, NULL);

    char libc[4200];
    if (find_libc(pid, libc, sizeof(libc)))
        return 1;

    struct empty_bpf *skel = empty_bpf__open_and_load();
    if (!skel) {
        fprintf(stderr, "floor: loading the BPF object: %s\n", strerror(errno));
        return 1;
    }
    struct bpf_link *links[MAX_PROBES] = {0};
    int rc = 0;
    for (int i = 0; i < nprobes; i++) {
        const struct probe *p = &probes[i];
        /* With func_name, the offset argument is relative to the function. */
        LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = p->func, .retprobe = p->retprobe);
        links[i] = bpf_program__attach_uprobe_opts(program_for(skel, p), (pid_t)pid, libc,
                                                   p->offset, &opts);
        if (!links[i]) {
            fprintf(stderr, "floor: attaching %s to %s+%zu in %s: %s\n",
                    p->retprobe ? "uretprobe" : "uprobe", p->func, p->offset, libc,
                    strerror(errno));
            rc = 1;
            goto out;
        }
    }
    printf("attached %d probes to %s for pid %ld\n", nprobes, libc, pid);
    fflush(stdout);

    for (;;) {
        struct timespec tick = {0, 200 * 1000000L};
        int sig = sigtimedwait(&stop, NULL, &tick);
        if (sig > 0)
            break;
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
            break;
    }
out:
    for (int i = 0; i < nprobes; i++)
        bpf_link__destroy(links[i]);
    empty_bpf__destroy(skel);
    return rc;
}
