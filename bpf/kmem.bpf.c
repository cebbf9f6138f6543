// SPDX-License-Identifier: GPL-2.0
/* Kernel allocation tracking: kmalloc, kmem_cache, page and percpu tracepoints (raw, so no
 * tracefs is needed), live allocations keyed by address, outstanding totals per (process,
 * kind, stack) kept with atomic updates. Adapts to the kernel with CO-RE: the daemon switches
 * off the programs of tracepoints a kernel lacks (the *_node ones exist only before 6.1), and
 * argument layouts that changed are told apart by the trace event types. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "leakwatch.h"
#include "stackhash.h"
#include "pidns.bpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u64 min_size = 0;
const volatile __u64 max_size = ~0ULL;
const volatile __u32 page_size = 4096;
const volatile __u32 nr_cpus = 1;
/* Pages the kernel may move (user memory, page cache) are not kernel allocations a leak
 * hunter wants; __GFP_MOVABLE is bit 3 on every kernel since 4.x. */
const volatile bool include_movable = false;
#define LW_GFP_MOVABLE 0x08u

/* Module loads and unloads since the object was loaded (module_load, module_free), stored in
 * every new kernel stack (lw_kstack.modules); the daemon reads it with the symbols. */
__u32 module_generation = 0;

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 262144);
    __type(key, struct lw_kkey);
    __type(value, struct lw_kalloc);
} klive SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct lw_ktotals_key);
    __type(value, struct lw_totals);
} ktotals SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, struct lw_kstack);
} kstacks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, LW_LOST_MAX);
    __type(key, __u32);
    __type(value, __u64);
} klost SEC(".maps");

/* A stack is walked into a per-CPU scratch, but a kmem program can be interrupted on its CPU
 * (an interrupt that allocates) or, where tracepoints run with preemption on (7.2), switched out
 * for another task that allocates: the other run would overwrite the frames half-way. So each
 * capture marks the slot with a token of its own and checks it is still there after hashing and
 * after storing; slots picked by thread id keep two tasks apart most of the time. */
#define LW_KSCRATCH_SLOTS 4
/* A read the compiler must do where it is written: another run may have changed the value. */
#define LW_READ_ONCE(x) (*(volatile typeof(x) *)&(x))
struct lw_kscratch {
    __u64 owner;
    struct lw_kstack s;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, LW_KSCRATCH_SLOTS);
    __type(key, __u32);
    __type(value, struct lw_kscratch);
} kstack_scratch SEC(".maps");

/* Written by the daemon: everything, or (kernel.tracking: escalate) what it escalated. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct lw_kfilter);
} kfilter SEC(".maps");

static __always_inline void count_lost(__u32 reason)
{
    __u64 *n = bpf_map_lookup_elem(&klost, &reason);
    if (n)
        *n += 1;
}

/* The whole kernel stack (up to kernel.perf_event_max_stack frames, 127 by default), stored
 * once under a hash of its frames. 0 when it could not be captured whole. */
