// Turns the kernel's running totals into snapshots: per process, per stack, symbolized.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "aggregate/growth.h"
#include "aggregate/kernel.h"
#include "aggregate/source.h"
#include "config/config.h"
#include "proc/proc.h"
#include "proc/proc_reads.h"
#include "symbols/symbolizer.h"
#include "util/result.h"

namespace leakwatch {

// How a process is tracked now: the watch tier (the kernel's accounting and sampled page
// faults), escalated to allocator probes for a while, or with probes always on (a rule's
// tracking: sampled or full).
enum class TrackingState { kWatch, kEscalated, kSampled, kFull };
const char* tracking_name(TrackingState state);
// Whether a process of this state is judged by the kernel's accounting of its memory (its
// rule escalates) rather than by what the allocator probes recorded.
inline bool follows_memory(TrackingState s) {
    return s == TrackingState::kWatch || s == TrackingState::kEscalated;
}

// What the tracker knows of a watched process.
struct ProcessMeta {
    uint32_t pid = 0;
    std::string watch;
    std::string comm;
    Duration min_age{0};
    std::string symbol_prefix;
    double attached_at = 0;  // unix seconds, when it was first watched
    std::string unit;        // the `unit` label (proc/proc.h, unit_label)
    TrackingState tracking = TrackingState::kFull;
    double escalated_at = 0;          // unix seconds, while escalated
    uint64_t fault_sample_bytes = 0;  // watch tier: bytes one sampled first-touch page stands for
};

// The kernel's accounting of a process's memory, read once per interval (proc/proc.h).
class MemoryReader {
  public:
    virtual ~MemoryReader() = default;
    virtual Result<ProcMemory> memory(int pid) = 0;
    // For each page, whether the process still holds it; a page whose state is not known is
    // taken as held. Error when the process is gone.
    virtual Result<std::vector<bool>> pages_held(int pid, const std::vector<uint64_t>& pages) = 0;
    // What is kept of the processes `keep` does not name goes.
    virtual void forget_unless(const std::function<bool(int)>& keep) { (void)keep; }
};

// The real one: /proc/PID/status (which takes no lock the process can hold up), and
// /proc/PID/pagemap, which takes its memory map lock: read on the symbolizer's /proc read pool
// (proc/proc_reads.h), never on the caller's thread. The pages a read has answered for keep
// that answer until the next read ends; a page it has not (sampled since, or every page
// before a first read ends) counts as held: its first touch was seen, and nothing says it has
// been let go since. A process whose pagemap read is held up thus keeps its growth stacks as
// they were, plus what it touches meanwhile, and the read is refused as slow after 10 s
// (files_refused{reason="slow"}).
class ProcMemoryReader : public MemoryReader {
  public:
    ProcMemoryReader(const ProcReader& proc, Symbolizer& symbolizer);
    Result<ProcMemory> memory(int pid) override { return proc_.memory(pid); }
    Result<std::vector<bool>> pages_held(int pid, const std::vector<uint64_t>& pages) override;
    void forget_unless(const std::function<bool(int)>& keep) override;

  private:
    using PagesHeld = std::unordered_map<uint64_t, bool>;
    ProcReader proc_;  // a copy: reads may outlive the caller's
    ProcFileReads<PagesHeld> pagemaps_;
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
    // The innermost frames that are the allocator's own (growth stacks: that come before the
    // touch site's, see touch_frames)
    uint32_t allocator_frames = 0;
};

struct ProcessView {
    uint32_t pid = 0;
    std::string watch;
    std::string comm;
    std::string unit;
    double attached_at = 0;
    TrackingState tracking = TrackingState::kFull;
    double escalated_at = 0;
    ProcTotals totals;  // what the allocator probes recorded (zero without probes)
    ProcMemory memory;  // the kernel's accounting
    bool memory_known = false;
    // Outstanding bytes descending; stacks that hold nothing now come last (the detector
    // keeps following them: a release is part of a series' history).
    std::vector<StackView> stacks;
    // Watch tier: per stack that first touched them, the bytes of the sampled pages the
    // process still holds (each sampled page standing for fault_sample_bytes), descending;
    // count is the sampled pages.
    std::vector<StackView> growth_stacks;
    // The process's series: its memory (anon + swap) when follows_memory(tracking), else its
    // outstanding bytes from the probes.
    Growth growth;
    int64_t series_bytes() const {
        return follows_memory(tracking) ? static_cast<int64_t>(memory.anon + memory.swap)
                                        : totals.bytes;
    }
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
    // A Python frame: its code object's function, file and the line of the instruction
    // (as the BPF side recorded it, bpf/leakwatch.h). Module "[python]".
    virtual Frame resolve_python(uint32_t pid, uint64_t code, uint32_t instruction) {
        (void)pid, (void)instruction;
        Frame f;
        f.address = code;
        f.module = "[python]";
        f.module_offset = code;
        return f;
    }
};

// Puts a stack's Python frames in place of the native frames of the interpreter that run them:
// the k-th group (bpf/leakwatch.h) replaces the k-th native _PyEval_EvalFrameDefault, innermost
// first; groups left over go after the native frames. Frames the interpreter's perf map names
// (-X perf trampolines, "py::") go: the Python frames name them. Returns the interpreter's
// module ("" when no frame was replaced).
std::string interleave_python(std::vector<Frame>& frames, std::vector<std::vector<Frame>> groups);

// The frame addresses of a raw stack, caller included once: frame-pointer walking from an
// allocator's first instruction skips the direct caller unless the kernel adds it itself.
std::vector<uint64_t> frame_addresses(const RawStack& raw);

class Aggregator {
  public:
    Aggregator(AllocationSource& source, FrameResolver& resolver, MemoryReader& memory)
        : source_(source), resolver_(resolver), memory_(memory) {}

    // Reads the source once; `now_ns` is CLOCK_MONOTONIC, for min_age. What is cached of a
    // process lasts as long as its attachment: a process no longer listed, or attached anew
    // (another attached_at: an exec, a reused pid), has its stacks resolved afresh.
    Snapshot sample(const std::vector<ProcessMeta>& processes, uint64_t now_ns);

  private:
    struct Resolved {
        std::shared_ptr<const std::vector<Frame>> frames;
        std::string site;
        std::string touch_site;  // as the stack of a first touch (watch tier)
        uint64_t id = 0;  // the stack's id by its frames (RawStack::content_id, else its own)
        bool unnamed_jit = false;  // has frames in anonymous memory without a name
        bool incomplete = false;   // StackView::incomplete
        uint32_t allocator_frames = 0;
        uint32_t touch_frames = 0;  // touch_frames(), for the stack as a first touch
        uint64_t jit_generation = 0;
    };
    const Resolved& resolve_stack(const ProcessMeta& meta, uint64_t id);
    void forget_detached(const std::vector<ProcessMeta>& processes);
    // The watch tier's stacks of every process, from its sampled pages it still holds; the
    // pages it no longer holds (and those of processes no longer watched) are forgotten.
    void add_growth_stacks(const std::vector<ProcessMeta>& processes, Snapshot& snap);

    AllocationSource& source_;
    FrameResolver& resolver_;
    MemoryReader& memory_;
    std::map<std::pair<uint32_t, uint64_t>, Resolved> cache_;
    std::map<uint32_t, double> cached_attach_;  // pid -> attached_at of what cache_ holds
    Resolved unresolved_;  // the last stack that could not be resolved (not cached)
};

}  // namespace leakwatch
