// Completes the stacks whose BPF walk met a return address without an unwind rule.
#pragma once

#include <cstdint>

#include "unwind/unwinder.h"

struct lw_snapshot;
struct lw_stack;
struct lw_unwind_rule;

namespace leakwatch {

// The BPF maps a completed snapshot is written to: the loader's Probes in the daemon.
class SnapshotMaps {
  public:
    virtual ~SnapshotMaps() = default;
    // Whether the BPF side records this process now.
    virtual bool watching(uint32_t tgid) const = 0;
    virtual void set_unwind_rule(uint32_t tgid, uint64_t pc, const lw_unwind_rule& rule) = 0;
    // Replaces the frames stored under a stack id (a snapshot's, once unwound).
    virtual void set_stack(uint32_t tgid, uint64_t id, const lw_stack& stack) = 0;
    // Clears a snapshot's mark in snapshots_sent (lw_snapshot::key) once it is unwound.
    virtual void snapshot_done(uint32_t tgid, uint64_t key) = 0;
};

// Unwinds the snapshot with the CFI of the process's files, stores the rule of every frame
// it passed for the BPF walks to come, and replaces the snapshot's partial stack with the
// whole one. Frames past the copied stack are left to a later snapshot, taken from there.
void complete_snapshot(SnapshotMaps& maps, Unwinder& unwinder, const lw_snapshot& snapshot);

}  // namespace leakwatch
