// What the HTTP handlers read: the latest snapshot and the daemon's own status. Written by
// the main loop, read by civetweb's threads.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aggregate/aggregator.h"
#include "http/history.h"
#include "proc/files.h"
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
    UnwindStats unwind;                // stack snapshots unwound from CFI (`unwind: dwarf`)
    RefusalCounts files_refused{};     // files of watched processes not read, by reason
    uint64_t file_loads_stuck = 0;     // file reads on the loader going on for seconds now
    uint64_t attach_retries = 0;       // processes retried: their allocator's file was slow
    uint64_t jvm_attaches_queued = 0;  // JVM attaches that waited for one in flight to end
    // Uprobe attaches and detaches waiting in the kernel (tracker/attach_queue.h, reaper.h).
    uint64_t attaches_in_flight = 0;
    uint64_t attaches_stuck = 0;
    uint64_t detaches_queued = 0;
    uint64_t detaches_stuck = 0;
    bool expose_kernel_addresses = false;
    // Requests whose handler failed, by path (filled in when read: the server counts them).
    std::vector<std::pair<std::string, uint64_t>> http_failures;
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
    // `exposition`: the snapshot's /metrics text without the live families (render_metrics
    // with live false), rendered by the publisher; null: rendered at each scrape.
    void publish(std::shared_ptr<const Snapshot> snapshot, DaemonStatus status,
                 std::shared_ptr<const std::string> exposition = nullptr) {
        {
            std::lock_guard lock(mu_);
            history_.record(*snapshot);
            snapshot_.swap(snapshot);
            std::swap(status_, status);
            exposition_.swap(exposition);
        }
        // The previous ones are freed here, out of the lock that every request takes.
    }
    // What a scrape sends: the published exposition (null when none was) and a status that
    // holds only what the live families need.
    std::pair<std::shared_ptr<const std::string>, DaemonStatus> read_exposition() const {
        std::lock_guard lock(mu_);
        DaemonStatus live;
        live.http_failures.assign(http_failures_.begin(), http_failures_.end());
        return {exposition_, std::move(live)};
    }
    std::pair<std::shared_ptr<const Snapshot>, DaemonStatus> read() const {
        std::lock_guard lock(mu_);
        DaemonStatus status = status_;
        status.http_failures.assign(http_failures_.begin(), http_failures_.end());
        return {snapshot_, std::move(status)};
    }
    // A request to `path` whose handler failed (or, with 0, a path that can fail: its counter
    // is then shown from the start).
    void count_failure(std::string_view path, uint64_t n = 1) {
        std::lock_guard lock(mu_);
        auto it = http_failures_.find(path);
        if (it == http_failures_.end()) it = http_failures_.emplace(std::string(path), 0).first;
        it->second += n;
    }
    // A process's outstanding bytes over the last samples (History::of).
    std::optional<std::vector<std::pair<double, int64_t>>> history(uint32_t pid) const {
        std::lock_guard lock(mu_);
        return history_.of(pid);
    }

  private:
    mutable std::mutex mu_;
    std::map<std::string, uint64_t, std::less<>> http_failures_;
    History history_;
    std::shared_ptr<const Snapshot> snapshot_ = std::make_shared<Snapshot>();
    std::shared_ptr<const std::string> exposition_;
    DaemonStatus status_;
    mutable std::vector<OperatorRequest> requests_;
};

}  // namespace leakwatch
