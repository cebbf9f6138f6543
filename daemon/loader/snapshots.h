// Completes the stacks whose BPF walk met a return address without an unwind rule.
#pragma once

#include "loader/probes.h"
#include "symbols/unwind.h"

namespace leakwatch {

// Unwinds the snapshot with the CFI of the process's files, stores the rule of every frame
// it passed for the BPF walks to come, and replaces the snapshot's partial stack with the
// whole one. Frames past the copied stack are left to a later snapshot, taken from there.
void complete_snapshot(Probes& probes, Unwinder& unwinder, const lw_snapshot& snapshot);

}  // namespace leakwatch
