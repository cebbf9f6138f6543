#include "util/bounded_loader.h"

#include <algorithm>

namespace leakwatch {

struct BoundedLoader::State {
    struct Job {
        std::string key;
        Load load;
    };
    std::mutex mu;
    std::condition_variable work_cv;  // a job was queued, or stopping
    std::condition_variable done_cv;  // a job finished
    std::deque<Job> queue;
    std::map<std::string, Clock::time_point> active;  // queued or running: key -> queued at
    std::vector<Clock::time_point> busy_since;        // per thread: when its load began, or {}
    std::vector<std::thread> threads;
    uint64_t loads = 0;
    bool stopping = false;
};

BoundedLoader::BoundedLoader(size_t max_threads, std::chrono::milliseconds stuck_after)
    : max_threads_(std::max<size_t>(1, max_threads)),
      stuck_after_(stuck_after),
      state_(std::make_shared<State>()) {}

BoundedLoader::~BoundedLoader() {
    std::vector<std::thread> threads;
    std::vector<bool> busy;
    {
        std::lock_guard lock(state_->mu);
        state_->stopping = true;
        threads = std::move(state_->threads);
        for (const auto& since : state_->busy_since) busy.push_back(since != Clock::time_point{});
    }
    state_->work_cv.notify_all();
    for (size_t i = 0; i < threads.size(); i++) {
        if (busy[i])
            threads[i].detach();  // inside a load that may never end
        else
            threads[i].join();
    }
}

void BoundedLoader::work(const std::shared_ptr<State>& state, size_t index) {
    std::unique_lock lock(state->mu);
    while (true) {
        state->work_cv.wait(lock, [&] { return state->stopping || !state->queue.empty(); });
        if (state->stopping) return;
        State::Job job = std::move(state->queue.front());
        state->queue.pop_front();
        state->busy_since[index] = Clock::now();
        lock.unlock();
        try {
            job.load();
        } catch (...) {
            // A load records its own failures; one that throws still ends.
        }
        job.load = nullptr;  // what it captured goes now, outside the lock
        lock.lock();
        state->busy_since[index] = Clock::time_point{};
        state->active.erase(job.key);
        state->loads++;
        state->done_cv.notify_all();
    }
}

void BoundedLoader::grow() {
    State& s = *state_;
    const auto now = Clock::now();
    size_t idle = 0, working = 0;
    for (const auto& since : s.busy_since) {
        if (since == Clock::time_point{})
            idle++;
        else if (now - since < stuck_after_)
            working++;
    }
    // Idle threads that have not taken the jobs queued yet are spoken for.
    if (idle >= s.queue.size() || working >= 2 || s.threads.size() >= max_threads_) return;
    const size_t index = s.threads.size();
    s.busy_since.push_back(Clock::time_point{});
    s.threads.emplace_back([state = state_, index] { work(state, index); });
}

BoundedLoader::Outcome BoundedLoader::run(const std::string& key, Load load,
                                          std::chrono::milliseconds wait) {
    State& s = *state_;
    std::unique_lock lock(s.mu);
    if (!s.active.count(key)) {
        s.active.emplace(key, Clock::now());
        s.queue.push_back({key, std::move(load)});
        s.work_cv.notify_one();
    }
    grow();
    if (wait.count() <= 0) return s.active.count(key) ? Outcome::kWaiting : Outcome::kDone;
    bool done = s.done_cv.wait_for(lock, wait, [&] { return !s.active.count(key); });
    return done ? Outcome::kDone : Outcome::kWaiting;
}

BoundedLoader::Outcome BoundedLoader::wait(const std::string& key, std::chrono::milliseconds wait) {
    State& s = *state_;
    std::unique_lock lock(s.mu);
    bool done = s.done_cv.wait_for(lock, wait, [&] { return !s.active.count(key); });
    return done ? Outcome::kDone : Outcome::kWaiting;
}

std::optional<BoundedLoader::Clock::duration> BoundedLoader::running_for(
    const std::string& key) const {
    std::lock_guard lock(state_->mu);
    auto it = state_->active.find(key);
    if (it == state_->active.end()) return std::nullopt;
    return Clock::now() - it->second;
}

BoundedLoader::Stats BoundedLoader::stats() const {
    std::lock_guard lock(state_->mu);
    Stats out;
    out.loads = state_->loads;
    out.threads = state_->threads.size();
    const auto now = Clock::now();
    for (const auto& since : state_->busy_since)
        if (since != Clock::time_point{} && now - since >= stuck_after_) out.stuck++;
    return out;
}

}  // namespace leakwatch
