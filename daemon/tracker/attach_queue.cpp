#include "tracker/attach_queue.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace leakwatch {

AttachQueue::AttachQueue(Attacher& attacher, Reaper& reaper, size_t threads, Clock::duration stuck)
    : attacher_(attacher), reaper_(reaper), stuck_(stuck) {
    for (size_t i = 0; i < std::max<size_t>(threads, 1); i++)
        threads_.emplace_back([this] { run(); });
}

AttachQueue::~AttachQueue() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    work_.notify_all();
    for (auto& t : threads_) t.join();
    // Attached and never taken: their probes go in the background too.
    for (auto& [pid, job] : jobs_)
        if (job->result && *job->result) reaper_.dispose(std::move(**job->result), pid);
}

std::shared_ptr<AttachQueue::Job> AttachQueue::next_runnable() {
    if (running_ >= threads_.size()) return nullptr;
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (running_files_.contains((*it)->request.key)) continue;
        auto job = *it;
        queue_.erase(it);
        return job;
    }
    return nullptr;
}

void AttachQueue::run() {
    std::unique_lock lock(mu_);
    for (;;) {
        std::shared_ptr<Job> job;
        work_.wait(lock, [&] { return stopping_ || (job = next_runnable()) != nullptr; });
        if (stopping_) {
            if (job) queue_.push_front(job);  // left as it was: dropped with the queue
            return;
        }
        job->state = Job::State::kRunning;
        job->started = Clock::now();
        running_files_.insert(job->request.key);
        running_++;
        lock.unlock();
        auto result = attacher_.attach(job->request.pid, job->request.target);
        lock.lock();
        running_files_.erase(job->request.key);
        running_--;
        if (job->logged_stuck)
            spdlog::info("{}: its probes in {} are {} after {:.0f} s", job->request.what,
                         job->request.file, result ? "attached" : "not attached",
                         std::chrono::duration<double>(Clock::now() - job->started).count());
        if (job->forgotten) {
            if (result) reaper_.dispose(std::move(*result), job->request.pid);
            if (auto it = jobs_.find(job->request.pid); it != jobs_.end() && it->second == job)
                jobs_.erase(it);
        } else {
            job->result = std::move(result);
            job->state = Job::State::kDone;
        }
        done_.notify_all();
        work_.notify_all();  // its file is free for the next attach of it
    }
}

AttachQueue::Done AttachQueue::take(std::map<pid_t, std::shared_ptr<Job>>::iterator it) {
    auto job = it->second;
    Done done{std::move(*job->result), job->request.target.offsets.size(), job->request.attached_at,
              job->request.escalated_at};
    jobs_.erase(it);
    return done;
}

std::optional<AttachQueue::Done> AttachQueue::attach(Request request, Clock::duration wait) {
    std::unique_lock lock(mu_);
    const pid_t pid = request.pid;
    auto it = jobs_.find(pid);
    if (it != jobs_.end() && !it->second->forgotten && it->second->request.owner != request.owner)
        forget_locked(pid);  // another process at that pid, or another rule: not its probes
    it = jobs_.find(pid);
    if (it != jobs_.end()) {
        if (it->second->state != Job::State::kDone || it->second->forgotten) return std::nullopt;
        return take(it);
    }
    // Its previous probes (an exec, a rule changed, another owner's) still going: the new ones
    // wait for them, or the BPF side would count its allocations with both. Asked under mu_:
    // a forgotten attach hands its probes to the reaper under it too.
    if (reaper_.releasing(pid)) return std::nullopt;
    auto job = std::make_shared<Job>();
    job->request = std::move(request);
    // Waited for only when it can start now: behind a stuck attach of its file, or with every
    // thread taken, it would only cost the main loop the whole wait.
    const bool starts_now =
        running_ < threads_.size() && !running_files_.contains(job->request.key) &&
        std::none_of(queue_.begin(), queue_.end(),
                     [&](const auto& q) { return q->request.key == job->request.key; });
    it = jobs_.emplace(pid, job).first;
    queue_.push_back(job);
    work_.notify_one();
    if (!starts_now) return std::nullopt;
    done_.wait_for(lock, wait, [&] { return job->state == Job::State::kDone; });
    if (job->state != Job::State::kDone) return std::nullopt;
    return take(jobs_.find(pid));
}

std::optional<AttachQueue::Done> AttachQueue::poll(pid_t pid, const std::string& owner) {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(pid);
    if (it == jobs_.end() || it->second->forgotten || it->second->request.owner != owner ||
        it->second->state != Job::State::kDone)
        return std::nullopt;
    return take(it);
}

void AttachQueue::forget(pid_t pid) {
    std::lock_guard lock(mu_);
    forget_locked(pid);
}

void AttachQueue::forget_all() {
    std::lock_guard lock(mu_);
    std::vector<pid_t> pids;
    for (const auto& [pid, job] : jobs_) pids.push_back(pid);
    for (pid_t pid : pids) forget_locked(pid);
}

void AttachQueue::forget_locked(pid_t pid) {
    auto it = jobs_.find(pid);
    if (it == jobs_.end()) return;
    auto job = it->second;
    switch (job->state) {
        case Job::State::kQueued:
            std::erase(queue_, job);
            jobs_.erase(it);
            break;
        case Job::State::kRunning:
            job->forgotten = true;  // kept under its pid until it ends: see run()
            break;
        case Job::State::kDone:
            if (*job->result) reaper_.dispose(std::move(**job->result), pid);
            jobs_.erase(it);
            break;
    }
}

bool AttachQueue::has(pid_t pid) const {
    std::lock_guard lock(mu_);
    return jobs_.contains(pid);
}

bool AttachQueue::waiting(pid_t pid, const std::string& owner) const {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(pid);
    return it != jobs_.end() && !it->second->forgotten && it->second->request.owner == owner;
}

AttachQueue::Stats AttachQueue::stats() {
    Stats s;
    std::vector<std::string> newly_stuck;
    {
        std::lock_guard lock(mu_);
        const auto now = Clock::now();
        for (auto& [pid, job] : jobs_) {
            if (job->state == Job::State::kDone) continue;
            s.in_flight++;
            if (job->state != Job::State::kRunning || now - job->started < stuck_) continue;
            s.stuck++;
            if (std::exchange(job->logged_stuck, true)) continue;
            newly_stuck.push_back(fmt::format(
                "{}: attaching its probes in {} has waited {:.0f} s in the kernel, which takes "
                "the memory map lock of every process that maps that file, and one of them holds "
                "its own up; the process is attached once it lets go, and attaches of that file "
                "wait behind this one meanwhile (counted in "
                "leakwatch_probe_operations_stuck{{operation=\"attach\"}})",
                job->request.what, job->request.file,
                std::chrono::duration<double>(now - job->started).count()));
        }
    }
    for (const auto& line : newly_stuck) spdlog::warn("{}", line);
    return s;
}

bool AttachQueue::drain(Clock::duration stuck) {
    std::unique_lock lock(mu_);
    for (;;) {
        if (running_ == 0) return true;
        const auto now = Clock::now();
        for (const auto& [pid, job] : jobs_)
            if (job->state == Job::State::kRunning && now - job->started >= stuck) return false;
        done_.wait_for(lock, std::chrono::milliseconds(100));
    }
}

}  // namespace leakwatch