static __always_inline __u64 capture_kstack(void *ctx)
{
    __u32 slot = (__u32)bpf_get_current_pid_tgid() & (LW_KSCRATCH_SLOTS - 1);
    struct lw_kscratch *sc = bpf_map_lookup_elem(&kstack_scratch, &slot);
    if (!sc)
        return 0;
    __u64 me = ((__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32()) | 1;
    sc->owner = me;
    struct lw_kstack *s = &sc->s;
    long n = bpf_get_stack(ctx, s->ips, sizeof(s->ips), 0);
    if (n <= 0) {
        count_lost(LW_LOST_K_STACK_FAILED);
        return 0;
    }
    s->nr = n / sizeof(__u64);
    s->modules = module_generation;
    __u64 h = stack_hash(0x9e3779b97f4a7c15ULL, s->ips, s->nr);
    if (LW_READ_ONCE(sc->owner) != me) { /* another run wrote the slot meanwhile */
        count_lost(LW_LOST_K_STACK_FAILED);
        return 0;
    }
    if (!bpf_map_lookup_elem(&kstacks, &h)) {
        long err = bpf_map_update_elem(&kstacks, &h, s, BPF_NOEXIST);
        if (err && err != -17 /* EEXIST */)
            count_lost(LW_LOST_K_STACKS_FULL);
        if (!err && LW_READ_ONCE(sc->owner) != me) {
            /* overwritten between the check and the copy: what was stored is not h's frames */
            bpf_map_delete_elem(&kstacks, &h);
            count_lost(LW_LOST_K_STACK_FAILED);
            return 0;
        }
    }
    return h;
}

#define LW_PF_KTHREAD 0x00200000u

static __always_inline void attribution(__u32 *tgid, __u64 *start)
{
    /* Interrupt context is told apart by the daemon, from the stack's interrupt entry frames:
     * the preempt count that says it is not readable from BPF on every kernel. */
    *tgid = 0;
    *start = 0;
    struct task_struct *t = (struct task_struct *)bpf_get_current_task();
    if (BPF_CORE_READ(t, flags) & LW_PF_KTHREAD)
        return; /* kworkers and other kernel threads act for no process */
    *tgid = current_pid_tgid() >> 32; /* 0 outside the daemon's pid namespace: no process */
    if (*tgid)
        *start = BPF_CORE_READ(t, group_leader, start_boottime);
}

static __always_inline void account(const struct lw_kalloc *a, __s64 sign)
{
    struct lw_ktotals_key tk = {.tgid = a->tgid, .kind = a->kind, .start = a->start,
                                .stack = a->stack};
    struct lw_totals *t = bpf_map_lookup_elem(&ktotals, &tk);
    if (!t) {
        if (sign < 0)
            return;
        struct lw_totals zero = {};
        bpf_map_update_elem(&ktotals, &tk, &zero, BPF_NOEXIST);
        t = bpf_map_lookup_elem(&ktotals, &tk);
        if (!t) {
            count_lost(LW_LOST_K_TOTALS_FULL);
            return;
        }
    }
    __sync_fetch_and_add(&t->bytes, sign * (__s64)a->size);
    __sync_fetch_and_add(&t->count, sign);
}

/* Every kmem tracepoint has two programs, attached in this order (a tracepoint calls its
 * callbacks of equal priority in the order they were registered): the kernel skips a program's
 * run when that program is already active on the CPU, and a second program has a count of its
 * own, so it is active then only when it was itself interrupted or preempted. The backup does
 * the work only when the first did not: for a free, the first deleted the record; for an
 * allocation, the first's record of this very event is younger than LW_BACKUP_SEEN_NS. */
#define LW_BACKUP_SEEN_NS 5000000ULL

static __always_inline int kfree_addr(__u32 space, __u64 addr, bool backup)
{
    if (addr < 4096) /* NULL, ZERO_SIZE_PTR */
        return 0;
    struct lw_kkey key = {.addr = addr, .space = space};
    struct lw_kalloc *found = bpf_map_lookup_elem(&klive, &key);
    if (!found) {
        if (!backup) /* the backup's not-found is the first's delete */
            count_lost(LW_LOST_K_UNKNOWN_FREE);
        return 0;
    }
    struct lw_kalloc a = *found;
    if (bpf_map_delete_elem(&klive, &key) == 0)
        account(&a, -1);
    return 0;
}

/* Whether an allocation of this kind and size is recorded now. */
static __always_inline bool wanted(__u32 kind, __u64 size)
{
    __u32 zero = 0;
    struct lw_kfilter *f = bpf_map_lookup_elem(&kfilter, &zero);
    if (!f || !(f->kinds & (1u << (kind & 31))))
        return false;
    if ((kind != LW_K_KMALLOC && kind != LW_K_KMEM_CACHE) || !f->nsizes)
        return true;
    for (int i = 0; i < LW_KFILTER_SIZES; i++) {
        if ((__u32)i >= f->nsizes)
            break;
        if (f->sizes[i] == size)
            return true;
    }
    return false;
}

static __always_inline int kalloc(void *ctx, __u32 space, __u32 kind, __u64 addr, __u64 size,
                                  bool backup)
{
    if (addr < 4096 || size < min_size || size > max_size || !wanted(kind, size))
        return 0;
    struct lw_kkey key = {.addr = addr, .space = space};
    struct lw_kalloc *old = bpf_map_lookup_elem(&klive, &key);
    if (old && backup && old->kind == kind &&
        bpf_ktime_get_ns() - LW_READ_ONCE(old->ts_ns) < LW_BACKUP_SEEN_NS)
        return 0; /* the first program recorded it */
    if (old) {
        /* the free of the previous object here was not seen: replace it */
        struct lw_kalloc prev = *old;
        count_lost(LW_LOST_K_MISSED_FREE);
        if (bpf_map_delete_elem(&klive, &key) == 0)
            account(&prev, -1);
    }
    struct lw_kalloc a = {.size = size, .ts_ns = bpf_ktime_get_ns(), .kind = kind};
    attribution(&a.tgid, &a.start);
    a.stack = capture_kstack(ctx);
    if (bpf_map_update_elem(&klive, &key, &a, BPF_ANY)) {
        count_lost(LW_LOST_K_LIVE_FULL);
        return 0;
    }
    account(&a, 1);
    return 0;
}

/* Raw tracepoint arguments, each widened to 64 bits, as BPF_PROG would name them. */
#define LW_ARG(i) (((__u64 *)ctx)[i])

/* The two programs of a tracepoint: the first, and its backup (see LW_BACKUP_SEEN_NS). */
#define LW_KMEM_PROGS(tp, handler)                                                             \
    SEC("raw_tp/" #tp)                                                                         \
    int tp(__u64 *ctx)                                                                         \
    {                                                                                          \
        return handler(ctx, false);                                                            \
    }                                                                                          \
    SEC("raw_tp/" #tp)                                                                         \
    int tp##_backup(__u64 *ctx)                                                                \
    {                                                                                          \
        return handler(ctx, true);                                                             \
    }

/* kmalloc(call_site, ptr, bytes_req, bytes_alloc, gfp[, node]): ptr and bytes_alloc sit at
 * the same places in 5.10's kmem_alloc layout and in 6.x's; so do kmalloc_node's. */
static __always_inline int on_kmalloc(__u64 *ctx, bool backup)
{
    return kalloc(ctx, LW_KS_SLAB, LW_K_KMALLOC, LW_ARG(1), LW_ARG(3), backup);
}
LW_KMEM_PROGS(kmalloc, on_kmalloc)
LW_KMEM_PROGS(kmalloc_node, on_kmalloc)

/* 6.1+: kmem_cache_alloc(call_site, ptr, struct kmem_cache *s, gfp, node), size from s;
 * before: kmem_cache_alloc(call_site, ptr, bytes_req, bytes_alloc, gfp). */
static __always_inline int on_kmem_cache_alloc(__u64 *ctx, bool backup)
{
    __u64 size;
    if (bpf_core_type_exists(struct trace_event_raw_kmem_cache_alloc))
        size = BPF_CORE_READ((struct kmem_cache *)LW_ARG(2), size);
    else
        size = LW_ARG(3);
    return kalloc(ctx, LW_KS_SLAB, LW_K_KMEM_CACHE, LW_ARG(1), size, backup);
}
LW_KMEM_PROGS(kmem_cache_alloc, on_kmem_cache_alloc)

static __always_inline int on_kmem_cache_alloc_node(__u64 *ctx, bool backup)
{
    return kalloc(ctx, LW_KS_SLAB, LW_K_KMEM_CACHE, LW_ARG(1), LW_ARG(3), backup);
}
LW_KMEM_PROGS(kmem_cache_alloc_node, on_kmem_cache_alloc_node)

/* kfree(call_site, ptr), kmem_cache_free(call_site, ptr[, name]) */
static __always_inline int on_slab_free(__u64 *ctx, bool backup)
{
    return kfree_addr(LW_KS_SLAB, LW_ARG(1), backup);
}
LW_KMEM_PROGS(kfree, on_slab_free)
LW_KMEM_PROGS(kmem_cache_free, on_slab_free)

/* mm_page_alloc(page, order, gfp, migratetype) */
static __always_inline int on_page_alloc(__u64 *ctx, bool backup)
{
    if (!include_movable && ((__u32)LW_ARG(2) & LW_GFP_MOVABLE))
        return 0;
    return kalloc(ctx, LW_KS_PAGE, LW_K_PAGE, LW_ARG(0),
                  (__u64)page_size << ((__u32)LW_ARG(1) & 31), backup);
}
LW_KMEM_PROGS(mm_page_alloc, on_page_alloc)

/* mm_page_free(page, order), mm_page_free_batched(page) */
static __always_inline int on_page_free(__u64 *ctx, bool backup)
{
    return kfree_addr(LW_KS_PAGE, LW_ARG(0), backup);
}
LW_KMEM_PROGS(mm_page_free, on_page_free)
LW_KMEM_PROGS(mm_page_free_batched, on_page_free)

/* 6.2+ (and Debian's 6.1): (call_site, reserved, is_atomic, size, align, base_addr, off, ptr,
 * bytes_alloc, gfp); before: (reserved, is_atomic, size, align, base_addr, off, ptr). The memory
 * taken is `size` bytes on every possible CPU. bytes_alloc is not used: it adds what memory
 * cgroups charge for the chunk's per-object vector (two pointers per 4 bytes: 3x the size on one
 * CPU), a vector allocated once per chunk, not per allocation. */
static __always_inline int on_percpu_alloc(__u64 *ctx, bool backup)
{
    __u64 ptr, size;
    /* The barriers keep each branch's reads in it: merged into one read at a chosen offset, the
     * verifier refuses them (a modified context pointer), and each layout's offsets are valid
     * only for its own tracepoint. */
    if (bpf_core_field_exists(struct trace_event_raw_percpu_alloc_percpu, bytes_alloc)) {
        ptr = ctx[7];
        size = ctx[3];
        barrier_var(ptr);
        barrier_var(size);
    } else {
        ptr = ctx[6];
        size = ctx[2];
        barrier_var(ptr);
        barrier_var(size);
    }
    return kalloc(ctx, LW_KS_PERCPU, LW_K_PERCPU, ptr, size * nr_cpus, backup);
}
LW_KMEM_PROGS(percpu_alloc_percpu, on_percpu_alloc)

/* percpu_free_percpu(base_addr, off, ptr) */
static __always_inline int on_percpu_free(__u64 *ctx, bool backup)
{
    return kfree_addr(LW_KS_PERCPU, LW_ARG(2), backup);
}
LW_KMEM_PROGS(percpu_free_percpu, on_percpu_free)

/* A module's code can only run between these two: its load is counted before its init runs,
 * its unload after its exit function. */
SEC("raw_tp/module_load")
int module_load(void *ctx)
{
    __sync_fetch_and_add(&module_generation, 1);
    return 0;
}

SEC("raw_tp/module_free")
int module_free(void *ctx)
{
    __sync_fetch_and_add(&module_generation, 1);
    return 0;
}
