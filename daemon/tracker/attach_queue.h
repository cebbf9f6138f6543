// Attaches uprobes on threads of their own. Registering a uprobe takes, as a writer, the memory
// map lock of every process that maps the probed file, before the kernel looks at which process
// the probe is for; a process can hold its own lock up for as long as it likes (a read of its
// own memory from a file system that never answers, docs/operations.md). While one process
// mapping libc does, every uprobe on libc waits in the kernel, uninterruptibly. So the main
// loop starts an attach, waits for it a moment (most take milliseconds), and otherwise asks
// again later (the tracker's Outcome::kLoading). Bounded: one attach runs per file (another of
// the same file would wait for the same lock), at most `threads` at once; the others queue.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tracker/attacher.h"
#include "tracker/reaper.h"
#include "util/result.h"

namespace leakwatch {

class AttachQueue {
  public:
    using Clock = std::chrono::steady_clock;
    // `stuck`: an attach running longer is counted as stuck and logged (once).
    AttachQueue(Attacher& attacher, Reaper& reaper, size_t threads = 4,
                Clock::duration stuck = std::chrono::seconds(10));
    ~AttachQueue();  // joins: an attach still in the kernel is waited for (see drain())

    struct Request {
        pid_t pid = 0;
        ProbeTarget target;
        std::string file;  // the probed file, as the process names it (logs)
        std::string what;  // "pid N (comm)" (logs)
        std::string key;   // the file's identity (device and inode): one attach at a time each
        // Whose attach it is (start time, rule): a request of the same pid that differs is for
        // another process or rule, and replaces it.
        std::string owner;
        // What target.path names (the descriptor the plan read the file through): held open
        // until the attach ends, so that the path never names another file.
        std::shared_ptr<const void> hold;
        // Carried to the result: the attach's times are those of the request that started it.
        double attached_at = 0;
        double escalated_at = 0;
    };
    struct Done {
        Result<std::unique_ptr<Attachment>> result;
        size_t functions = 0;  // probed (the request's target's offsets)
        double attached_at = 0;
        double escalated_at = 0;
    };
    // The attach of request.pid: started unless one of the same owner is queued or running
    // (then `request` is ignored; one of another owner is forgotten and this one started
    // later), and not while the reaper still releases probes of that pid. Waited for at most
    // `wait` when it can run at once (its file free, a thread free), else not at all. Its
    // result when done (handed over once), nullopt while it is queued or running.
    std::optional<Done> attach(Request request, Clock::duration wait);
    // The result of the attach of `pid` for `owner` when it is done, nullopt otherwise (also
    // when there is none): asking costs nothing.
    std::optional<Done> poll(pid_t pid, const std::string& owner);
    // The process's attach is not wanted any more (it exited, was detached or released): dropped
    // when queued; when running, its probes go to the reaper once it ends.
    void forget(pid_t pid);
    bool has(pid_t pid) const;
    // Whether an attach of `pid` for `owner` is queued, running or done and not taken.
    bool waiting(pid_t pid, const std::string& owner) const;

    struct Stats {
        size_t in_flight = 0;  // queued or running
        size_t stuck = 0;      // running for longer than `stuck`
    };
    // Also logs, once each, the attaches that became stuck since it was last asked.
    Stats stats();
    // Waits until no attach runs, as long as none has run for `stuck`: false when one has.
    bool drain(Clock::duration stuck);
    // Forgets every attach (a stop).
    void forget_all();

  private:
    struct Job {
        Request request;
        enum class State { kQueued, kRunning, kDone } state = State::kQueued;
        bool forgotten = false;
        bool logged_stuck = false;
        Clock::time_point started{};
        std::optional<Result<std::unique_ptr<Attachment>>> result;
    };
    void run();
    // The first queued job whose file has no attach running (mu_ held).
    std::shared_ptr<Job> next_runnable();
    // forget() with mu_ held.
    void forget_locked(pid_t pid);
    // Hands a done job over and erases it (mu_ held).
    Done take(std::map<pid_t, std::shared_ptr<Job>>::iterator it);

    Attacher& attacher_;
    Reaper& reaper_;
    const Clock::duration stuck_;
    mutable std::mutex mu_;
    std::condition_variable work_;                // a job queued, a file free, or stopping
    std::condition_variable done_;                // a job ended
    std::map<pid_t, std::shared_ptr<Job>> jobs_;  // queued, running, or done and not yet taken
    std::deque<std::shared_ptr<Job>> queue_;
    std::set<std::string> running_files_;
    size_t running_ = 0;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace leakwatch
