// Turns the kernel's running totals into snapshots: per process, per stack, symbolized.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aggregate/growth.h"
#include "aggregate/kernel.h"
#include "aggregate/source.h"
#include "config/config.h"
#include "symbols/symbolizer.h"

namespace leakwatch {

// What the tracker knows of a watched process.
struct ProcessMeta {
    uint32_t pid = 0;
    std::string watch;
    std::string comm;
    Duration min_age{0};
    std::string symbol_prefix;
    double attached_at = 0;  // unix seconds
};

struct StackView {
    uint64_t id = 0;
    int64_t bytes = 0;  // outstanding
    int64_t count = 0;
    std::string site;
    std::shared_ptr<const std::vector<Frame>> frames;  // shared by every snapshot
    Growth growth;
    // Callers are missing: the walk stopped early, or (unwind rules) the stack was recorded
    // while its first snapshot was being unwound and kept the frames walked so far.
    bool incomplete = false;
    uint64_t alloc_bytes = 0;  // allocated since the process was attached (freed or not)
    uint64_t alloc_count = 0;
    uint32_t allocator_frames = 0;  // the innermost frames that are the allocator's own
};

struct ProcessView {
    uint32_t pid = 0;
    std::string watch;
    std::string comm;
    double attached_at = 0;
    ProcTotals totals;
    // Outstanding bytes descending; stacks that hold nothing now come last (the detector
    // keeps following them: a release is part of a series' history).
    std::vector<StackView> stacks;
    Growth growth;
};

struct Snapshot {
    std::chrono::system_clock::time_point taken{};
    std::vector<ProcessView> processes;  // ascending pid
    LostCounters lost{};
    std::vector<MapUsage> usage;
    std::optional<KernelView> kernel;  // when kernel tracking is on
};

// Names the code addresses of watched processes: the tracker in the daemon (with each process's
// own maps and the symbolizer), a table of fake functions in tests.
class FrameResolver {
  public:
    virtual ~FrameResolver() = default;
    virtual Frame resolve(uint32_t pid, uint64_t address) = 0;
    // A number that changes when more of a process's JIT-compiled code can be named (its perf
    // map was read anew): stacks with unnamed JIT frames are then resolved again.
    virtual uint64_t jit_generation(uint32_t pid) = 0;
};

// The frame addresses of a raw stack, caller included once: frame-pointer walking from an
// allocator's first instruction skips the direct caller unless the kernel adds it itself.
std::vector<uint64_t> frame_addresses(const RawStack& raw);

class Aggregator {
  public:
    Aggregator(AllocationSource& source, FrameResolver& resolver)
        : source_(source), resolver_(resolver) {}

    // Reads the source once; `now_ns` is CLOCK_MONOTONIC, for min_age. What is cached of a
    // process lasts as long as its attachment: a process no longer listed, or attached anew
    // (another attached_at: an exec, a reused pid), has its stacks resolved afresh.
    Snapshot sample(const std::vector<ProcessMeta>& processes, uint64_t now_ns);

  private:
    struct Resolved {
        std::shared_ptr<const std::vector<Frame>> frames;
        std::string site;
        uint64_t id = 0;  // the stack's id by its frames (RawStack::content_id, else its own)
        bool unnamed_jit = false;  // has frames in anonymous memory without a name
        bool incomplete = false;   // StackView::incomplete
        uint32_t allocator_frames = 0;
        uint64_t jit_generation = 0;
    };
    const Resolved& resolve_stack(const ProcessMeta& meta, uint64_t id);
    void forget_detached(const std::vector<ProcessMeta>& processes);

    AllocationSource& source_;
    FrameResolver& resolver_;
    std::map<std::pair<uint32_t, uint64_t>, Resolved> cache_;
    std::map<uint32_t, double> cached_attach_;  // pid -> attached_at of what cache_ holds
    Resolved unresolved_;  // the last stack that could not be resolved (not cached)
};

}  // namespace leakwatch
