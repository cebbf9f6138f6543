// The loaded BPF object: allocator uprobes per process, process events, and its maps.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "aggregate/source.h"
#include "config/config.h"
#include "loader/keep.h"
#include "tracker/attacher.h"
#include "unwind/snapshots.h"
#include "util/result.h"

struct leakwatch_bpf;
struct bpf_link;
struct ring_buffer;
struct lw_event;
struct lw_snapshot;

namespace leakwatch {

// How uprobes are attached: one link per probe (every kernel); one multi-uprobe link for all
// entries and one for all returns of a process (6.6+: one kernel grace period to detach
// instead of one per probe); or one session-uprobe link for both (6.13+: an entry that
// records nothing skips its return probe). kAuto picks the newest the kernel has.
enum class ProbeMode { kAuto, kSession, kMulti, kClassic };
const char* probe_mode_name(ProbeMode mode);

// The aggregator reads it, the tracker attaches through it, the unwinder writes to it.
class Probes : public AllocationSource, public Attacher, public SnapshotMaps {
  public:
    using EventHandler = std::function<void(const lw_event&)>;

    // Opens, sizes (from limits) and loads the BPF object, and attaches the process
    // event tracepoints. Errors name the program or map and the errno. With a keeper, the maps
    // are those the previous run kept (when their layout is this one's) and are kept in turn,
    // as are the links (keep.h).
    static Result<std::unique_ptr<Probes>> load(const Limits& limits,
                                                ProbeMode mode = ProbeMode::kAuto,
                                                Keeper* keeper = nullptr);
    ProbeMode mode() const { return mode_; }
    ~Probes() override;

    Result<std::unique_ptr<Attachment>> attach(pid_t pid, const ProbeTarget& target) override;
    Result<void> watch(uint32_t tgid, const Recording& recording) override;
    void unwatch(uint32_t tgid) override;
    Result<void> watch_memory(uint32_t tgid, const Recording& recording,
                              uint64_t fault_sample_bytes) override;
    void unwatch_memory(uint32_t tgid) override;
    // One walk of each map.
    void purge(const std::set<uint32_t>& tgids) override;
    void purge_probes(const std::set<uint32_t>& tgids) override;
    // Whether the watch tier can sample page faults on this kernel (x86-64's user page-fault
    // tracepoint); without it the tier follows the processes' memory from /proc alone.
    bool samples_faults() const;

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
    // Handles the process events waiting (up to a time budget; the rest stay for the next call);
    // returns how many, or a negative errno.
    int poll_events(int timeout_ms);
    // The probes of processes the previous run kept, each under the ProbeTarget::keep_as it
    // was attached with (once; the tracker adopts them or lets them go).
    std::vector<std::pair<std::string, std::unique_ptr<Attachment>>> take_kept();
    // The processes the maps hold records or a recording entry of.
    std::set<uint32_t> recorded_processes();

    std::vector<std::pair<uint32_t, ProcTotals>> process_totals() override;
    std::vector<StackTotals> stack_totals() override;
    std::optional<RawStack> stack(uint32_t tgid, uint64_t id) override;
    std::vector<LiveAllocation> live_allocations(const std::set<uint32_t>& tgids) override;
    LostCounters lost() override;
    std::vector<MapUsage> usage() override;
    std::vector<GrowthPage> growth_pages() override;
    void forget_growth_pages(const std::vector<std::pair<uint32_t, uint64_t>>& pages) override;

  private:
    Probes() = default;
    static int on_ring_event(void* ctx, void* data, size_t size);
    static int on_snapshot(void* ctx, void* data, size_t size);
    // Groups the process links the previous run kept into attachments (kept_attachments_).
    void take_kept_links();

    leakwatch_bpf* skel_ = nullptr;
    std::shared_ptr<KeptSet> kept_;  // null: nothing kept (--check-config)
    std::vector<std::pair<std::string, std::unique_ptr<Attachment>>> kept_attachments_;
    ring_buffer* ring_ = nullptr;
    ring_buffer* snapshot_ring_ = nullptr;
    std::vector<bpf_link*> event_links_;
    // The page-fault program, attached while the watch tier holds a process (every page fault
    // of the machine runs it as far as a test of the tgid's bit in tier_filter).
    bpf_link* fault_link_ = nullptr;
    std::set<uint32_t> tier_;
    // tier_filter's bit of a tgid (bpf/leakwatch.bpf.c), and whether another tgid of the tier
    // has it too.
    void set_tier_bit(uint32_t tgid, bool on);
    bool tier_bit_shared(uint32_t tgid) const;
    EventHandler handler_;
    size_t events_handled_ = 0;  // in the current poll_events
    std::chrono::steady_clock::time_point budget_end_;
    SnapshotHandler snapshot_handler_;
    Limits limits_;
    int ncpus_ = 1;
    ProbeMode mode_ = ProbeMode::kClassic;  // never kAuto once loaded
};

}  // namespace leakwatch
