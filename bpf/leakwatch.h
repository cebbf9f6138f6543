/* Types shared by the BPF programs and the daemon: map keys and values, events. */
#ifndef LEAKWATCH_H
#define LEAKWATCH_H

#ifndef __VMLINUX_H__
#include <linux/types.h> /* user space: the BPF side gets these from vmlinux.h */
#endif

/* The format of the state kept across restarts of the daemon (pinned maps) is a hash of the
 * kept maps' definitions and their key and value layouts (daemon/loader/keep.h). Bump this when
 * what a field means changes without its layout changing: a daemon then drops what an older
 * one kept instead of misreading it. */
#define LW_STATE_VERSION 1

#define LW_MAX_STACK_DEPTH 127
#define LW_COMM_LEN 16
/* Pages a munmap range is scanned for recorded regions, at most. */
#define LW_MUNMAP_SCAN 64

/* Which allocator function an in-flight call or a live allocation came from. */
enum lw_kind {
    LW_MALLOC = 1,
    LW_CALLOC,
    LW_REALLOC,
    LW_REALLOCARRAY,
    LW_POSIX_MEMALIGN,
    LW_ALIGNED_ALLOC,
    LW_MEMALIGN,
    LW_VALLOC,
    LW_PVALLOC,
    LW_MMAP,
    LW_MREMAP,
    LW_FREE,
    LW_MUNMAP,
    LW_KIND_MAX,
};

/* Every way an allocation, a free or an event can be lost; exported as
 * leakwatch_lost_events_total{reason}. Keep lw_lost_reason_names in sync. */
enum lw_lost_reason {
    LW_LOST_LIVE_FULL,         /* live-allocation map full: allocation not tracked */
    LW_LOST_STACK_FAILED,      /* the kernel could not capture the user stack */
    LW_LOST_STACKS_FULL,       /* stack map full: frames of a new stack not stored */
    LW_LOST_TOTALS_FULL,       /* (process, stack) totals map full */
    LW_LOST_INFLIGHT_FULL,     /* too many threads inside an allocator call at once */
    LW_LOST_STALE_INFLIGHT,    /* an allocator call never returned (longjmp, lost uretprobe) */
    LW_LOST_UNKNOWN_FREE,      /* free/realloc of an address that is not recorded */
    LW_LOST_MISSED_FREE,       /* allocation at an address already live: its free was missed */
    LW_LOST_MUNMAP_TRUNCATED,  /* munmap range longer than the scan: regions may stay */
    LW_LOST_EVENTS_FULL,       /* process event ring buffer full */
    /* kernel allocations (kmem.bpf.c) */
    LW_LOST_K_LIVE_FULL,       /* kernel live-allocation map full */
    LW_LOST_K_STACK_FAILED,    /* kernel stack not captured */
    LW_LOST_K_STACKS_FULL,     /* kernel stack map full */
    LW_LOST_K_TOTALS_FULL,     /* kernel (process, kind, stack) totals map full */
    LW_LOST_K_UNKNOWN_FREE,    /* free of a kernel address not recorded (allocated before start) */
    LW_LOST_K_MISSED_FREE,     /* kernel allocation at a live address: its free was missed */
    LW_LOST_SNAPSHOTS_FULL,    /* unwind snapshot ring buffer full: a stack kept only its
                                  frames up to the first one without an unwind rule */
    LW_LOST_UNWIND_PENDING,    /* a walk met a frame whose snapshot was still being unwound:
                                  the stack kept its frames up to there */
    LW_LOST_STACK_TRUNCATED,   /* a walk stopped before the outermost frame: a frame pointer or
                                  a rule led to memory it could not read, or too deep */
    LW_LOST_GROWTH_PAGES_FULL, /* watch tier: a sampled first-touched page not recorded, the
                                  map of them is full */
    LW_LOST_PROCESS_SHARE,     /* a process at its share of the stack maps: a new stack of its
                                  own counted under stack id 0 */
    /* counted by the daemon, not in BPF */
    LW_LOST_ATTACH_DROPPED,    /* a process a rule matched was gone before it was attached */
    LW_LOST_EXEC_UNREAD,       /* an exec'd process was gone before the rules could be tried */
    LW_LOST_K_PROGRAM_MISSED,  /* the kernel skipped a kmem backup program's run: it was
                                  already running on that CPU (read by the daemon from the
                                  programs' info); the upper bound of events neither program saw */
    LW_LOST_PYTHON_UNSUPPORTED, /* a CPython process whose version has no frame offsets: its
                                   stacks have native frames only (once per process) */
    LW_LOST_K_FIRST_MISSED,    /* the kernel skipped a kmem tracepoint's first program: its backup
                                  ran instead (not a loss unless the backup missed it too) */
    LW_LOST_MAX,
};

