// Feeds every series of a snapshot (processes, stacks, kernel stacks and processes) to the
// detector, and writes its verdicts back into the snapshot.
#pragma once

#include "aggregate/aggregator.h"
#include "detect/detector.h"

namespace leakwatch {

// `now` is unix seconds. A process is named by pid and the time it was attached (kernel: its
// start), so a reused pid starts a new series.
void follow_growth(Detector& detector, Snapshot& snapshot, double now);

}  // namespace leakwatch
