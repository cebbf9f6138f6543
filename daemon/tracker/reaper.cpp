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

void Reaper::dispose(std::unique_ptr<Attachment> attachment) {
    if (!attachment) return;
    {
        std::lock_guard lock(mu_);
        queue_.push_back(std::move(attachment));
    }
    cv_.notify_one();
}

size_t Reaper::queued() const {
    std::lock_guard lock(mu_);
    return queue_.size();
}

void Reaper::run() {
    std::unique_lock lock(mu_);
    for (;;) {
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left
        auto next = std::move(queue_.front());
        queue_.pop_front();
        lock.unlock();
        next.reset();  // the slow part: unregistering the uprobes
        lock.lock();
    }
}

}  // namespace leakwatch