/* Watch tier (no uprobes): a page a watched process touched first, sampled at its page fault,
 * keyed by (tgid, page address): the stack that touched it. The daemon checks every interval
 * which of them the process still holds (/proc/PID/pagemap), and forgets the others. */
struct lw_growth {
    __u64 stack;
    __u64 ts_ns; /* bpf_ktime_get_ns() at the fault */
};

enum lw_event_type {
    LW_EVENT_EXEC = 1,
    LW_EVENT_EXIT = 2,
    LW_EVENT_FORK = 3,
};

/* A range of a process's code [lo, hi) and how frames whose return address falls in it are
 * walked when stacks are walked with rules: LW_RANGE_FP, by the frame pointer (a file whose
 * functions keep one: CFA = rbp + 16, the caller's rbp at rbp), one read per frame and no
 * rule lookup; LW_RANGE_RULES, by rule even inside an LW_RANGE_FP range (such a file's
 * functions that do not keep a frame pointer). Elsewhere rules. */
#define LW_MAX_RANGES 8
#define LW_RANGE_FP 1u
#define LW_RANGE_RULES 2u

struct lw_code_range {
    __u64 lo;
    __u64 hi;
    __u32 kind; /* LW_RANGE_* */
    __u32 pad;
};

/* Python frames (x86-64): where a CPython process keeps its threads' frames, written by the
 * daemon (symbols/python.h has the offsets per version). At each recorded allocation the BPF
 * side finds the thread's PyThreadState in the thread's pthread key slot of the interpreter's
 * autoTSSkey (set while the thread runs Python, also while it has released the GIL), checks it
 * is this thread's, and walks its frame chain from the innermost frame: per frame the code
 * object's address and the instruction being executed. Names and lines are read by the daemon,
 * once per code object. */
#define LW_PY_MAX_FRAMES 32 /* a power of two: indexes are masked */
#define LW_PY_NONE 0xffffu

enum lw_py_instr {
    LW_PY_LASTI = 1,     /* int f_lasti at instr_off (3.9: in bytes, 3.10: in code units) */
    LW_PY_INSTR_PTR = 3, /* pointer to the instruction at instr_off, into the code object's
                            bytecode (3.11+) */
};

enum lw_py_group {
    LW_PY_GROUP_EACH = 1,     /* every frame has a native evaluation frame of its own (<= 3.10) */
    LW_PY_GROUP_IS_ENTRY = 2, /* a group ends with the frame whose u8 at entry_off is set (3.11) */
    LW_PY_GROUP_SHIM = 3,     /* a frame whose u8 owner at entry_off is 3 is the C stack's shim:
                                 not a Python frame, it ends the group before it (3.12+) */
};

struct lw_py_cfg {
    __u64 key_addr;     /* address of the u32 autoTSSkey; 0: no Python frames */
    __u16 tsd_off;      /* glibc: struct pthread's first block of key slots, from fsbase */
    __u16 thread_id_off; /* PyThreadState.thread_id (pthread_self) */
    __u16 frame_off;    /* PyThreadState: the current frame, or its _PyCFrame (cframe_off) */
    __u16 cframe_off;   /* _PyCFrame.current_frame, LW_PY_NONE when frame_off is the frame */
    __u16 code_off;     /* frame: its code object */
    __u16 back_off;     /* frame: the calling frame */
    __u16 instr_off;
    __u16 entry_off;
    __u8 instr;         /* enum lw_py_instr */
    __u8 group;         /* enum lw_py_group */
    __u16 max_frames;   /* python.max_frames, at most LW_PY_MAX_FRAMES */
    __u16 pad[4];
};

