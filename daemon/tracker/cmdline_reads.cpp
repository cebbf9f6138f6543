#include "tracker/cmdline_reads.h"

#include <map>
#include <mutex>
#include <utility>

#include "proc/files.h"

namespace leakwatch {

struct CmdlineReads::State_ {
    struct Entry {
        uint64_t start_time = 0;
        // Which read the entry waits for: a load of a forgotten entry (the process exited, the
        // pid was reused) drops what it read.
        uint64_t epoch = 0;
        std::string key;
        bool done = false;
        bool ok = false;
        std::vector<std::string> argv;
        std::string error;
    };
    std::mutex mu;
    std::map<pid_t, Entry> entries;
    uint64_t epochs = 0;
    size_t in_flight = 0;
};

CmdlineReads::CmdlineReads(const ProcReader& proc, BoundedLoader& loader, WaitFor wait_for,
                           size_t max_in_flight)
    : proc_(proc),
      loader_(loader),
      wait_for_(std::move(wait_for)),
      max_in_flight_(max_in_flight),
      state_(std::make_shared<State_>()) {}

CmdlineReads::Read CmdlineReads::read(pid_t pid, uint64_t start_time) {
    // Hands out an ended read and lets its entry go. Caller holds the lock.
    auto take = [&](std::map<pid_t, State_::Entry>::iterator it) {
        Read out;
        out.state = it->second.ok ? State::kRead : State::kGone;
        out.argv = std::move(it->second.argv);
        out.error = std::move(it->second.error);
        state_->entries.erase(it);
        return out;
    };
    std::string key;
    uint64_t epoch = 0;
    {
        std::lock_guard lock(state_->mu);
        auto it = state_->entries.find(pid);
        if (it != state_->entries.end() && it->second.start_time != start_time) {
            state_->entries.erase(it);  // another process at this pid
            it = state_->entries.end();
        }
        if (it != state_->entries.end()) {
            if (it->second.done) return take(it);
            key = it->second.key;
        } else {
            if (state_->in_flight >= max_in_flight_) return Read{};
            epoch = ++state_->epochs;
            key = "cmdline:" + std::to_string(pid) + ":" + std::to_string(epoch);
            auto& e = state_->entries[pid];
            e.start_time = start_time;
            e.epoch = epoch;
            e.key = key;
            state_->in_flight++;
        }
    }
    auto wait = wait_for_(key);
    if (!wait) {
        refuse_file(Refusal::kSlow, proc_.root() + "/" + std::to_string(pid) + "/cmdline",
                    "reading it takes too long (the process holds up its memory map's lock); "
                    "the process is not matched against `cmdline` rules");
        Read slow;
        slow.state = State::kSlow;
        return slow;
    }
    if (epoch == 0) return Read{};  // under way since an earlier pass: not waited for again
    auto load = [proc = proc_, state = state_, pid, epoch] {
        auto argv = proc.cmdline(pid);
        std::lock_guard lock(state->mu);
        state->in_flight--;
        auto it = state->entries.find(pid);
        if (it == state->entries.end() || it->second.epoch != epoch) return;
        auto& e = it->second;
        e.done = true;
        e.ok = argv.has_value();
        if (argv)
            e.argv = std::move(*argv);
        else
            e.error = argv.error().message;
    };
    loader_.run(key, std::move(load), *wait);
    std::lock_guard lock(state_->mu);
    auto it = state_->entries.find(pid);
    if (it != state_->entries.end() && it->second.epoch == epoch && it->second.done)
        return take(it);
    return Read{};
}

void CmdlineReads::forget(pid_t pid) {
    std::lock_guard lock(state_->mu);
    state_->entries.erase(pid);
}

void CmdlineReads::forget_unless(const std::function<bool(pid_t)>& keep) {
    std::lock_guard lock(state_->mu);
    std::erase_if(state_->entries, [&](const auto& e) { return !keep(e.first); });
}

size_t CmdlineReads::size() const {
    std::lock_guard lock(state_->mu);
    return state_->entries.size();
}

size_t CmdlineReads::in_flight() const {
    std::lock_guard lock(state_->mu);
    return state_->in_flight;
}

}  // namespace leakwatch
