// What the aggregator reads: the BPF maps in the daemon, plain data in unit tests.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "aggregate/loss.h"

namespace leakwatch {

struct ProcTotals {
    int64_t bytes = 0;  // outstanding
    int64_t count = 0;
    uint64_t alloc_bytes = 0;
    uint64_t alloc_count = 0;
    uint64_t free_bytes = 0;
    uint64_t free_count = 0;
};

struct StackTotals {
    uint32_t tgid = 0;
    uint64_t stack = 0;  // 0: stack not captured
    int64_t bytes = 0;   // outstanding
    int64_t count = 0;
    uint64_t alloc_bytes = 0;  // allocated since the process was attached
    uint64_t alloc_count = 0;
};

struct RawStack {
    uint64_t caller = 0;        // return address read at the allocator's entry
    std::vector<uint64_t> ips;  // ips[0] is the allocator entry
    // The id these frames have when walked in one go; differs from the id they are stored
    // under for a stack completed from an unwind snapshot. 0: same as the stored id.
    uint64_t content_id = 0;
    bool partial = false;    // a snapshot's frames so far, not yet completed by the daemon
    bool truncated = false;  // the walk stopped before the outermost frame
    bool pending = false;    // frames up to one whose snapshot was in flight (callers missing)
    // Python frames, innermost first, as the BPF side encodes them (bpf/leakwatch.h: code
    // object, instruction as recorded, group end).
    std::vector<uint64_t> python{};
};

struct LiveAllocation {
    uint32_t tgid = 0;
    uint64_t address = 0;
    uint64_t size = 0;
    uint64_t ts_ns = 0;  // CLOCK_MONOTONIC
    uint64_t stack = 0;
};

// Watch tier: a page a process touched first, sampled at its page fault, and the stack that
// touched it.
struct GrowthPage {
    uint32_t tgid = 0;
    uint64_t page = 0;   // address
    uint64_t stack = 0;  // 0: not captured
    uint64_t ts_ns = 0;  // CLOCK_MONOTONIC, the fault
};

struct MapUsage {
    std::string map;
    uint64_t entries = 0;
    uint64_t capacity = 0;
};

class AllocationSource {
  public:
    virtual ~AllocationSource() = default;
    virtual std::vector<std::pair<uint32_t, ProcTotals>> process_totals() = 0;
    virtual std::vector<StackTotals> stack_totals() = 0;
    virtual std::optional<RawStack> stack(uint32_t tgid, uint64_t id) = 0;
    // Live allocations of the given processes (walks the live map: used only for min_age).
    virtual std::vector<LiveAllocation> live_allocations(const std::set<uint32_t>& tgids) = 0;
    virtual LostCounters lost() = 0;
    virtual std::vector<MapUsage> usage() = 0;
    // Watch tier: the sampled first-touched pages of every process, and forgetting those
    // released (a source without a watch tier has none).
    virtual std::vector<GrowthPage> growth_pages() { return {}; }
    virtual void forget_growth_pages(const std::vector<std::pair<uint32_t, uint64_t>>&) {}
};

}  // namespace leakwatch