/* A Python frame in a stack: the code object's address (8-aligned, below 2^48); above bit 48
 * its instruction, as read (LW_PY_INSTR_PTR: its byte offset from the code object; LW_PY_LASTI:
 * f_lasti + 1), 0xffff when larger; and bit 0 set on the outermost frame of a group run by one
 * native evaluation frame. The daemon turns it into an instruction index. */
#define LW_PY_GROUP_END 1ULL
/* The C stack's shim frame (LW_PY_GROUP_SHIM): not a Python frame, it ends the group of the
 * frames before it. */
#define LW_PY_SHIM LW_PY_GROUP_END
#define LW_PY_INSTR_SHIFT 48

/* Per watched process, written by the daemon when it attaches. */
struct lw_proc_cfg {
    __u64 min_size;
    __u64 max_size;
    __u64 sample_mean; /* mean bytes between samples; 0: every allocation is recorded */
    /* The allocator library's mapped range. When some calls are not recorded (sampling or a
     * size filter), their entries leave no in-flight record, so an mmap, munmap or mremap
     * called from inside the library (malloc growing its heap) is recognised by its caller
     * being in this range instead. */
    __u64 lib_lo;
    __u64 lib_hi;
    __u32 flags;  /* LW_CFG_* */
    __u32 nranges;
    /* Walks with rules (LW_CFG_DWARF): code walked by frame pointers instead, where the
     * daemon found that the functions keep them (see lw_code_range). */
    struct lw_code_range ranges[LW_MAX_RANGES];
    struct lw_py_cfg py;
};

#define LW_CFG_PARTIAL 1u /* sampling or a size filter: not every call is recorded */
#define LW_CFG_DWARF 2u   /* unwind with the CFI rules of `unwind_rules` (x86-64) */

/* Session-uprobe attach cookies: the probe's address in the process above the kind. */
#define LW_COOKIE_KIND_BITS 8

/* Sampling probabilities: LW_EXP_STEPS table entries per unit of size / mean, up to
 * LW_EXP_MAX_X units (beyond which every allocation is sampled, weight 1). */
#define LW_EXP_STEPS 64
#define LW_EXP_MAX_X 24
#define LW_EXP_ENTRIES (LW_EXP_STEPS * LW_EXP_MAX_X + 2)
#define LW_EXP_TABLE 2048 /* a power of two above LW_EXP_ENTRIES: indexes are masked */

/* Key of the live-allocation map, and of the stack and stack-totals maps (addr = stack id). */
struct lw_key {
    __u32 tgid;
    __u32 pad;
    __u64 id;
};

struct lw_alloc {
    __u64 size;
    __u64 ts_ns;    /* bpf_ktime_get_ns() at allocation */
    __u64 stack;    /* stack id (hash of the frames); 0 when the stack was not captured */
    __u64 bytes;    /* bytes it counts for: size, or size / p when sampled with probability p */
    __u32 weight;   /* allocations it counts for: 1, or about 1 / p when sampled */
    __u32 kind;     /* enum lw_kind */
    __u32 counted;  /* 1 when added to the stack totals (0: totals map was full) */
    __u32 pad;
};

struct lw_totals {
    __s64 bytes;  /* outstanding */
    __s64 count;
};

/* A (process, stack) pair: outstanding, and allocated since the process was attached (the
 * alloc_space/alloc_objects of a pprof heap profile). */
struct lw_stack_totals {
    __s64 bytes;  /* outstanding */
    __s64 count;
    __u64 alloc_bytes;
    __u64 alloc_count;
};

/* Outstanding bytes are alloc_bytes - free_bytes - dropped_bytes (and counts the same way):
 * not kept as fields of their own, which cost two more atomic adds per allocation and per
 * free. */
struct lw_proc_totals {
    __u64 alloc_bytes;
    __u64 alloc_count;
    __u64 free_bytes;
    __u64 free_count;
    __u64 dropped_bytes; /* counted as allocated but not recorded (the live map full) */
    __u64 dropped_count;
    __s64 mmap_regions; /* live LW_MMAP records: munmap skips its scan when there are none */
    __s64 records;      /* live records (with sampling, fewer than the allocations counted) */
    /* Its entries in `stacks` and in `stack_totals`: each process may fill its share of them
     * (process_stacks_max, process_totals_max), so that one process cannot starve the others. */
    __s64 stacks;
    __s64 totals;
};

