// What the kernel aggregator reads: the kmem BPF maps in the daemon, plain data in tests.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "aggregate/source.h"

namespace leakwatch {

struct KernelTotals {
    uint32_t tgid = 0;   // 0: interrupt or kernel thread
    uint32_t kind = 0;   // index into kKernelKinds
    uint64_t start = 0;  // the process's start, boot-time ns (tells reused pids apart)
    uint64_t stack = 0;
    int64_t bytes = 0;
    int64_t count = 0;
};

struct KernelStack {
    std::vector<uint64_t> ips;  // innermost first
    // Module loads and unloads the kernel had counted when the stack was first stored
    // (lw_kstack.modules); 0 on kernels that do not count them.
    uint32_t modules = 0;
};

class KernelSource {
  public:
    virtual ~KernelSource() = default;
    virtual std::vector<KernelTotals> kernel_totals() = 0;
    virtual std::optional<KernelStack> kernel_stack(uint64_t id) = 0;
    // Deletes totals that are zero and belong to processes that are gone.
    virtual void remove_kernel_totals(const std::vector<KernelTotals>& keys) = 0;
    // Its own loss counters (the kernel_* reasons).
    virtual LostCounters lost() = 0;
    // Use of its maps; `live_records` and `totals_entries` as KernelAggregator read them
    // (KernelView), so the large maps are not walked again.
    virtual std::vector<MapUsage> usage(uint64_t live_records, uint64_t totals_entries) = 0;
};

}  // namespace leakwatch
