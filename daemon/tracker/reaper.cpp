#include "tracker/reaper.h"

namespace leakwatch {

Reaper::Reaper() : thread_([this] { run(); }) {}

Reaper::~Reaper() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

void Reaper::dispose(std::unique_ptr<Attachment> attachment, pid_t pid) {
    if (!attachment) return;
    {
        std::lock_guard lock(mu_);
        queue_.emplace_back(pid, std::move(attachment));
        if (pid) pids_.insert(pid);
    }
    cv_.notify_one();
}

bool Reaper::releasing(pid_t pid) const {
    std::lock_guard lock(mu_);
    return pids_.contains(pid);
}

size_t Reaper::queued() const {
    std::lock_guard lock(mu_);
    return queue_.size() + (busy_ ? 1 : 0);
}

Reaper::Clock::duration Reaper::busy_for() const {
    std::lock_guard lock(mu_);
    return busy_ ? Clock::now() - started_ : Clock::duration::zero();
}

bool Reaper::drain(Clock::duration stuck) {
    std::unique_lock lock(mu_);
    for (;;) {
        if (queue_.empty() && !busy_) return true;
        if (busy_ && Clock::now() - started_ >= stuck) return false;
        idle_.wait_for(lock, std::chrono::milliseconds(100));
    }
}

void Reaper::run() {
    std::unique_lock lock(mu_);
    for (;;) {
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left
        auto [pid, next] = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
        started_ = Clock::now();
        lock.unlock();
        next.reset();  // the slow part: unregistering the uprobes
        lock.lock();
        busy_ = false;
        if (pid)
            if (auto it = pids_.find(pid); it != pids_.end()) pids_.erase(it);
        idle_.notify_all();
    }
}

}  // namespace leakwatch
