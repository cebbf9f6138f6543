// The ways an allocation, a free or an event can be lost: one table read by the metrics (the
// `reason` label), the log (the advice said once) and docs/metrics.md (checked by a unit test).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "leakwatch.h"

namespace leakwatch {

struct LossReason {
    uint32_t id;              // enum lw_lost_reason
    std::string_view name;    // the `reason` label of leakwatch_lost_events_total
    bool expected;            // in normal operation: logged at info, not warn
    std::string_view advice;  // what an operator can do, logged the first time it happens
    // Its row in docs/metrics.md ("Lost events") after the name: what happened | what to do.
    std::string_view doc;
};

// In the order of enum lw_lost_reason, which indexes the BPF loss counters.
inline constexpr std::array<LossReason, LW_LOST_MAX> kLossReasons = {{
    {LW_LOST_LIVE_FULL, "live_map_full", false, "raise limits.live_allocations",
     "an allocation could not be recorded: the live map is full | raise "
     "`limits.live_allocations`"},
    {LW_LOST_STACK_FAILED, "stack_capture_failed", false,
     "the kernel could not walk some user stacks",
     "the kernel could not walk a user stack | none; its bytes go to `stack_id` 0"},
    {LW_LOST_STACKS_FULL, "stack_map_full", false, "raise limits.stacks",
     "a new stack's frames could not be stored | raise `limits.stacks`"},
    {LW_LOST_TOTALS_FULL, "stack_totals_map_full", false, "raise limits.stack_totals",
     "a new (process, stack) pair could not be counted | raise `limits.stack_totals`"},
    {LW_LOST_INFLIGHT_FULL, "inflight_full", false,
     "raise limits.threads (kernels before 5.11), else report it",
     "a thread's record of its allocator call could not be made: before 5.11, `limits.threads` "
     "threads were inside an allocator call at once; later, the kernel was out of memory or the "
     "thread's task storage busy on that CPU at that moment; the call is not recorded | before "
     "5.11 raise `limits.threads`; later, report a high rate with the kernel version"},
    {LW_LOST_STALE_INFLIGHT, "stale_inflight", false, "an allocator call never returned (longjmp?)",
     "an allocator call never returned (longjmp out of it, or a lost return probe) | none"},
    {LW_LOST_UNKNOWN_FREE, "unknown_free", true,
     "frees of blocks not recorded (allocated before attach, filtered by size, or not sampled) "
     "are expected",
     "a free of an address leakwatch never saw allocated (allocated before attach, or not "
     "tracked) | expected after attaching to a running process"},
    {LW_LOST_MISSED_FREE, "missed_free", false, "a free was not seen; the old record was replaced",
     "an allocation at an address still recorded as live: its free was missed; the old record "
     "was replaced | none"},
    {LW_LOST_MUNMAP_TRUNCATED, "munmap_range_truncated", false,
     "a munmap range was longer than leakwatch scans; regions in it may stay",
     "a munmap range longer than leakwatch scans (64 pages beyond recorded regions); regions in "
     "the rest may stay recorded | none"},
    {LW_LOST_EVENTS_FULL, "events_ring_full", false,
     "process events were dropped; /proc is rescanned",
     "exec/fork/exit events were dropped | none: /proc is rescanned at once"},
    {LW_LOST_K_LIVE_FULL, "kernel_live_map_full", false, "raise limits.kernel_live_allocations",
     "a kernel allocation could not be recorded | raise `limits.kernel_live_allocations`"},
    {LW_LOST_K_STACK_FAILED, "kernel_stack_capture_failed", false,
     "the kernel could not walk some kernel stacks", "a kernel stack could not be walked | none"},
    {LW_LOST_K_STACKS_FULL, "kernel_stack_map_full", false, "raise limits.kernel_stacks",
     "a new kernel stack's frames could not be stored | raise `limits.kernel_stacks`"},
    {LW_LOST_K_TOTALS_FULL, "kernel_totals_map_full", false, "raise limits.kernel_totals",
     "a new (process, kind, stack) triple could not be counted | raise `limits.kernel_totals`"},
    {LW_LOST_K_UNKNOWN_FREE, "kernel_unknown_free", true,
     "frees of kernel memory allocated before leakwatchd started are expected",
     "a kernel free of an address leakwatch never saw allocated | expected: memory allocated "
     "before leakwatchd started"},
    {LW_LOST_K_MISSED_FREE, "kernel_missed_free", false,
     "a kernel free was not seen; the old record was replaced",
     "a kernel allocation at an address still recorded as live: the old record was replaced | "
     "none"},
    {LW_LOST_SNAPSHOTS_FULL, "unwind_snapshots_full", false,
     "new stacks came faster than the daemon unwound them; some stacks end early until their "
     "unwind rules are known",
     "(`unwind: auto` or `dwarf`) new stacks came faster than the daemon unwound them: a stack "
     "kept only "
     "its frames up to the first without an unwind rule | none; the next allocation on that path "
     "sends its snapshot again"},
    {LW_LOST_UNWIND_PENDING, "unwind_pending", true,
     "expected when new stacks appear: allocations made while a stack's first snapshot was "
     "unwound (well under a millisecond) keep the frames walked so far",
     "(`unwind: auto` or `dwarf`) an allocation's walk met a frame whose first snapshot was still "
     "being "
     "unwound: its stack kept the frames up to there | expected when new stacks appear "
     "(configuration.md, `unwind`)"},
    {LW_LOST_STACK_TRUNCATED, "stack_truncated", false,
     "some stacks end before their outermost frame (a frame that could not be read, or deeper "
     "than the walk goes); their callers are missing",
     "(`unwind: auto` or `dwarf`) a walk stopped before the outermost frame: a frame pointer or "
     "an unwind rule led to memory it could not read, or the stack is deeper than 66 frames; "
     "the stack is marked `\"complete\": false` in the API | none; its frames so far are "
     "callers, so its `site` is still right when it has one"},
    {LW_LOST_GROWTH_PAGES_FULL, "growth_pages_full", false, "raise limits.growth_pages",
     "(watch tier) a sampled first-touched page was not recorded: the map of them is full | "
     "raise `limits.growth_pages`"},
    {LW_LOST_PROCESS_SHARE, "process_share", false,
     "a process holds its share of the stack maps (limits.process_share); its new stacks are "
     "counted under stack_id 0",
     "a process held its share of the `stacks` or `stack_totals` map (`limits.process_share`): "
     "a new stack of its own was counted under `stack_id` 0 (its process totals stay exact); "
     "other processes keep their room | raise `limits.stacks`, `limits.stack_totals` or "
     "`limits.process_share`, or look at why one process has so many distinct stacks"},
    {LW_LOST_ATTACH_DROPPED, "attach_dropped", true,
     "processes a rule matched exited before their probes were attached (they lived a few "
     "milliseconds at most)",
     "a process a rule matched exited before its probes were attached (it lived a few "
     "milliseconds at most, or leakwatchd was busy attaching others) | none; a process that "
     "lives longer is attached"},
    {LW_LOST_EXEC_UNREAD, "exec_unread", true,
     "processes exited before leakwatchd could try the rules on them; those a rule would have "
     "matched were not watched",
     "a process exited before leakwatchd could read its `/proc` entry to try the rules on it, "
     "and a rule might have matched it (its `comm` and pid did not rule it out) | none: it lived "
     "about a millisecond; a process that lives longer is attached"},
    {LW_LOST_K_PROGRAM_MISSED, "kernel_program_missed", false,
     "the kernel skipped some kernel allocation or free events: both programs of the tracepoint "
     "were already running on that CPU",
     "the kernel skipped a kernel allocation or free tracepoint's backup program: it was already "
     "running on that CPU (an interrupt inside it; on kernels that run tracepoints with "
     "preemption on, such as 7.2, a task switched out inside it). An event is lost only when the "
     "first program missed it too, so this is an upper bound of the loss: an allocation not "
     "counted, or a free that leaves its allocation outstanding | none"},
    {LW_LOST_PYTHON_UNSUPPORTED, "python_unsupported", true,
     "CPython processes of a version leakwatch has no frame offsets for, or on a C library "
     "other than glibc: their stacks have native frames only",
     "a watched CPython process runs a version (or a build) leakwatch has no frame offsets for, "
     "or runs on a C library other than glibc (musl: the thread-state lookup is glibc's); "
     "counted once per process, and its log line names the version or the C library | none: "
     "its stacks keep their native frames and bytes; 3.9 to 3.13 are known"},
    {LW_LOST_K_FIRST_MISSED, "kernel_first_program_missed", true,
     "the kernel skipped some kernel allocation or free tracepoints' first program; their backup "
     "programs ran instead",
     "the kernel skipped a kernel allocation or free tracepoint's first program (it was already "
     "running on that CPU); the tracepoint's backup program did the work, unless it was running "
     "too (then counted as `kernel_program_missed`) | none: not a loss by itself"},
}};

// Every reason has its row, at the index of its id (a missing row would be zero-filled).
constexpr bool loss_reasons_in_order() {
    for (size_t i = 0; i < kLossReasons.size(); i++)
        if (kLossReasons[i].id != i || kLossReasons[i].name.empty()) return false;
    return true;
}
static_assert(loss_reasons_in_order(), "kLossReasons out of sync with enum lw_lost_reason");

using LostCounters = std::array<uint64_t, kLossReasons.size()>;

inline void add_lost(LostCounters& into, const LostCounters& more) {
    for (size_t i = 0; i < into.size(); i++) into[i] += more[i];
}

}  // namespace leakwatch
