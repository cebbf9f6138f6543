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

using KernelResolver = std::function<Frame(uint64_t address)>;
// The comm of process `tgid` if it is still the one that started at `start_ns`, else nullopt.
using ProcessLookup = std::function<std::optional<std::string>(uint32_t tgid, uint64_t start_ns)>;

// True when a kernel stack runs in interrupt context: it passes through a hard interrupt,
// softirq or NMI entry (x86 and arm64 names).
bool in_interrupt(const std::vector<Frame>& frames);

class KernelAggregator {
  public:
    KernelAggregator(KernelSource& source, KernelResolver resolve, ProcessLookup lookup)
        : source_(source), resolve_(std::move(resolve)), lookup_(std::move(lookup)) {}

    // Reads the totals once, and deletes the empty ones of processes that are gone (their
    // pid can be reused; their key, which holds the start time, never will be).
    KernelView sample();

  private:
    struct Resolved {
        std::shared_ptr<const std::vector<Frame>> frames;
        std::string site;
        bool backing = false;
        bool interrupt = false;  // made while serving an interrupt: charged to no process
    };
    const Resolved& resolve(uint64_t id);

    KernelSource& source_;
    KernelResolver resolve_;
    ProcessLookup lookup_;
    std::unordered_map<uint64_t, Resolved> cache_;
    Resolved unresolved_;
};

}  // namespace leakwatch
