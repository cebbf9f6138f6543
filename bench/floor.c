/* floor: attach empty BPF programs (bench/empty.bpf.c) to malloc and free in one process's
 * libc, the overhead floor any uprobe-based tracker pays, then wait to be stopped.
 *
 *   floor PID [PROBES]
 *
 * PROBES is a comma-separated list of malloc (entry uprobe), free (entry uprobe), malloc_ret
 * (uretprobe on malloc) and free+OFFSET (entry-only uprobe OFFSET bytes into free, e.g. free+9
 * past glibc's `test %rdi,%rdi; je`); the default is malloc,free,malloc_ret. Probes written
 * s:malloc and s:free+OFFSET go into one session-uprobe link (6.13+), as leakwatchd's default
 * probe mode places them: malloc's entry and return, free's entry only (its entry returns 1,
 * which skips the return). The libc is the
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

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gelf.h>
#include <linux/bpf.h>
#include <sys/syscall.h>

#include "empty.skel.h"

/* One probe to attach: PROBES names them malloc, free, malloc_ret, or free+OFFSET for an entry
 * probe OFFSET bytes into free (past the instruction the kernel would single-step). */
struct probe {
    const char *func; /* libc symbol */
    size_t offset;    /* from the symbol */
    int retprobe;
    int session; /* in the one session link: entry and return (malloc), entry only (free) */
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
        struct probe p = {NULL, 0, 0, 0};
        char *end;
        if (strncmp(tok, "s:", 2) == 0) {
            p.session = 1;
            tok += 2;
        }
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
            fprintf(stderr, "floor: unknown probe \"%s\" (malloc, free, malloc_ret, free+OFFSET, s:...)\n",
                    tok);
            n = -1;
            break;
        }
        if (n == MAX_PROBES) {
            fprintf(stderr, "floor: at most %d probes\n", MAX_PROBES);
            n = -1;
            break;
        }
        if (p.session && p.retprobe) {
            fprintf(stderr, "floor: s:%s: a session probe has its return already\n", tok);
            n = -1;
            break;
        }
        probes[n++] = p;
    }
    free(copy);
    return n;
}

/* The file offset of a function of an ELF file (its .dynsym or .symtab value, through the
 * loadable segment that holds it), or -1. */
static long func_file_offset(const char *path, const char *func)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    elf_version(EV_CURRENT);
    Elf *elf = elf_begin(fd, ELF_C_READ, NULL);
    long found = -1;
    GElf_Addr value = 0;
    for (Elf_Scn *scn = NULL; elf && !value && (scn = elf_nextscn(elf, scn));) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh) || (sh.sh_type != SHT_DYNSYM && sh.sh_type != SHT_SYMTAB))
            continue;
        Elf_Data *data = elf_getdata(scn, NULL);
        for (size_t i = 0; data && sh.sh_entsize && i < sh.sh_size / sh.sh_entsize; i++) {
            GElf_Sym sym;
            const char *name;
            if (gelf_getsym(data, (int)i, &sym) && GELF_ST_TYPE(sym.st_info) == STT_FUNC &&
                sym.st_value && (name = elf_strptr(elf, sh.sh_link, sym.st_name)) &&
                strcmp(name, func) == 0) {
                value = sym.st_value;
                break;
            }
        }
    }
    size_t nph = 0;
    if (value && elf_getphdrnum(elf, &nph) == 0) {
        for (size_t i = 0; i < nph; i++) {
            GElf_Phdr ph;
            if (gelf_getphdr(elf, (int)i, &ph) && ph.p_type == PT_LOAD && value >= ph.p_vaddr &&
                value < ph.p_vaddr + ph.p_filesz) {
                found = (long)(value - ph.p_vaddr + ph.p_offset);
                break;
            }
        }
    }
    if (elf)
        elf_end(elf);
    close(fd);
    return found;
}

/* One session-uprobe link for the probes marked session (the libbpf of Debian 12 predates
 * session links: created with the bpf system call, as leakwatchd does), or -1. */
static int attach_session(int prog_fd, const char *libc, long pid, const struct probe *probes,
                          int nprobes)
{
    __u64 offsets[MAX_PROBES], cookies[MAX_PROBES];
    __u32 cnt = 0;
    for (int i = 0; i < nprobes; i++) {
        if (!probes[i].session)
            continue;
        long off = func_file_offset(libc, probes[i].func);
        if (off < 0) {
            fprintf(stderr, "floor: %s not found in %s\n", probes[i].func, libc);
            return -1;
        }
        offsets[cnt] = (__u64)off + probes[i].offset;
        cookies[cnt++] = strcmp(probes[i].func, "free") == 0; /* 1: skip the return */
    }
    /* BPF_LINK_CREATE's uprobe_multi arguments (Linux 6.6+; Debian 12's headers are 6.1's). */
    union {
        struct {
            __u32 prog_fd, target_fd, attach_type, flags;
            __u64 path, offsets, ref_ctr_offsets, cookies;
            __u32 cnt, multi_flags, pid;
        } a;
        unsigned char bytes[128];
    } attr;
    memset(&attr, 0, sizeof(attr));
    attr.a.prog_fd = (__u32)prog_fd;
    attr.a.attach_type = 57; /* BPF_TRACE_UPROBE_SESSION */
    attr.a.path = (__u64)(unsigned long)libc;
    attr.a.offsets = (__u64)(unsigned long)offsets;
    attr.a.cookies = (__u64)(unsigned long)cookies;
    attr.a.cnt = cnt;
    attr.a.pid = (__u32)pid;
    return (int)syscall(__NR_bpf, BPF_LINK_CREATE, &attr, sizeof(attr));
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s PID [[s:]malloc,[s:]free[+OFFSET],malloc_ret]\n", argv[0]);
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

    int sessions = 0;
    for (int i = 0; i < nprobes; i++)
        sessions += probes[i].session;
    struct empty_bpf *skel = empty_bpf__open();
    if (skel) {
        bpf_program__set_autoload(skel->progs.empty_session, sessions > 0);
        bpf_program__set_expected_attach_type(skel->progs.empty_session, 57);
    }
    if (!skel || empty_bpf__load(skel)) {
        fprintf(stderr, "floor: loading the BPF object: %s\n", strerror(errno));
        empty_bpf__destroy(skel);
        return 1;
    }
    struct bpf_link *links[MAX_PROBES] = {0};
    int rc = 0, session_fd = -1;
    if (sessions) {
        session_fd =
            attach_session(bpf_program__fd(skel->progs.empty_session), libc, pid, probes, nprobes);
        if (session_fd < 0) {
            fprintf(stderr, "floor: session uprobe link in %s: %s\n", libc, strerror(errno));
            rc = 1;
            goto out;
        }
    }
    for (int i = 0; i < nprobes; i++) {
        const struct probe *p = &probes[i];
        if (p->session)
            continue;
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
    if (session_fd >= 0)
        close(session_fd);
    for (int i = 0; i < nprobes; i++)
        bpf_link__destroy(links[i]);
    empty_bpf__destroy(skel);
    return rc;
}
