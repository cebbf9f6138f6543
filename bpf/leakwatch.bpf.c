// SPDX-License-Identifier: GPL-2.0
/* User-space allocation tracking: uprobes on the allocator functions of watched processes,
 * live allocations keyed by (tgid, address), outstanding totals per (tgid, stack) and per
 * process kept with atomic updates, and exec/fork/exit events for the process tracker. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "leakwatch.h"
#include "stackhash.h"
#include "pidns.bpf.h"
#include "sampling.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u64 page_size = 4096;
/* exp(-k / LW_EXP_STEPS) * 2^32, for sampling probabilities; filled by the daemon. */
const volatile __u64 exp_neg[LW_EXP_TABLE] = {};
/* Entries of `stacks` and of `stack_totals` one process may hold (limits.process_share of
 * each map); 0: no bound. Checked before an add, without a lock: concurrent CPUs may take
 * one entry each beyond it. */
const volatile __u32 process_stacks_max = 0;
const volatile __u32 process_totals_max = 0;


/* Sizes are set by the daemon from `limits` before load. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, struct lw_proc_cfg);
} watched SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, struct lw_proc_totals);
} procs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 262144);
    __type(key, struct lw_key);
    __type(value, struct lw_alloc);
} live SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct lw_key);
    __type(value, struct lw_stack_totals);
} stack_totals SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, struct lw_key);
    __type(value, struct lw_stack);
} stacks SEC(".maps");

/* Per thread: its outermost allocator call in flight, and its last large free (leakwatch.h).
 * In task-local storage where the kernel has it (5.11+; `task_storage`, set by the daemon): a
 * lookup is a pointer in the task rather than a hash and a bucket walk, and the kernel frees it
 * with the thread. Made at a thread's first allocator call. Older kernels keep the records in a
 * hash map by thread id (limits.threads entries), deleted when the thread exits. */
const volatile bool task_storage = false;

struct {
    __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct lw_thread);
} threads SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, struct lw_thread);
} thread_records SEC(".maps");

static const struct lw_thread no_thread = {};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, LW_LOST_MAX);
    __type(key, __u32);
    __type(value, __u64);
} lost SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct lw_stack);
} stack_scratch SEC(".maps");

/* The top of the stack being walked, copied with one read (walk_stack, windowed). */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct lw_stack_window);
} stack_window SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Unwind rules per (tgid, return address), written by the daemon (leakwatch.h). Least
 * recently used out first: an evicted rule costs one more snapshot. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct lw_key);
    __type(value, struct lw_unwind_rule);
} unwind_rules SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1024 * 1024);
} snapshots SEC(".maps");

/* Snapshots being unwound, by (tgid, key of lw_snapshot): the first walk to miss a rule at
 * given frames and depth sends one; the walks that miss there before the daemon has unwound
 * it (and deleted the mark) keep their frames so far, without a snapshot of their own. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct lw_key);
    __type(value, __u8);
} snapshots_sent SEC(".maps");

/* Watch tier: the processes watched without uprobes, their page faults sampled (sample_mean:
 * bytes of first-touched memory between two samples; ranges and flags: how stacks are walked,
 * as in `watched`). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, struct lw_proc_cfg);
} watch_tier SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct lw_key);
    __type(value, struct lw_growth);
} growth_pages SEC(".maps");

/* A bit per tgid modulo LW_TIER_FILTER_BITS, set by the daemon for every process it puts in the
 * watch tier (before its entry there), cleared when no process of the tier has that bit. Every
 * page fault of the machine runs watch_fault: a bit clear ends it with an array lookup, which
 * the verifier inlines, instead of a hash of the tgid and a bucket walk in watch_tier (about 50
 * ns a fault, docs/performance.md). A bit set for another tgid only costs that lookup. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, LW_TIER_FILTER_BITS / 64);
    __type(key, __u32);
    __type(value, __u64);
} tier_filter SEC(".maps");

static __always_inline void count_lost(__u32 reason)
{
    __u64 *n = bpf_map_lookup_elem(&lost, &reason);
    if (n)
        *n += 1; /* per-CPU slot: no atomic needed */
}

/* The current thread's record; NULL when it has none (and, with `create`, when none could be
 * made: out of memory, task storage busy on this CPU, or limits.threads records in use). */
