// What the HTTP handlers read: the latest snapshot and the daemon's own status. Written by
// the main loop, read by civetweb's threads.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "aggregate/aggregator.h"
#include "http/history.h"
#include "unwind/unwinder.h"

namespace leakwatch {

struct DaemonStatus {
    std::string version;
    size_t attached = 0;
    bool last_reload_ok = true;
    double last_reload_time = 0;  // unix seconds
    uint32_t top_stacks = 20;
    uint32_t top_processes = 20;
    std::vector<SymbolCacheStats> symbol_caches;  // the symbolizer's caches, for self metrics
    UnwindStats unwind;  // stack snapshots unwound from CFI (`unwind: dwarf`)
};

class PublishedState {
  public:
    void publish(std::shared_ptr<const Snapshot> snapshot, DaemonStatus status) {
        std::lock_guard lock(mu_);
        history_.record(*snapshot);
        snapshot_ = std::move(snapshot);
        status_ = std::move(status);
    }
    std::pair<std::shared_ptr<const Snapshot>, DaemonStatus> read() const {
        std::lock_guard lock(mu_);
        return {snapshot_, status_};
    }
    // A process's outstanding bytes over the last samples (History::of).
    std::optional<std::vector<std::pair<double, int64_t>>> history(uint32_t pid) const {
        std::lock_guard lock(mu_);
        return history_.of(pid);
    }

  private:
    mutable std::mutex mu_;
    History history_;
    std::shared_ptr<const Snapshot> snapshot_ = std::make_shared<Snapshot>();
    DaemonStatus status_;
};

}  // namespace leakwatch
