// Runs loads that may block for ever (reading a file on FUSE or a hung NFS server, which no
// signal interrupts) on threads of its own, so that a caller waits for a load at most as long
// as it chooses and then goes on without it. A load that never ends keeps its thread; more
// threads are started, up to a bound, so that the other loads go on.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace leakwatch {

class BoundedLoader {
  public:
    using Clock = std::chrono::steady_clock;
    using Load = std::function<void()>;

    // A thread whose load has run longer than `stuck_after` no longer counts as one that
    // works; up to `max_threads` threads are started.
    explicit BoundedLoader(size_t max_threads = 8,
                           std::chrono::milliseconds stuck_after = std::chrono::seconds(2));
    // Idle threads are joined; threads still inside a load are left to end with the process
    // (a load captures what it uses by value or shared pointer).
    ~BoundedLoader();
    BoundedLoader(const BoundedLoader&) = delete;
    BoundedLoader& operator=(const BoundedLoader&) = delete;

    enum class Outcome {
        kDone,     // the load of this key has finished (the caller looks at what it made)
        kWaiting,  // it is queued or running, and the wait ended first
    };
    // Starts `load` under `key`, unless a load of that key is queued or running (then `load`
    // is dropped), and waits for that load up to `wait`.
    Outcome run(const std::string& key, Load load, std::chrono::milliseconds wait);
    // Waits up to `wait` for the load of `key`, if one is queued or running; starts none.
    Outcome wait(const std::string& key, std::chrono::milliseconds wait);
    // How long the load of `key` has been running, if it is queued or running.
    std::optional<Clock::duration> running_for(const std::string& key) const;

    struct Stats {
        uint64_t loads = 0;    // loads finished
        uint64_t threads = 0;  // threads started
        uint64_t stuck = 0;    // threads in a load longer than stuck_after now
    };
    Stats stats() const;

  private:
    // Shared with the threads: one stuck in a load when the loader goes keeps it alive.
    struct State;
    static void work(const std::shared_ptr<State>& state, size_t index);
    // Starts a thread when the jobs queued outnumber the idle threads and fewer than two are
    // working (not stuck), within the bound. Caller holds the lock.
    void grow();

    const size_t max_threads_;
    const std::chrono::milliseconds stuck_after_;
    std::shared_ptr<State> state_;
};

}  // namespace leakwatch