/* One distinct user stack. frame 0 is the allocator's entry; `caller` is the return address
 * read at entry, which frame-pointer walking from a function's first instruction misses. */
struct lw_stack {
    __u32 nr;
    __u32 flags; /* LW_STACK_PARTIAL: a snapshot's frames, until the daemon completes them */
    __u64 caller;
    __u64 ips[LW_MAX_STACK_DEPTH];
    /* The Python frames active at the allocation, innermost first (lw_py_cfg): part of the
     * stack's id, so two Python callers of one native path are two stacks. */
    __u32 py_nr;
    __u32 py_pad;
    __u64 py[LW_PY_MAX_FRAMES];
};

#define LW_STACK_PARTIAL 1u
#define LW_STACK_PENDING 4u   /* the frames up to one whose rule was being found meanwhile */
#define LW_STACK_TRUNCATED 2u /* the walk stopped before the outermost frame (a frame it could
                                 not read, or the depth limit): callers are missing */

/* Unwinding through code without frame pointers (x86-64). The daemon derives one rule per
 * return address from the code's CFI (.eh_frame) and stores it under (tgid, address); the
 * BPF side walks a stack with them, one map lookup per frame. At the first address without a
 * rule it sends a snapshot of that frame's registers and of the stack above it, from which the
 * daemon unwinds the rest and stores the rules it used: the CFI is read once per distinct
 * return address, the snapshot copied once per stack part not seen before. */
#define LW_UNWIND_DEPTH 64       /* frames unwound with rules, at most */
#define LW_DWARF_FRAMES (LW_UNWIND_DEPTH + 2) /* and with the allocator and its caller */
#define LW_SNAPSHOT_BYTES 8192   /* stack bytes a snapshot copies, at most */
#define LW_WINDOW_BYTES 1024     /* stack bytes a windowed walk copies at its start (power of 2) */

/* Bits of the watch tier's filter of tgids (tier_filter): a multiple of 64, a power of two. */
#define LW_TIER_FILTER_BITS 65536

/* The rule for the instruction at an address itself (the first frame of a walk that starts at
 * a page fault), in `unwind_rules` under (tgid, address | LW_RULE_EXACT): user addresses never
 * have bit 63 set. A return address's rule is the one at address - 1, inside the call. */
#define LW_RULE_EXACT (1ULL << 63)
#define LW_SNAPSHOT_EXACT_IP 1u

enum lw_unwind_kind {
    LW_UW_CFA_SP = 1, /* CFA = the frame's sp + cfa_off */
    LW_UW_CFA_BP = 2, /* CFA = the frame's rbp + cfa_off */
    LW_UW_END = 3,    /* outermost frame, or nothing known: the walk stops here */
    /* A HotSpot interpreter frame (x86-64): the frame's rbp is its frame pointer; the method
     * it runs (a Method*) is at rbp - 24, the caller's sp at rbp - 8 (a compiled caller's
     * unextended sp), its rbp at rbp, its return address at rbp + 8. The frame is recorded as
     * the Method* | LW_JAVA_METHOD, which the daemon names from the JVM's structures. */
    LW_UW_JAVA_INTERP = 4,
};

/* A stack frame that is an interpreted Java method (a Method*), not a code address: user
 * addresses never have bit 63 set. */
#define LW_JAVA_METHOD (1ULL << 63)

/* The caller's frame is: sp = CFA, return address at CFA - 8, and rbp read at CFA + bp_off
 * when bp_saved (else unchanged). */
struct lw_unwind_rule {
    __u32 kind; /* enum lw_unwind_kind */
    __s32 cfa_off;
    __s32 bp_off;
    __u32 bp_saved;
};

/* Sent when a walk meets a return address without a rule. `frames` is what was unwound so
 * far (ips[0] the allocator, caller its return address, as in `stacks`); ip, sp and bp are
 * the frame whose rule is missing (ip is a return address); stack[0, len) is the memory
 * from sp up. The allocation is recorded under stack id `id`, unique to this snapshot.
 * `key` (the frames so far and the depth of the missing one) marks the snapshot as sent in
 * `snapshots_sent` until the daemon has unwound it. */