static __always_inline struct lw_thread *this_thread(bool create)
{
    if (task_storage) {
        struct task_struct *task = bpf_get_current_task_btf();
        if (create)
            return bpf_task_storage_get(&threads, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
        return bpf_task_storage_get(&threads, task, 0, 0);
    }
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    struct lw_thread *th = bpf_map_lookup_elem(&thread_records, &tid);
    if (th || !create)
        return th;
    bpf_map_update_elem(&thread_records, &tid, &no_thread, BPF_NOEXIST);
    return bpf_map_lookup_elem(&thread_records, &tid);
}

/* x86 `ret` pops the return address, so at the uretprobe sp is above the entry sp; arm64
 * returns through the link register and sp is back where it was at entry. */
#if defined(__TARGET_ARCH_x86)
#define RETURNED(sp_ret, sp_entry) ((sp_ret) > (sp_entry))
static __always_inline __u64 caller_address(struct pt_regs *ctx)
{
    __u64 ret = 0;
    bpf_probe_read_user(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
    return ret;
}
#elif defined(__TARGET_ARCH_arm64)
#define RETURNED(sp_ret, sp_entry) ((sp_ret) >= (sp_entry))
static __always_inline __u64 caller_address(struct pt_regs *ctx)
{
    return PT_REGS_RET(ctx);
}
#else
#error "unsupported architecture"
#endif

/* Whether a process holds its share of a map (its count in its totals record). */
static __always_inline bool at_share(__s64 held, __u32 max)
{
    return max && held >= (__s64)max;
}

/* Stores a stack under `key` unless it is there already, or its process holds its share of
 * the map (its allocations from there are then counted under stack id 0, and as lost, by
 * record_alloc). */
static __always_inline void store_stack(struct lw_key *key, struct lw_stack *s)
{
    if (!bpf_map_lookup_elem(&stacks, key)) {
        struct lw_proc_totals *p = bpf_map_lookup_elem(&procs, &key->tgid);
        if (p && at_share(p->stacks, process_stacks_max))
            return;
        long err = bpf_map_update_elem(&stacks, key, s, BPF_NOEXIST);
        if (err == 0 && p)
            __sync_fetch_and_add(&p->stacks, 1);
        else if (err && err != -17 /* EEXIST: another CPU stored it */)
            count_lost(LW_LOST_STACKS_FULL);
    }
}

#if defined(__TARGET_ARCH_x86)
/* ---- Python frames (leakwatch.h, lw_py_cfg) ---- */

static __always_inline __u64 read_user_u64(__u64 addr)
{
    __u64 v = 0;
    bpf_probe_read_user(&v, sizeof(v), (void *)addr);
    return v;
}

/* The Python frames of the current thread into the stack scratch's py (none when the process
 * runs no CPython the daemon knows, or this thread runs no Python). A frame that cannot be read
 * ends the walk. A global function: the verifier checks it once, on its own, rather than in
 * every path of each program that records a stack (inlined, it took them past the verifier's
 * budget). */
__attribute__((noinline)) int read_python(__u32 tgid)
{
    __u32 zero = 0;
    struct lw_stack *s = bpf_map_lookup_elem(&stack_scratch, &zero);
    if (!s)
        return 0;
    s->py_nr = 0;
    struct lw_proc_cfg *cfg = bpf_map_lookup_elem(&watched, &tgid);
    if (!cfg || !cfg->py.key_addr)
        return 0;
    const struct lw_py_cfg *py = &cfg->py;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    __u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
    __u32 key = 0;
    /* glibc keeps keys 0-31 in struct pthread itself: {seq, data} pairs of 16 bytes */
    if (!fsbase || bpf_probe_read_user(&key, sizeof(key), (void *)py->key_addr) || key >= 32)
        return 0;
    __u64 tstate = read_user_u64(fsbase + py->tsd_off + 16 * key + 8);
    /* the slot is this thread's own; its thread id says the state is too */
    if (!tstate || read_user_u64(tstate + py->thread_id_off) != fsbase)
        return 0;
    __u64 f = read_user_u64(tstate + py->frame_off);
    if (f && py->cframe_off != LW_PY_NONE)
        f = read_user_u64(f + py->cframe_off);
    const __u32 max = py->max_frames < LW_PY_MAX_FRAMES ? py->max_frames : LW_PY_MAX_FRAMES;
    const __u8 group = py->group;
    const bool pointer = py->instr == LW_PY_INSTR_PTR;
    /* One slot per frame walked, the shims' included: the slot is the loop's index, so the
     * verifier sees one state per step. */
    __u32 n = 0;
    for (int i = 0; i < LW_PY_MAX_FRAMES; i++) {
        if (!f || (__u32)i >= max)
            break;
        __u64 code = read_user_u64(f + py->code_off);
        __u64 back = read_user_u64(f + py->back_off);
        __u64 raw = read_user_u64(f + py->instr_off);
        __u8 entry = 0;
        bpf_probe_read_user(&entry, sizeof(entry), (void *)(f + py->entry_off));
        f = back;
        /* The instruction as the daemon decodes it: its offset in bytes from the code object
         * (a pointer into its bytecode, 3.11+) or f_lasti (an int, -1 before the first) + 1;
         * 0xffff: not known. */
        __u64 at = pointer ? raw - code : (__u64)(__u32)((__s32)raw + 1);
        if (at > 0xffff)
            at = 0xffff;
        __u64 v = (code & 0xfffffffffff8ULL) | at << LW_PY_INSTR_SHIFT;
        if (group == LW_PY_GROUP_EACH || (group == LW_PY_GROUP_IS_ENTRY && entry))
            v |= LW_PY_GROUP_END;
        if (group == LW_PY_GROUP_SHIM && entry == 3)
            v = LW_PY_SHIM;
        s->py[i] = v;
        n = i + 1;
    }
    s->py_nr = n;
    return 0;
}

/* Copies the frame's registers and the stack above it for the daemon to unwind. The largest
 * readable slice: the stack's top may be closer than LW_SNAPSHOT_BYTES. */
static __always_inline bool send_snapshot(__u32 tgid, __u64 id, __u64 key, __u64 ip, __u64 sp,
                                          __u64 bp, struct lw_stack *s, bool exact)
{
    struct lw_snapshot *e = bpf_ringbuf_reserve(&snapshots, sizeof(*e), 0);
    if (!e) {
        count_lost(LW_LOST_SNAPSHOTS_FULL);
        return false;
    }
    e->tgid = tgid;
    e->flags = exact ? LW_SNAPSHOT_EXACT_IP : 0;
    e->id = id;
    e->key = key;
    e->ts_ns = bpf_ktime_get_ns();
    e->ip = ip;
    e->sp = sp;
    e->bp = bp;
    bpf_probe_read_kernel(&e->frames, sizeof(e->frames), s);
    __u32 len = LW_SNAPSHOT_BYTES;
    for (int i = 0; i < 6; i++) { /* 8 KiB down to 256 bytes */
        if (len > LW_SNAPSHOT_BYTES)
            break;
        if (bpf_probe_read_user(e->stack, len, (void *)sp) == 0)
            break;
        len >>= 1;
    }
    if (len < (LW_SNAPSHOT_BYTES >> 5))
        len = 0;
    e->len = len;
    bpf_ringbuf_submit(e, 0);
    return true;
}

/* How the frame of return address pc is walked: LW_RANGE_FP or LW_RANGE_RULES (both bits
 * when a rules range lies inside a frame-pointer one: rules win), 0 (rules) outside them. */
static __always_inline __u32 range_kind(const struct lw_proc_cfg *cfg, __u64 pc)
{
    __u32 kind = 0;
    for (int i = 0; i < LW_MAX_RANGES; i++) {
        if ((__u32)i >= cfg->nranges)
            break;
        /* the call is at pc - 1 */
        if (pc > cfg->ranges[i].lo && pc <= cfg->ranges[i].hi)
            kind |= cfg->ranges[i].kind;
    }
    return kind;
}

/* Copies the stack from sp up into the window (walk_stack, windowed). A global function, like
 * stack_words below: verified once, on its own. */
__attribute__((noinline)) int fill_window(__u64 sp)
{
    __u32 zero = 0;
    struct lw_stack_window *win = bpf_map_lookup_elem(&stack_window, &zero);
    if (!win)
        return 0;
    win->base = sp;
    win->len = sizeof(win->w);
    if (bpf_probe_read_user(win->w, sizeof(win->w), (void *)sp)) {
        /* Near the top of its mapping the stack ends within the window: then up to the end of
         * sp's page, which is mapped (it holds the return address). The length is under
         * sizeof(win->w) here, or the first read would have stayed in sp's page; the mask is
         * a bound the verifier can see. */
        __u32 len = (page_size - (sp & (page_size - 1))) & (sizeof(win->w) - 1);
        win->len = len;
        if (bpf_probe_read_user(win->w, len, (void *)sp))
            win->base = 0;
    }
    return 0;
}

/* Reads one or two words of the stack at addr: from the window copied at the walk's start
 * when they are in it, else from the process. One copy of the stack's top instead of a read
 * per frame: each user-memory read has a fixed cost of tens of nanoseconds, which the first
 * frames of every walk paid several times (docs/performance.md). A global function, verified
 * once: inlined, its branches in every step of the walk took the programs past the verifier's
 * budget. Its pointer argument needs a 5.12+ verifier; only session_probe (6.13+) calls it. */
__attribute__((noinline)) int stack_words(__u64 addr, struct lw_words *dst, __u32 n)
{
    if (!dst)
        return -1;
    __u32 zero = 0;
    struct lw_stack_window *win = bpf_map_lookup_elem(&stack_window, &zero);
    if (!win)
        return -1;
    __u64 off = addr - win->base;
    if (win->base && !(off & 7) && off + 16 <= win->len) {
        /* in the window, so the masks change nothing: they are bounds the verifier sees */
        __u32 i = (off >> 3) & (LW_WINDOW_BYTES / 8 - 1);
        dst->w[0] = win->w[i];
        dst->w[1] = win->w[(i + 1) & (LW_WINDOW_BYTES / 8 - 1)];
        return 0;
    }
    return bpf_probe_read_user(dst->w, n > 1 ? 16 : 8, (void *)addr) ? -1 : 0;
}

/* One or two words of the stack at addr: through the window in a windowed walk, else read. */
static __always_inline int read_words(bool windowed, __u64 addr, struct lw_words *dst, __u32 n)
{
    if (windowed)
        return stack_words(addr, dst, n);
    return bpf_probe_read_user(dst->w, n > 1 ? 16 : 8, (void *)addr) ? -1 : 0;
}

/* Walks the stack with the daemon's CFI rules (LW_CFG_DWARF), and by the frame pointer in the
 * code ranges whose functions keep one. Two starts: at an allocator's entry (a uprobe placed on
 * or before its first stack push, so the entry frame's CFA is sp + 8 and rbp is the caller's),
 * and anywhere in a function (a page fault: `exact`), whose first frame's rule is the one at ip
 * itself, stored under ip | LW_RULE_EXACT. */
static __always_inline __u64 walk_stack(__u32 tgid, struct lw_stack *s,
                                        const struct lw_proc_cfg *cfg, __u64 ip, __u64 sp,
                                        __u64 bp, bool exact, bool windowed)
{
    const __u64 sp0 = sp;
    __u64 pc = ip;
    s->ips[0] = ip;
    s->caller = 0;
    __u32 n = 1;
    if (windowed)
        fill_window(sp);
    if (!exact) {
        struct lw_words ret = {};
        if (read_words(windowed, sp, &ret, 1)) {
            count_lost(LW_LOST_STACK_FAILED);
            return 0;
        }
        pc = ret.w[0];
        sp += 8;
        s->ips[1] = pc;
        s->caller = pc;
        n = 2;
    }
    bool missing = false, truncated = false;
    /* A walk from a page fault may cross the frames of functions under a return probe (an
     * escalated process's allocator): their return address on the stack is the kernel's
     * uretprobe trampoline, and the real one is in the thread's return instances, innermost
     * first. (A walk from an allocator's entry never does: probed calls nested in it are not
     * recorded.) */
    struct return_instance *ri = NULL;
    __u64 trampoline = 0;
    if (exact) {
        struct task_struct *task = (struct task_struct *)bpf_get_current_task();
        ri = BPF_CORE_READ(task, utask, return_instances);
        if (ri)
            trampoline = BPF_CORE_READ(task, mm, uprobes_state.xol_area, vaddr);
    }
    for (int i = 0; i < LW_UNWIND_DEPTH; i++) {
        if (trampoline && pc == trampoline && ri) {
            pc = BPF_CORE_READ(ri, orig_ret_vaddr);
            /* chained instances (a tail call from one probed function to another) share one
             * frame: the next frame's is after them */
            for (int c = 0; c < 4 && ri && BPF_CORE_READ(ri, chained); c++)
                ri = BPF_CORE_READ(ri, next);
            if (ri)
                ri = BPF_CORE_READ(ri, next);
            if (i > 0)
                s->ips[n - 1] = pc;
        }
        if (!pc)
            break;
        bool first_exact = exact && i == 0;
        if (!first_exact && range_kind(cfg, pc) == LW_RANGE_FP) {
            /* A frame record: the caller's rbp at rbp, the return address above it. rbp 0 is
             * the outermost frame's (the ABI's end of the chain). rbp may equal sp: a function
             * with no locals calls right after `push rbp; mov rsp, rbp`, and its frame record
             * is then just above the return address its callee popped. */
            struct lw_words frame = {};
            if (bp < sp || (bp & 7) || read_words(windowed, bp, &frame, 2)) {
                truncated = bp != 0;
                break;
            }
            sp = bp + 16;
            bp = frame.w[0];
            pc = frame.w[1];
        } else {
            struct lw_key rkey = {.tgid = tgid, .id = first_exact ? pc | LW_RULE_EXACT : pc};
            struct lw_unwind_rule *r = bpf_map_lookup_elem(&unwind_rules, &rkey);
            if (!r) {
                missing = true;
                break;
            }
            if (r->kind == LW_UW_JAVA_INTERP) {
                /* method, last sp, sender sp, saved rbp, return address: rbp - 24 up */
                __u64 w[5];
                if (bp < sp || (bp & 7) ||
                    bpf_probe_read_user(w, sizeof(w), (void *)(bp - 24)) || w[2] <= sp) {
                    truncated = true;
                    break;
                }
                if (w[0] && n > 0)
                    s->ips[n - 1] = w[0] | LW_JAVA_METHOD;
                sp = w[2];
                bp = w[3];
                pc = w[4];
                goto next;
            }
            if (r->kind != LW_UW_CFA_SP && r->kind != LW_UW_CFA_BP)
                break;
            __u64 cfa = (r->kind == LW_UW_CFA_BP ? bp : sp) + (__s64)r->cfa_off;
            if (cfa <= sp) {
                truncated = true;
                break;
            }
            struct lw_words saved = {}, ra = {};
            if (r->bp_saved) {
                if (read_words(windowed, cfa + (__s64)r->bp_off, &saved, 1)) {
                    truncated = true;
                    break;
                }
                bp = saved.w[0];
            }
            if (read_words(windowed, cfa - 8, &ra, 1)) {
                truncated = true;
                break;
            }
            sp = cfa;
            pc = ra.w[0];
        }
    next:
        if (!pc)
            break;
        if (n >= LW_DWARF_FRAMES) {
            truncated = true;
            break;
        }
        s->ips[n++] = pc;
    }
    s->nr = n;
    s->flags = 0;
    if (truncated) {
        s->flags = LW_STACK_TRUNCATED;
        count_lost(LW_LOST_STACK_TRUNCATED);
    }
    __u64 h = stack_hash(mix64(s->caller ^ 0x9e3779b97f4a7c15ULL), s->ips, n);
    if (missing) {
        /* One snapshot per frames-so-far and depth of the frame without a rule, under an id
         * of its own; the walks that miss there meanwhile keep their frames so far. */
        struct lw_key mark = {.tgid = tgid, .id = mix64(h ^ mix64(sp - sp0)) | 1};
        __u8 one = 1;
        if (bpf_map_update_elem(&snapshots_sent, &mark, &one, BPF_NOEXIST) == 0) {
            __u64 id = ((__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32()) | 1;
            s->flags |= LW_STACK_PARTIAL;
            bool exact_pc = exact && n == 1; /* the walk stopped at its first frame */
            if (send_snapshot(tgid, id, mark.id, pc, sp, bp, s, exact_pc)) {
                struct lw_key key = {.tgid = tgid, .id = id};
                store_stack(&key, s);
                return id;
            }
            bpf_map_delete_elem(&snapshots_sent, &mark); /* the next walk sends it */
            s->flags &= ~LW_STACK_PARTIAL;
        } else {
            s->flags |= LW_STACK_PENDING;
            count_lost(LW_LOST_UNWIND_PENDING);
        }
    }
    h = python_hash(h, s->py, s->py_nr);
    struct lw_key key = {.tgid = tgid, .id = h};
    store_stack(&key, s);
    return h;
}
#endif

/* Captures the user stack once and stores it under a hash of its frames and the caller. */
static __always_inline __u64 capture_stack(struct pt_regs *ctx, __u32 tgid,
                                           const struct lw_proc_cfg *cfg, bool windowed)
{
    __u32 zero = 0;
    struct lw_stack *s = bpf_map_lookup_elem(&stack_scratch, &zero);
    if (!s)
        return 0;
#if defined(__TARGET_ARCH_x86)
    /* Tested here, not only in read_python: a process without Python then pays no call and no
     * second lookup of its configuration. */
    if (cfg->py.key_addr)
        read_python(tgid);
    else
        s->py_nr = 0;
    if (cfg->flags & LW_CFG_DWARF)
        return walk_stack(tgid, s, cfg, PT_REGS_IP(ctx), PT_REGS_SP(ctx), PT_REGS_FP(ctx),
                          false, windowed);
#endif
    long n = bpf_get_stack(ctx, s->ips, sizeof(s->ips), BPF_F_USER_STACK);
    if (n <= 0) {
        count_lost(LW_LOST_STACK_FAILED);
        return 0;
    }
    s->nr = n / sizeof(__u64);
    s->flags = 0;
    s->caller = caller_address(ctx);
#if !defined(__TARGET_ARCH_x86)
    s->py_nr = 0;
    (void)windowed; /* no CFI walk here: the kernel's frame-pointer walk above */
#endif
    __u64 h = stack_hash(mix64(s->caller ^ 0x9e3779b97f4a7c15ULL), s->ips, s->nr);
    h = python_hash(h, s->py, s->py_nr);
    struct lw_key key = {.tgid = tgid, .id = h};
    store_stack(&key, s);
    return h;
}

static __always_inline void account_free(__u32 tgid, const struct lw_alloc *a)
{
    if (a->counted) {
        struct lw_key skey = {.tgid = tgid, .id = a->stack};
        struct lw_stack_totals *t = bpf_map_lookup_elem(&stack_totals, &skey);
        if (t) {
            __sync_fetch_and_add(&t->bytes, -(__s64)a->bytes);
            __sync_fetch_and_add(&t->count, -(__s64)a->weight);
        }
    }
    struct lw_proc_totals *p = bpf_map_lookup_elem(&procs, &tgid);
    if (p) {
        __sync_fetch_and_add(&p->free_bytes, a->bytes);
        __sync_fetch_and_add(&p->free_count, a->weight);
        __sync_fetch_and_add(&p->records, -1);
        if (a->kind == LW_MMAP)
            __sync_fetch_and_add(&p->mmap_regions, -1);
    }
}

/* Part of an allocation was released (a partial munmap): fewer bytes, same allocation.
 * `by` is in counted bytes (sampling weight applied). */
static __always_inline void account_shrink(__u32 tgid, const struct lw_alloc *a, __u64 by)
{
    if (a->counted) {
        struct lw_key skey = {.tgid = tgid, .id = a->stack};
        struct lw_stack_totals *t = bpf_map_lookup_elem(&stack_totals, &skey);
        if (t)
            __sync_fetch_and_add(&t->bytes, -(__s64)by);
    }
    struct lw_proc_totals *p = bpf_map_lookup_elem(&procs, &tgid);
    if (p) {
        __sync_fetch_and_add(&p->free_bytes, by);
    }
}

/* Removes a live allocation. Only the CPU whose delete succeeds accounts for it, so a
 * racing double free cannot subtract twice. */
static __always_inline __u64 forget(__u32 tgid, struct lw_key *key, struct lw_alloc *found)
{
    struct lw_alloc a = *found;
    if (bpf_map_delete_elem(&live, key))
        return 0;
    account_free(tgid, &a);
    return a.size;
}

static __always_inline __u64 record_free(__u32 tgid, __u64 addr)
{
    struct lw_key key = {.tgid = tgid, .id = addr};
    struct lw_alloc *found = bpf_map_lookup_elem(&live, &key);
    if (!found) {
        count_lost(LW_LOST_UNKNOWN_FREE);
        return 0;
    }
    return forget(tgid, &key, found);
}

/* `rec` is the in-flight record of the call: its stack, and the bytes and count the
 * allocation stands for (more than its size when it was sampled). */
static __always_inline void record_alloc(__u32 tgid, __u64 addr, __u64 size,
                                         const struct lw_inflight *rec, __u32 kind, __u64 ts)
{
    __u64 stack = rec->stack, bytes = rec->bytes;
    __u32 weight = rec->weight;
    struct lw_key key = {.tgid = tgid, .id = addr};
    struct lw_proc_totals *p = bpf_map_lookup_elem(&procs, &tgid);
    struct lw_key skey = {.tgid = tgid, .id = stack};
    struct lw_stack_totals *t = bpf_map_lookup_elem(&stack_totals, &skey);
    if (!t && stack && p &&
        (at_share(p->totals, process_totals_max) ||
         (at_share(p->stacks, process_stacks_max) && !bpf_map_lookup_elem(&stacks, &skey)))) {
        /* The process holds its share of the totals, or of the stacks and this one's frames
         * were not stored: its own new stack is counted under stack id 0. */
        count_lost(LW_LOST_PROCESS_SHARE);
        stack = skey.id = 0;
        t = bpf_map_lookup_elem(&stack_totals, &skey);
    }
    if (!t) {
        struct lw_stack_totals zero = {};
        if (bpf_map_update_elem(&stack_totals, &skey, &zero, BPF_NOEXIST) == 0 && p)
            __sync_fetch_and_add(&p->totals, 1);
        t = bpf_map_lookup_elem(&stack_totals, &skey);
    }
    struct lw_alloc a = {
        .size = size, .ts_ns = ts, .stack = stack, .bytes = bytes, .weight = weight, .kind = kind};
    if (t)
        a.counted = 1;
    else
        count_lost(LW_LOST_TOTALS_FULL);

    if (p) {
        __sync_fetch_and_add(&p->alloc_bytes, bytes);
        __sync_fetch_and_add(&p->alloc_count, weight);
    }
    /* Inserted only if new: a record already at this address is a free that was not seen
     * (it is accounted as freed, then replaced). Cheaper than a lookup before every insert. */
    long err = bpf_map_update_elem(&live, &key, &a, BPF_NOEXIST);
    if (err == -17 /* EEXIST */) {
        struct lw_alloc *old = bpf_map_lookup_elem(&live, &key);
        if (old) {
            struct lw_alloc prev = *old;
            count_lost(LW_LOST_MISSED_FREE);
            if (bpf_map_delete_elem(&live, &key) == 0)
                account_free(tgid, &prev);
        }
        err = bpf_map_update_elem(&live, &key, &a, BPF_ANY);
    }
    if (err) {
        count_lost(LW_LOST_LIVE_FULL);
        if (p) {
            __sync_fetch_and_add(&p->dropped_bytes, bytes);
            __sync_fetch_and_add(&p->dropped_count, weight);
        }
        return;
    }
    /* No free of this address can race with us: the program learns it only when the
     * allocator returns, after this handler. */
    if (t) {
        __sync_fetch_and_add(&t->bytes, (__s64)bytes);
        __sync_fetch_and_add(&t->count, weight);
        __sync_fetch_and_add(&t->alloc_bytes, bytes);
        __sync_fetch_and_add(&t->alloc_count, weight);
    }
    if (p) {
        __sync_fetch_and_add(&p->records, 1);
        if (kind == LW_MMAP)
            __sync_fetch_and_add(&p->mmap_regions, 1);
    }
}

/* The in-flight record of this thread's outermost allocator call, or NULL when the
 * current probe fires inside one (malloc -> mmap, realloc -> malloc/free): the outer
 * call's return accounts for the whole operation. */
static __always_inline bool nested_in_call(__u64 sp)
{
    struct lw_thread *th = this_thread(false);
    return th && th->call.sp && sp <= th->call.sp;
}

/* Whether a call from `caller` comes from inside the allocator library itself (malloc
 * mapping more heap), when the outer call may have left no in-flight record. */
static __always_inline bool from_allocator(struct pt_regs *ctx, const struct lw_proc_cfg *cfg)
{
    if (!(cfg->flags & LW_CFG_PARTIAL))
        return false;
    __u64 caller = caller_address(ctx);
    return caller >= cfg->lib_lo && caller < cfg->lib_hi;
}

/* Returns whether the call's return must be seen: an in-flight record was written. */
static __always_inline bool alloc_enter(struct pt_regs *ctx, __u32 kind, __u64 size, __u64 arg,
                                        __u32 flags, bool windowed)
{
    __u32 tgid = current_pid_tgid() >> 32;
    struct lw_proc_cfg *cfg = bpf_map_lookup_elem(&watched, &tgid);
    if (!cfg)
        return false;

    __u64 sp = PT_REGS_SP(ctx);
    struct lw_thread *th = this_thread(true);
    if (!th) {
        count_lost(LW_LOST_INFLIGHT_FULL);
        return false;
    }
    if (th->call.sp) {
        if (sp <= th->call.sp)
            return false; /* nested, or a tail call from the outer allocator */
        count_lost(LW_LOST_STALE_INFLIGHT);
        th->call.sp = 0;
    }
    if ((kind == LW_MMAP || kind == LW_MREMAP) && from_allocator(ctx, cfg))
        return false;

    struct lw_inflight rec = {
        .sp = sp, .size = size, .arg = arg, .bytes = size, .weight = 1, .kind = kind,
        .flags = flags};
    bool record = !(flags & LW_INF_OVERFLOW) && size >= cfg->min_size && size <= cfg->max_size;
    if (record && cfg->sample_mean) {
        __u64 p = lw_sample_probability(size, cfg->sample_mean, exp_neg);
        if (p < (1ULL << 32)) {
            if (p == 0 || bpf_get_prandom_u32() >= p)
                record = false;
            else {
                rec.bytes = lw_sample_bytes(size, p);
                rec.weight = lw_sample_weight(p);
            }
        }
    }
    if (record) {
        rec.flags |= LW_INF_RECORD;
        rec.stack = capture_stack(ctx, tgid, cfg, windowed);
    } else if (!arg || kind == LW_POSIX_MEMALIGN) {
        /* Nothing to do at the return: no record, so a session uprobe skips it. The
         * allocator's own inner calls are told apart by their caller (from_allocator). */
        if (cfg->flags & LW_CFG_PARTIAL)
            return false;
    }
    th->call = rec;
    return true;
}

static __always_inline __u32 mul_overflows(__u64 a, __u64 b, __u64 *out)
{
    if ((a | b) >> 32) {
        /* the barrier keeps clang from turning the division into a 128-bit multiply */
        __u64 max = ~0ULL;
        asm volatile("" : "+r"(max));
        if (a != 0 && b > max / a)
            return LW_INF_OVERFLOW;
    }
    *out = a * b;
    return 0;
}

/* Every allocator's return: the in-flight record says which call returns. */
static __always_inline int handle_return(struct pt_regs *ctx)
{
    __u64 ret = PT_REGS_RC(ctx);
    __u32 tgid = current_pid_tgid() >> 32;
    struct lw_thread *th = this_thread(false);
    if (!th || !th->call.sp)
        return 0; /* second return of a tail call, or the entry was not recorded */
    if (!RETURNED(PT_REGS_SP(ctx), th->call.sp))
        return 0; /* return of a nested call */
    struct lw_inflight rec = th->call;
    th->call.sp = 0;
    if (!bpf_map_lookup_elem(&watched, &tgid))
        return 0;

    __u64 ts = bpf_ktime_get_ns();
    bool record = rec.flags & LW_INF_RECORD;
    switch (rec.kind) {
    case LW_REALLOC:
    case LW_REALLOCARRAY:
        if (ret) {
            if (rec.arg)
                record_free(tgid, rec.arg);
            if (record)
                record_alloc(tgid, ret, rec.size, &rec, rec.kind, ts);
        } else if (rec.size == 0 && rec.arg && !(rec.flags & LW_INF_OVERFLOW)) {
            record_free(tgid, rec.arg); /* realloc(p, 0) frees p and returns NULL */
        } /* otherwise the call failed and the old block stays */
        break;
    case LW_POSIX_MEMALIGN:
        if ((int)ret == 0 && record) {
            __u64 ptr = 0;
            if (bpf_probe_read_user(&ptr, sizeof(ptr), (void *)rec.arg) == 0 && ptr)
                record_alloc(tgid, ptr, rec.size, &rec, rec.kind, ts);
        }
        break;
    case LW_MMAP:
        if (ret != ~0ULL && record)
            record_alloc(tgid, ret, rec.size, &rec, rec.kind, ts);
        break;
    case LW_MREMAP:
        if (ret != ~0ULL) {
            record_free(tgid, rec.arg);
            if (record)
                record_alloc(tgid, ret, rec.size, &rec, LW_MMAP, ts);
        }
        break;
    default:
        if (ret && record)
            record_alloc(tgid, ret, rec.size, &rec, rec.kind, ts);
    }
    return 0;
}

/* A free of a block that is not recorded (not sampled, filtered by size, or allocated
 * before the process was attached) costs one map lookup. */
static __always_inline int enter_free(struct pt_regs *ctx, __u64 ptr)
{
    __u64 id = current_pid_tgid();
    __u32 tgid = id >> 32;
    struct lw_key key = {.tgid = tgid, .id = ptr};
    struct lw_alloc *found = bpf_map_lookup_elem(&live, &key);
    if (!found) {
        count_lost(LW_LOST_UNKNOWN_FREE);
        return 0;
    }
    if (!bpf_map_lookup_elem(&watched, &tgid))
        return 0;
    __u64 sp = PT_REGS_SP(ctx);
    if (nested_in_call(sp))
        return 0;
    if (forget(tgid, &key, found) >= LW_FREEING_MIN) {
        struct lw_thread *th = this_thread(true);
        if (th) {
            th->freeing.sp = sp;
            th->freeing.addr = ptr;
        }
    }
    return 0;
}

/* True when this munmap is the allocator's own, inside a free() of a block in the range. */
static __always_inline bool inside_free(__u64 sp, __u64 addr, __u64 len)
{
    struct lw_thread *th = this_thread(false);
    if (!th || !th->freeing.sp)
        return false;
    struct lw_freeing *mark = &th->freeing;
    bool inside = sp < mark->sp && mark->addr >= addr && mark->addr < addr + len;
    mark->sp = 0;
    return inside;
}

/* Removes the mmap regions recorded inside [addr, addr + len). A region that starts inside
 * and ends beyond the range keeps its tail. Scans page by page, jumping over regions. */
static __always_inline int enter_munmap(struct pt_regs *ctx, __u64 addr, __u64 len)
{
    __u32 tgid = current_pid_tgid() >> 32;
    __u64 sp = PT_REGS_SP(ctx);
    struct lw_proc_cfg *cfg = bpf_map_lookup_elem(&watched, &tgid);
    if (!len || !cfg)
        return 0;
    if (nested_in_call(sp) || inside_free(sp, addr, len))
        return 0;
    if (from_allocator(ctx, cfg))
        return 0;
    struct lw_proc_totals *p = bpf_map_lookup_elem(&procs, &tgid);
    if (!p || p->mmap_regions <= 0)
        return 0; /* nothing of this process is recorded as mapped */

    __u64 end = addr + len;
    __u64 cur = addr & ~(page_size - 1);
    for (int i = 0; i < LW_MUNMAP_SCAN; i++) {
        if (cur >= end)
            break;
        struct lw_key key = {.tgid = tgid, .id = cur};
        struct lw_alloc *found = bpf_map_lookup_elem(&live, &key);
        if (!found || found->kind != LW_MMAP) {
            cur += page_size;
            continue;
        }
        struct lw_alloc a = *found;
        __u64 region_end = cur + a.size;
        if (bpf_map_delete_elem(&live, &key) == 0) {
            if (region_end > end) {
                /* partial unmap: the tail stays mapped and outstanding, counting for the
                 * same share of the sampled bytes */
                struct lw_alloc tail = a;
                tail.size = region_end - end;
                __u64 gone = (end - cur) * (a.size ? a.bytes / a.size : 1);
                if (gone > a.bytes)
                    gone = a.bytes;
                tail.bytes = a.bytes - gone;
                struct lw_key tkey = {.tgid = tgid, .id = end};
                if (bpf_map_update_elem(&live, &tkey, &tail, BPF_NOEXIST) == 0) {
                    account_shrink(tgid, &a, gone);
                } else {
                    count_lost(LW_LOST_LIVE_FULL);
                    account_free(tgid, &a);
                }
            } else {
                account_free(tgid, &a);
            }
        }
        cur = (region_end + page_size - 1) & ~(page_size - 1);
    }
    if (cur < end)
        count_lost(LW_LOST_MUNMAP_TRUNCATED);
    return 0;
}

/* One allocator call's entry, by kind, with its arguments from the registers. Returns
 * whether its return must be seen. */
static __always_inline bool enter_kind(struct pt_regs *ctx, __u32 kind, bool windowed)
{
    __u64 a1 = PT_REGS_PARM1(ctx), a2 = PT_REGS_PARM2(ctx), a3 = PT_REGS_PARM3(ctx);
    __u64 size = 0, arg = 0;
    __u32 flags = 0;
    /* One alloc_enter for every kind: it (and the stack walk in it) is then verified once per
     * program, not once per kind. */
    switch (kind) {
    case LW_MALLOC:
    case LW_VALLOC:
        size = a1;
        break;
    case LW_CALLOC: /* (nmemb, size) */
        flags = mul_overflows(a1, a2, &size);
        break;
    case LW_REALLOC: /* (ptr, size) */
        size = a2;
        arg = a1;
        break;
    case LW_REALLOCARRAY: /* (ptr, nmemb, size) */
        flags = mul_overflows(a2, a3, &size);
        arg = a1;
        break;
    case LW_POSIX_MEMALIGN: /* (memptr, alignment, size) */
        size = a3;
        arg = a1;
        break;
    case LW_ALIGNED_ALLOC: /* (alignment, size) */
    case LW_MEMALIGN:
        size = a2;
        break;
    case LW_PVALLOC: /* rounds the size up to whole pages */
        size = (a1 + page_size - 1) & ~(page_size - 1);
        break;
    case LW_MMAP: /* (addr, len, ...) */
        size = a2;
        break;
    case LW_MREMAP: /* (old_addr, old_size, new_size, ...) */
        size = a3;
        arg = a1;
        break;
    case LW_FREE:
        enter_free(ctx, a1);
        return false;
    case LW_MUNMAP:
        enter_munmap(ctx, a1, a2);
        return false;
    default:
        return false;
    }
    return alloc_enter(ctx, kind, size, arg, flags, windowed);
}

/* Classic attachment: one uprobe link per function, each with its own program. */
#define LW_ENTRY(name, kind)                                                                  \
    SEC("uprobe")                                                                             \
    int name(struct pt_regs *ctx)                                                             \
    {                                                                                         \
        enter_kind(ctx, kind, false);                                                         \
        return 0;                                                                             \
    }
LW_ENTRY(malloc_enter, LW_MALLOC)
LW_ENTRY(calloc_enter, LW_CALLOC)
LW_ENTRY(realloc_enter, LW_REALLOC)
LW_ENTRY(reallocarray_enter, LW_REALLOCARRAY)
LW_ENTRY(posix_memalign_enter, LW_POSIX_MEMALIGN)
LW_ENTRY(aligned_alloc_enter, LW_ALIGNED_ALLOC)
LW_ENTRY(memalign_enter, LW_MEMALIGN)
LW_ENTRY(valloc_enter, LW_VALLOC)
LW_ENTRY(pvalloc_enter, LW_PVALLOC)
LW_ENTRY(mmap_enter, LW_MMAP)
LW_ENTRY(mremap_enter, LW_MREMAP)
LW_ENTRY(free_enter, LW_FREE)
LW_ENTRY(munmap_enter, LW_MUNMAP)

SEC("uretprobe")
int alloc_return(struct pt_regs *ctx)
{
    return handle_return(ctx);
}

/* Multi-uprobe attachment (6.6+): one link for every entry of a process, the function's kind
 * in the attach cookie; one link for every return. Loaded only where the kernel has it. */
SEC("uprobe")
int multi_entry(struct pt_regs *ctx)
{
    enter_kind(ctx, (__u32)bpf_get_attach_cookie(ctx), false);
    return 0;
}

SEC("uretprobe")
int multi_return(struct pt_regs *ctx)
{
    return handle_return(ctx);
}

/* Session uprobes (6.13+): one link, one program, for every entry and return of a process.
 * Returning 1 from an entry skips that call's return probe: calls that recorded nothing
 * (not sampled, filtered by size; free, munmap) take one trap instead of two. */
SEC("uprobe")
int session_probe(struct pt_regs *ctx)
{
    /* Entry or return: at entry the instruction pointer is the probe's address, which the
     * cookie holds; at return it is the caller's. (Not the bpf_session_is_return kfunc: its
     * prototype changed between kernels, 6.13's takes no argument, 7.x's the context, and a
     * mismatch would keep the whole object from loading.) */
    __u64 cookie = bpf_get_attach_cookie(ctx);
    if (PT_REGS_IP(ctx) != cookie >> LW_COOKIE_KIND_BITS) {
        handle_return(ctx);
        return 0;
    }
    __u32 kind = cookie & ((1u << LW_COOKIE_KIND_BITS) - 1);
    return enter_kind(ctx, kind, true) ? 0 : 1;
}

#if defined(__TARGET_ARCH_x86)
/* Watch tier (x86-64: the kernel's user page-fault tracepoint is x86's): a write fault of a
 * process in the tier, sampled by bytes (one page in sample_mean / page_size), records the
 * page and the stack that touched it. Every page fault of the machine runs this far: a test of
 * the fault's kind, then of the tgid's bit in tier_filter. The daemon attaches it only while the tier holds a process. */
SEC("tp_btf/page_fault_user")
int BPF_PROG(watch_fault, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
    if (!(error_code & 2 /* X86_PF_WRITE */))
        return 0;
    __u32 tgid = current_pid_tgid() >> 32;
    __u32 word = (tgid / 64) % (LW_TIER_FILTER_BITS / 64);
    __u64 *bits = bpf_map_lookup_elem(&tier_filter, &word);
    if (!bits || !(*bits & (1ULL << (tgid % 64))))
        return 0;
    struct lw_proc_cfg *cfg = bpf_map_lookup_elem(&watch_tier, &tgid);
    if (!cfg)
        return 0;
    if (cfg->sample_mean > page_size &&
        bpf_get_prandom_u32() >= (__u32)((page_size << 32) / cfg->sample_mean))
        return 0;
    __u32 zero = 0;
    struct lw_stack *s = bpf_map_lookup_elem(&stack_scratch, &zero);
    if (!s)
        return 0;
    __u64 ip = BPF_CORE_READ(regs, ip), sp = BPF_CORE_READ(regs, sp), bp = BPF_CORE_READ(regs, bp);
    s->py_nr = 0; /* a first touch is named by its native frames */
    struct lw_growth g = {.stack = walk_stack(tgid, s, cfg, ip, sp, bp, true, false),
                          .ts_ns = bpf_ktime_get_ns()};
    struct lw_key key = {.tgid = tgid, .id = address & ~(page_size - 1)};
    if (bpf_map_update_elem(&growth_pages, &key, &g, BPF_ANY))
        count_lost(LW_LOST_GROWTH_PAGES_FULL);
    return 0;
}
#endif

static __always_inline void emit_event(__u32 type, __u32 pid, __u32 ppid)
{
    struct lw_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
        count_lost(LW_LOST_EVENTS_FULL);
        return;
    }
    e->type = type;
    e->pid = pid;
    e->ppid = ppid;
    e->pad = 0;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    bpf_ringbuf_submit(e, 0);
}

/* Every exec goes to the daemon (rules match on comm, exe and cmdline, which only user space
 * can evaluate). A watched process that execs stops being recorded here and now, before the
 * new image runs, so two images' allocations never mix under one pid. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p)
{
    __u32 tgid = current_pid_tgid() >> 32;
    bpf_map_delete_elem(&watched, &tgid);
    bpf_map_delete_elem(&watch_tier, &tgid);
    emit_event(LW_EVENT_EXEC, tgid, 0);
    return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
    /* runs in the parent: its ids are the current task's */
    __u32 ptgid = current_pid_tgid() >> 32;
    if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
        return 0; /* a new thread, not a new process */
    if (!ptgid ||
        (!bpf_map_lookup_elem(&watched, &ptgid) && !bpf_map_lookup_elem(&watch_tier, &ptgid)))
        return 0;
    __u32 ctgid = task_tgid_in_ns(child);
    if (ctgid)
        emit_event(LW_EVENT_FORK, ctgid, ptgid);
    return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *p)
{
    __u32 tgid = current_pid_tgid() >> 32;
    if (!task_storage) {
        __u32 tid = (__u32)bpf_get_current_pid_tgid();
        bpf_map_delete_elem(&thread_records, &tid);
    }
    if (BPF_CORE_READ(p, signal, live.counter) != 0)
        return 0; /* other threads of the process live on */
    int was_watched = bpf_map_delete_elem(&watched, &tgid) == 0;
    int was_in_tier = bpf_map_delete_elem(&watch_tier, &tgid) == 0;
    if (was_watched || was_in_tier)
        emit_event(LW_EVENT_EXIT, tgid, 0);
    return 0;
}
