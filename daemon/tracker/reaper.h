// Detaches uprobes in the background: each uprobe link takes a kernel grace period
// (~130 ms on 6.18) to unregister, which the main loop must not wait for when a watched
// process exits.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "tracker/attacher.h"

namespace leakwatch {

class Reaper {
  public:
    Reaper();
    ~Reaper();  // detaches whatever is still queued, then joins
    void dispose(std::unique_ptr<Attachment> attachment);
    size_t queued() const;

  private:
    void run();
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::unique_ptr<Attachment>> queue_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace leakwatch
