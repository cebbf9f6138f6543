// Detaches uprobes in the background. Each uprobe link takes a kernel grace period (~130 ms on
// 6.18) to unregister, and unregistering takes, as a writer, the memory map lock of every
// process that maps the probed file, whichever process the probe was for: any local user can
// hold that lock up for a process of their own (docs/operations.md, "Processes that hold up
// their own memory map"). The main loop waits for neither.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "tracker/attacher.h"

namespace leakwatch {

class Reaper {
  public:
    using Clock = std::chrono::steady_clock;
    Reaper();
    ~Reaper();  // detaches whatever is still queued, then joins (see drain())
    // `pid`: the process the probes were for (0: none to wait for), until they are gone.
    void dispose(std::unique_ptr<Attachment> attachment, pid_t pid = 0);
    // Whether probes of this process are still queued or being detached: new probes for it wait
    // (the BPF side would count its allocations with both).
    bool releasing(pid_t pid) const;
    // Attachments queued or being detached.
    size_t queued() const;
    // How long the detach under way has taken so far (zero when none is).
    Clock::duration busy_for() const;
    // Waits until nothing is queued, as long as the detaches make progress: false when one has
    // taken `stuck` (the kernel waits for a memory map lock someone holds up).
    bool drain(Clock::duration stuck);

  private:
    void run();
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::condition_variable idle_;
    std::deque<std::pair<pid_t, std::unique_ptr<Attachment>>> queue_;
    std::multiset<pid_t> pids_;    // of the queued ones and the one under way
    Clock::time_point started_{};  // of the one under way
    bool busy_ = false;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace leakwatch
