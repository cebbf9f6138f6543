// SPDX-License-Identifier: GPL-2.0
/*
 * lw_kleak: a kernel module that leaks on purpose, the ground truth of the kernel matrix's module
 * check (tests/matrix). A work item allocates `count` objects of each kind, `per_tick` of each
 * every `interval_ms`, each kind from a function of its own:
 *
 *   lwk_leak_kmalloc  kmalloc(kmalloc_size)
 *   lwk_leak_cache    kmem_cache_alloc from the module's own cache of cache_size-byte objects
 *   lwk_leak_pages    alloc_pages(page_order)
 *   lwk_leak_percpu   alloc_percpu of percpu_size bytes on every possible CPU
 *
 * Every `free_every`-th object is freed again at the next tick: a known share that must not count.
 * The rest are never freed, not even when the module is unloaded. What stays allocated is reported
 * in /sys/module/lw_kleak/parameters/leaked_<kind>_bytes and leaked_<kind>_count, in the sizes the
 * allocators hand out (ksize, the cache's object size, whole pages, the per-CPU size times the
 * possible CPUs); `done` turns Y when every allocation and free is made. Writing 1 to `stop` ends
 * the leak early (at the next tick), for a check that lets it run until it has seen enough.
 *
 * When each tick ran, for a check that compares what was leaked after a given moment (the kernel
 * matrix's escalation check): `loaded_at_ns` is the load's CLOCK_REALTIME, and `ticks` has one
 * line per tick that allocated, "<ms after loaded_at_ns> <objects kept of each kind so far>"
 * (every kind keeps the same number: each tick makes one of each kind per step). The first
 * LWK_MAX_TICKS ticks are listed; `tick_max_us` is the longest a tick took.
 *
 * Work items run in a kworker (process context, so GFP_KERNEL and alloc_percpu may sleep), and
 * their allocations are charged to no process.
 */
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/percpu.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>
#include <linux/workqueue.h>

#define LWK_MAX_PER_TICK 64
/* Lines of "ms kept\n" that fit a parameter's page: at most 13 bytes each up to 1000 s. */
#define LWK_MAX_TICKS 300

static unsigned int count = 400;
module_param(count, uint, 0444);
MODULE_PARM_DESC(count, "objects to allocate of each kind");
static unsigned int per_tick = 8;
module_param(per_tick, uint, 0444);
MODULE_PARM_DESC(per_tick, "objects of each kind per tick (at most 64)");
static unsigned int interval_ms = 20;
module_param(interval_ms, uint, 0444);
MODULE_PARM_DESC(interval_ms, "time between ticks");
static unsigned int free_every = 4;
module_param(free_every, uint, 0444);
MODULE_PARM_DESC(free_every, "every Nth object of a kind is freed at the next tick (0: none)");
static unsigned int kmalloc_size = 1024;
module_param(kmalloc_size, uint, 0444);
static unsigned int cache_size = 256;
module_param(cache_size, uint, 0444);
static unsigned int page_order = 1;
module_param(page_order, uint, 0444);
static unsigned int percpu_size = 64;
module_param(percpu_size, uint, 0444);
static char *cache_name = "lw_kleak";
module_param(cache_name, charp, 0444);
MODULE_PARM_DESC(cache_name, "the cache's name (a cache left by an earlier load keeps its own)");

/* What the module holds and will never free; read-only for everyone else. */
static unsigned long leaked_kmalloc_bytes, leaked_kmalloc_count;
static unsigned long leaked_kmem_cache_bytes, leaked_kmem_cache_count;
static unsigned long leaked_page_bytes, leaked_page_count;
static unsigned long leaked_percpu_bytes, leaked_percpu_count;
module_param(leaked_kmalloc_bytes, ulong, 0444);
module_param(leaked_kmalloc_count, ulong, 0444);
module_param(leaked_kmem_cache_bytes, ulong, 0444);
module_param(leaked_kmem_cache_count, ulong, 0444);
module_param(leaked_page_bytes, ulong, 0444);
module_param(leaked_page_count, ulong, 0444);
module_param(leaked_percpu_bytes, ulong, 0444);
module_param(leaked_percpu_count, ulong, 0444);
static unsigned long freed;
module_param(freed, ulong, 0444);
MODULE_PARM_DESC(freed, "objects freed again, all kinds");
static bool done;
module_param(done, bool, 0444);
static bool stop;
module_param(stop, bool, 0644);
MODULE_PARM_DESC(stop, "write 1 to stop leaking at the next tick");
static unsigned long loaded_at_ns;
module_param(loaded_at_ns, ulong, 0444);
static unsigned long tick_max_us;
module_param(tick_max_us, ulong, 0444);

static struct {
    u32 ms;    /* after loaded_at_ns */
    u32 kept;  /* objects kept of each kind after the tick */
} ticks_seen[LWK_MAX_TICKS];
static unsigned int ticks_recorded;

static int lwk_ticks_get(char *buf, const struct kernel_param *kp)
{
    unsigned int i, n = smp_load_acquire(&ticks_recorded);
    int len = 0;

    for (i = 0; i < n; i++)
        len += scnprintf(buf + len, PAGE_SIZE - len, "%u %u\n", ticks_seen[i].ms,
                         ticks_seen[i].kept);
    return len;
}

static int lwk_ticks_set(const char *val, const struct kernel_param *kp)
{
    return -EPERM;
}

static const struct kernel_param_ops lwk_ticks_ops = {
    .set = lwk_ticks_set,
    .get = lwk_ticks_get,
};
module_param_cb(ticks, &lwk_ticks_ops, NULL, 0444);
MODULE_PARM_DESC(ticks, "per tick that allocated: ms after loaded_at_ns, objects kept so far");

