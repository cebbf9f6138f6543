// What the HTTP handlers read: the latest snapshot and the daemon's own status. Written by
// the main loop, read by civetweb's threads.
#pragma once

#include <atomic>
#include <map>
#include <utility>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "aggregate/aggregator.h"
#include "unwind/unwinder.h"

namespace leakwatch {

struct DaemonStatus {
    std::string version;
    size_t attached = 0;
    size_t escalated = 0;      // processes of the watch tier with their probes now
    size_t max_escalated = 0;  // escalation.max_processes
    std::map<std::string, uint64_t> escalations;  // by reason: suspected, operator, failed
    std::map<std::string, uint64_t> releases;     // by reason: duration, stopped_growing, operator
    bool last_reload_ok = true;
    double last_reload_time = 0;  // unix seconds
    uint32_t top_stacks = 20;
    uint32_t top_processes = 20;
    std::vector<SymbolCacheStats> symbol_caches;  // the symbolizer's caches, for self metrics
    UnwindStats unwind;  // stack snapshots unwound from CFI (`unwind: dwarf`)
};

// What an operator asks of the main loop through the API.
struct OperatorRequest {
    enum Kind { kEscalate, kRelease } kind;
    uint32_t pid = 0;
};

class PublishedState {
  public:
    // From an HTTP thread: done by the main loop at its next turn.
    void request(OperatorRequest r) const {
        std::lock_guard lock(mu_);
        requests_.push_back(r);
    }
    std::vector<OperatorRequest> take_requests() {
        std::lock_guard lock(mu_);
        return std::exchange(requests_, {});
    }
    void publish(std::shared_ptr<const Snapshot> snapshot, DaemonStatus status) {
        std::lock_guard lock(mu_);
        snapshot_ = std::move(snapshot);
        status_ = std::move(status);
    }
    std::pair<std::shared_ptr<const Snapshot>, DaemonStatus> read() const {
        std::lock_guard lock(mu_);
        return {snapshot_, status_};
    }

  private:
    mutable std::mutex mu_;
    std::shared_ptr<const Snapshot> snapshot_ = std::make_shared<Snapshot>();
    DaemonStatus status_;
    mutable std::vector<OperatorRequest> requests_;
};

}  // namespace leakwatch
