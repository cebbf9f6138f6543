// What gets its allocation tracing for a while, and when it gives it back: processes of the
// watch tier (tracking: escalate) get their allocator probes, kernel caches and kinds (kernel
// tracking: escalate) their allocation tracepoints (docs/configuration.md, "Tracking modes").
// Pure logic: it reads the detector's verdicts and says what to do.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "aggregate/aggregator.h"
#include "config/config.h"

namespace leakwatch {

// One thing that may be escalated: a process, or a kernel cache or kind.
struct EscalationCandidate {
    std::string key;  // a pid, "kmalloc-1k", "percpu"...
    bool escalated = false;
    bool eligible = false;  // may be escalated (a process in the watch tier)
    double escalated_at = 0;
    Growth growth;  // the detector's verdict on its series (memory, or the kernel's counter)
};

struct EscalationAction {
    enum Kind { kEscalate, kRelease } kind;
    std::string key;
    std::string reason;  // for the log
    std::string label;   // for the metrics: suspected, duration, stopped_growing
};

class EscalationPolicy {
  public:
    // One decision per sample. Escalated: an eligible candidate the detector suspects, oldest
    // suspicion first, while fewer than max_processes are. Released: one escalated for
    // `duration`, or not suspected for a whole detection window. One released after its full
    // duration, still suspected, is not escalated again until its suspicion has cleared.
    std::vector<EscalationAction> decide(const std::vector<EscalationCandidate>& candidates,
                                         const Escalation& escalation,
                                         const LeakDetection& detection, double now);
    // An operator's release: as after a full duration.
    void released_by_operator(const std::string& key) { spent_[key] = true; }

  private:
    std::map<std::string, double> quiet_since_;  // escalated key -> since when not suspected
    std::map<std::string, bool> spent_;          // released while suspected
};

// The processes of a snapshot as candidates (key: the pid).
std::vector<EscalationCandidate> process_candidates(const Snapshot& snap);

}  // namespace leakwatch