struct lw_snapshot {
    __u32 tgid;
    __u32 len;
    __u32 flags; /* LW_SNAPSHOT_EXACT_IP: ip is where the walk started (a page fault), not a
                    return address */
    __u32 pad;
    __u64 id;
    __u64 key;
    __u64 ts_ns; /* bpf_ktime_get_ns() when taken */
    __u64 ip;
    __u64 sp;
    __u64 bp;
    struct lw_stack frames;
    __u8 stack[LW_SNAPSHOT_BYTES];
};

/* An allocator call between its entry and its return, per thread. */
struct lw_inflight {
    __u64 sp;     /* stack pointer at entry: tells nested calls and stale records apart */
    __u64 size;
    __u64 arg;    /* realloc/mremap: old address; posix_memalign: the out-pointer */
    __u64 stack;
    __u64 bytes;  /* what the allocation counts for (sampling weight applied) */
    __u32 weight;
    __u32 kind;
    __u32 flags;  /* LW_INF_* */
    __u32 pad;
};

#define LW_INF_RECORD 1u   /* passes the size filter: record the result */
#define LW_INF_OVERFLOW 2u /* nmemb * size overflowed: the call fails */

/* A free() of a block large enough that glibc may have mmapped it, per thread: the munmap
 * glibc then makes from inside free is not the program's own. */
struct lw_freeing {
    __u64 sp; /* 0: no mark */
    __u64 addr;
};

/* The top of the stack a windowed walk copied with one read (walk_stack). */
struct lw_stack_window {
    __u64 base; /* the address w[0] was copied from; 0: nothing copied */
    __u64 len;  /* bytes copied */
    __u64 w[LW_WINDOW_BYTES / 8];
};

struct lw_words {
    __u64 w[2];
};

/* A thread's task-local record: its outermost allocator call in flight (call.sp 0: none) and
 * its last large free. */
struct lw_thread {
    struct lw_inflight call;
    struct lw_freeing freeing;
};

/* Frees of at least this many bytes leave an lw_freeing mark (glibc's smallest mmap
 * threshold is one page; the default is 128 KiB). */
#define LW_FREEING_MIN 4096

/* Kernel allocations. Kinds, and the address spaces their keys live in: kmalloc and
 * kmem_cache objects share the slab address space (kfree frees either), pages are keyed by
 * their struct page (one per page frame, like a pfn), percpu by the percpu pointer. */
enum lw_kkind {
    LW_K_KMALLOC = 0,
    LW_K_KMEM_CACHE = 1,
    LW_K_PAGE = 2,
    LW_K_PERCPU = 3,
    LW_K_KINDS = 4,
};

enum lw_kspace {
    LW_KS_SLAB = 0,
    LW_KS_PAGE = 1,
    LW_KS_PERCPU = 2,
};

/* What the kernel programs record (kernel.tracking: escalate records only what grows): the
 * kinds (bit 1 << enum lw_kkind), and for the slab kinds the object sizes, when any (a slab
 * cache or kmalloc size class; SLUB merges caches of one size, so a size is what a cache is). */
#define LW_KFILTER_SIZES 8
struct lw_kfilter {
    __u32 kinds;
    __u32 nsizes; /* 0: every size */
    __u64 sizes[LW_KFILTER_SIZES];
};

struct lw_kkey {
    __u64 addr;
    __u32 space; /* enum lw_kspace */
    __u32 pad;
};

struct lw_kalloc {
    __u64 size;
    __u64 ts_ns;
    __u64 stack;
    __u64 start; /* the attributed process's start (boot-time ns), 0 when none */
    __u32 tgid;  /* 0: interrupt or kernel thread */
    __u32 kind;  /* enum lw_kkind */
};

/* Outstanding kernel bytes per (process, kind, stack). `start` tells a reused pid apart. */
struct lw_ktotals_key {
    __u32 tgid;
    __u32 kind;
    __u64 start;
    __u64 stack;
};

struct lw_kstack {
    __u32 nr;
    /* Module loads and unloads counted (kmem.bpf.c's module_generation) when the stack was
     * first stored: the daemon names a frame in a module only from symbols read when that module
     * was already loaded, never after another module that took its addresses later. */
    __u32 modules;
    __u64 ips[LW_MAX_STACK_DEPTH];
};

struct lw_event {
    __u32 type;
    __u32 pid;   /* tgid */
    __u32 ppid;  /* fork: parent tgid */
    __u32 pad;
    char comm[LW_COMM_LEN];
};

#endif
