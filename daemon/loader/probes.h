// The loaded BPF object: allocator uprobes per process, process events, and its maps.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "aggregate/source.h"
#include "config/config.h"
#include "unwind/snapshots.h"
#include "util/result.h"

struct leakwatch_bpf;
struct bpf_link;
struct ring_buffer;
struct lw_event;
struct lw_snapshot;

namespace leakwatch {

// The allocator functions leakwatch probes, in the order they are attached.
struct AllocatorFunction {
    const char* name;
    bool has_return;  // false: entry-only (free, munmap)
    uint32_t kind;    // enum lw_kind
    int arguments;    // integer arguments the entry program reads
};

// How uprobes are attached: one link per probe (every kernel); one multi-uprobe link for all
// entries and one for all returns of a process (6.6+: one kernel grace period to detach
// instead of one per probe); or one session-uprobe link for both (6.13+: an entry that
// records nothing skips its return probe). kAuto picks the newest the kernel has.
enum class ProbeMode { kAuto, kSession, kMulti, kClassic };
const char* probe_mode_name(ProbeMode mode);
const std::vector<AllocatorFunction>& allocator_functions();

// Where each allocator function of one file is: file offsets for uprobes.
struct ProbeTarget {
    std::string path;  // path the kernel opens (through /proc/PID/root)
    std::vector<std::pair<std::string, uint64_t>> offsets;  // function name -> file offset
    // Where the library's file offset 0 would be in the process (start - offset of the mapping
    // holding the probes), so that a probe's address is load_bias + file offset.
    uint64_t load_bias = 0;
};

// The uprobes of one process; detached when destroyed.
class Attachment {
  public:
    ~Attachment();
    Attachment(const Attachment&) = delete;
    Attachment& operator=(const Attachment&) = delete;
    size_t links() const { return links_.size() + fds_.size(); }

  private:
    friend class Probes;
    Attachment() = default;
    std::vector<bpf_link*> links_;
    std::vector<int> fds_;  // multi-uprobe links
};

// The aggregator reads it, the unwinder writes to it.
class Probes : public AllocationSource, public SnapshotMaps {
  public:
    using EventHandler = std::function<void(const lw_event&)>;

    // Opens, sizes (from limits) and loads the BPF object, and attaches the process
    // event tracepoints. Errors name the program or map and the errno.
    static Result<std::unique_ptr<Probes>> load(const Limits& limits,
                                                ProbeMode mode = ProbeMode::kAuto);
    ProbeMode mode() const { return mode_; }
    ~Probes() override;

    Result<std::unique_ptr<Attachment>> attach(pid_t pid, const ProbeTarget& target);
    // What the BPF side records of one process.
    struct Recording {
        uint64_t min_size = 0;
        uint64_t max_size = UINT64_MAX;
        uint64_t sample_bytes = 0;  // 0: every allocation
        uint64_t lib_lo = 0;        // the allocator library's mapped range
        uint64_t lib_hi = 0;
        bool dwarf_unwind = false;  // walk stacks with unwind rules (x86-64)
    };
    // Starts recording a process (after attach): its filters and zeroed totals.
    Result<void> watch(uint32_t tgid, const Recording& recording);
    void unwatch(uint32_t tgid);
    // Deletes every live allocation, stack and total of these processes (one map walk).
    void purge(const std::set<uint32_t>& tgids);

    // Waits up to timeout_ms for process events and hands each to the handler.
    void set_event_handler(EventHandler handler) { handler_ = std::move(handler); }
    // Unwind snapshots (walks that met a return address without a rule) go to this handler,
    // from poll_snapshots; it answers through the SnapshotMaps methods. A thread of its own
    // polls them.
    using SnapshotHandler = std::function<void(const lw_snapshot&)>;
    void set_snapshot_handler(SnapshotHandler handler) { snapshot_handler_ = std::move(handler); }
    int poll_snapshots(int timeout_ms);
    void set_unwind_rule(uint32_t tgid, uint64_t pc, const lw_unwind_rule& rule) override;
    void set_stack(uint32_t tgid, uint64_t id, const lw_stack& stack) override;
    void snapshot_done(uint32_t tgid, uint64_t key) override;
    bool watching(uint32_t tgid) const override;
    int poll_events(int timeout_ms);

    std::vector<std::pair<uint32_t, ProcTotals>> process_totals() override;
    std::vector<StackTotals> stack_totals() override;
    std::optional<RawStack> stack(uint32_t tgid, uint64_t id) override;
    std::vector<LiveAllocation> live_allocations(const std::set<uint32_t>& tgids) override;
    LostCounters lost() override;
    std::vector<MapUsage> usage() override;

  private:
    Probes() = default;
    static int on_ring_event(void* ctx, void* data, size_t size);
    static int on_snapshot(void* ctx, void* data, size_t size);

    leakwatch_bpf* skel_ = nullptr;
    ring_buffer* ring_ = nullptr;
    ring_buffer* snapshot_ring_ = nullptr;
    std::vector<bpf_link*> event_links_;
    EventHandler handler_;
    SnapshotHandler snapshot_handler_;
    Limits limits_;
    int ncpus_ = 1;
    ProbeMode mode_ = ProbeMode::kClassic;  // never kAuto once loaded
};

}  // namespace leakwatch