static struct kmem_cache *lwk_cache;
static unsigned int made;

/* Objects to free at the next tick. */
static struct {
    void *kmalloc[LWK_MAX_PER_TICK];
    void *cache[LWK_MAX_PER_TICK];
    struct page *pages[LWK_MAX_PER_TICK];
    void __percpu *percpu[LWK_MAX_PER_TICK];
    unsigned int n;
} to_free;

/* noinline, and each does something after its allocation: the function stays a frame of its
 * own in the stack, not inlined into the tick or turned into a tail call. */
static noinline bool lwk_leak_kmalloc(bool keep)
{
    void *p = kmalloc(kmalloc_size, GFP_KERNEL);
    if (!p)
        return false;
    if (keep) {
        leaked_kmalloc_bytes += ksize(p);
        leaked_kmalloc_count++;
    } else {
        to_free.kmalloc[to_free.n] = p;
    }
    return true;
}

static noinline bool lwk_leak_cache(bool keep)
{
    void *p = kmem_cache_alloc(lwk_cache, GFP_KERNEL);
    if (!p)
        return false;
    if (keep) {
        leaked_kmem_cache_bytes += kmem_cache_size(lwk_cache);
        leaked_kmem_cache_count++;
    } else {
        to_free.cache[to_free.n] = p;
    }
    return true;
}

static noinline bool lwk_leak_pages(bool keep)
{
    struct page *page = alloc_pages(GFP_KERNEL, page_order);
    if (!page)
        return false;
    if (keep) {
        leaked_page_bytes += PAGE_SIZE << page_order;
        leaked_page_count++;
    } else {
        to_free.pages[to_free.n] = page;
    }
    return true;
}

static noinline bool lwk_leak_percpu(bool keep)
{
    void __percpu *p = __alloc_percpu(percpu_size, sizeof(long));
    if (!p)
        return false;
    if (keep) {
        leaked_percpu_bytes += (unsigned long)percpu_size * num_possible_cpus();
        leaked_percpu_count++;
    } else {
        to_free.percpu[to_free.n] = p;
    }
    return true;
}

static void lwk_free_held(void)
{
    unsigned int i;

    for (i = 0; i < to_free.n; i++) {
        kfree(to_free.kmalloc[i]);
        kmem_cache_free(lwk_cache, to_free.cache[i]);
        __free_pages(to_free.pages[i], page_order);
        free_percpu(to_free.percpu[i]);
        freed += 4;
    }
    to_free.n = 0;
}

static void lwk_tick(struct work_struct *work);
static DECLARE_DELAYED_WORK(lwk_work, lwk_tick);

/* The tick's start, and the objects kept of each kind once it is done. */
static void lwk_record_tick(u64 start_ns)
{
    u64 took_us = (ktime_get_real_ns() - start_ns) / NSEC_PER_USEC;
    unsigned int n = ticks_recorded;

    if (took_us > tick_max_us)
        tick_max_us = took_us;
    if (n == LWK_MAX_TICKS)
        return;
    ticks_seen[n].ms = (u32)((start_ns - loaded_at_ns) / NSEC_PER_MSEC);
    ticks_seen[n].kept = (u32)leaked_kmalloc_count;
    smp_store_release(&ticks_recorded, n + 1);
}

static void lwk_tick(struct work_struct *work)
{
    bool go_on = !READ_ONCE(stop);
    u64 start_ns;
    unsigned int i;

    lwk_free_held();
    start_ns = ktime_get_real_ns();
    for (i = 0; go_on && i < per_tick && made < count; i++, made++) {
        bool keep = free_every == 0 || (made + 1) % free_every != 0;

        /* A kind that fails to allocate stops the module: the truth must stay exact. */
        if (!lwk_leak_kmalloc(keep) || !lwk_leak_cache(keep) || !lwk_leak_pages(keep) ||
            !lwk_leak_percpu(keep)) {
            pr_err("lw_kleak: allocation %u failed; stopping\n", made);
            return;
        }
        if (!keep)
            to_free.n++;
    }
    if (i)
        lwk_record_tick(start_ns);
    if ((go_on && made < count) || to_free.n) {
        schedule_delayed_work(&lwk_work, msecs_to_jiffies(interval_ms));
        return;
    }
    done = true;
    pr_info("lw_kleak: done: %u objects of each kind, %lu freed\n", made, freed);
}

static int __init lwk_init(void)
{
    if (per_tick == 0 || per_tick > LWK_MAX_PER_TICK || kmalloc_size == 0 || cache_size == 0 ||
        percpu_size == 0 || page_order > 4)
        return -EINVAL;
    /* SLAB_NOLEAKTRACE (kmemleak skips it) keeps the cache from being merged into another of
     * the same size: it stays a cache of its own, under its own name in /proc/slabinfo. */
    lwk_cache = kmem_cache_create(cache_name, cache_size, 0, SLAB_NOLEAKTRACE, NULL);
    if (!lwk_cache)
        return -ENOMEM;
    loaded_at_ns = ktime_get_real_ns();
    schedule_delayed_work(&lwk_work, 0);
    return 0;
}

static void __exit lwk_exit(void)
{
    cancel_delayed_work_sync(&lwk_work);
    lwk_free_held();
    /* A cache that still holds objects cannot be destroyed (the kernel would warn and keep it):
     * the leaked objects and their cache outlive the module, as they would a buggy driver. */
    if (!leaked_kmem_cache_count)
        kmem_cache_destroy(lwk_cache);
}

module_init(lwk_init);
module_exit(lwk_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Leaks kmalloc, kmem_cache, page and percpu memory on purpose (leakwatch tests)");
