// Kernel allocations per kind, per stack and per process, from the kmem maps' totals.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "aggregate/growth.h"
#include "aggregate/kernel_source.h"
#include "symbols/symbolizer.h"

namespace leakwatch {

struct KernelStackView {
    uint64_t id = 0;
    uint32_t kind = 0;
    int64_t bytes = 0;
    int64_t count = 0;
    std::string site;
    std::shared_ptr<const std::vector<Frame>> frames;
    Growth growth;
};

struct KernelProcessView {
    uint32_t pid = 0;
    uint64_t start = 0;  // boot-time ns: pid and start name the process
    std::string comm;
    std::string unit;  // the `unit` label (proc/proc.h, unit_label), as for user series
    int64_t bytes = 0;
    int64_t count = 0;
    Growth growth;
};

// kernel.tracking: escalate: one of the kernel's own counters (a slab cache's objects in
// use, or a kind /proc/meminfo counts), followed by the leak detector, and whether its
// allocation tracepoints are on for it now.
struct KernelCounterView {
    std::string name;  // a slab cache ("kmalloc-1k", "dentry"), or "percpu", "page", "vmalloc"
    int64_t bytes = 0;
    bool escalated = false;
    double escalated_at = 0;  // unix seconds, while escalated
    Growth growth;
};

struct KernelView {
    // kernel.tracking: escalate: the counters, bytes descending (caches in use first).
    std::vector<KernelCounterView> counters;
    std::array<int64_t, 4> bytes{};  // per kind, as in kKernelKinds
    std::array<int64_t, 4> count{};
    // Pages that back slab objects or a large kmalloc: outstanding, but already counted as
    // kmalloc/kmem_cache objects, so in no total above.
    int64_t backing_bytes = 0;
    std::vector<KernelStackView> stacks;       // outstanding bytes descending, empty stacks last
    std::vector<KernelProcessView> processes;  // live processes, outstanding bytes descending
    // Of the totals map as read: its entries, and the live records they count (every live
    // record is counted in one entry), so map use is known without walking the maps again.
    uint64_t totals_entries = 0;
    uint64_t live_records = 0;
};

// Names kernel code addresses: the kernel's symbols in the daemon (symbols/kernel_symbols.h),
// a table of fake functions in tests.
class KernelNamer {
  public:
    virtual ~KernelNamer() = default;
    // The frame at `address` of a stack stored when the kernel had counted `modules` module
    // loads and unloads (KernelStack::modules); unnamed when it cannot be named (yet).
    virtual Frame name(uint64_t address, uint32_t modules) = 0;
    // Called after each sample's stacks were named: may read the symbols again (for addresses
    // that could not be named). A number that changes when more may be named now: stacks with
    // unnamed frames are then named again.
    virtual uint64_t refresh() = 0;
};
// What names a process in the kernel's series: its comm, and the unit label of its cgroup.
struct ProcessIdentity {
    std::string comm;
    std::string unit;
};
// Process `tgid`'s identity if it is still the one that started at `start_ns`, else nullopt.
using ProcessLookup =
    std::function<std::optional<ProcessIdentity>(uint32_t tgid, uint64_t start_ns)>;

// True when a kernel stack runs in interrupt context: it passes through a hard interrupt,
// softirq or NMI entry (x86 and arm64 names).
bool in_interrupt(const std::vector<Frame>& frames);

// The id a kernel stack is shown under (stack_id): a hash of its frames as symbolized
// (module, symbol, offset; for an address without a symbol, its offset from the kernel's
// text), never of raw addresses. The BPF side's id hashes addresses, and with the kernel's
// symbols (public for a distribution kernel) a few hundred guesses of the KASLR offset would
// find the one that gives it. The same on every boot of the same kernel.
uint64_t kernel_stack_id(const std::vector<Frame>& frames);

class KernelAggregator {
  public:
    KernelAggregator(KernelSource& source, KernelNamer& namer, ProcessLookup lookup)
        : source_(source), namer_(namer), lookup_(std::move(lookup)) {}

    // Reads the totals once, and deletes the empty ones of processes that are gone (their
    // pid can be reused; their key, which holds the start time, never will be). A stack's
    // frames are named once and kept; only frames still unnamed are named again, when the
    // namer can name more.
    KernelView sample();

  private:
    struct Resolved {
        uint64_t id = 0;  // what the stack is shown as (kernel_stack_id)
        std::shared_ptr<const std::vector<Frame>> frames;
        std::string site;
        bool backing = false;
        bool interrupt = false;  // made while serving an interrupt: charged to no process
        // Kept while some frame is unnamed, to name it again later.
        std::optional<KernelStack> unnamed;
    };
    const Resolved& resolve(uint64_t id);
    // Names the frames of `stack` that `frames` (empty: all) has not named, and what follows
    // from the frames: the site, backing pages, interrupt context.
    void name_frames(const KernelStack& stack, Resolved& r);

    KernelSource& source_;
    KernelNamer& namer_;
    ProcessLookup lookup_;
    std::unordered_map<uint64_t, Resolved> cache_;
    Resolved unresolved_;
    uint64_t names_version_ = 0;
};

}  // namespace leakwatch
