#include "symbols/process_maps.h"

#include <map>
#include <mutex>
#include <utility>

#include "proc/files.h"

namespace leakwatch {

struct ProcessMaps::State {
    struct Entry {
        // Which process at this pid the entry is for: a load started for one that was
        // forgotten since (it exited, the pid was reused) drops what it read.
        uint64_t epoch = 0;
        Maps kept;  // the maps read last
        bool gone = false;
        std::string error;
        // What the last load ended with, until a caller picks it up.
        bool done = false;
        Maps result;
        std::string result_error;
    };
    std::mutex mu;
    std::map<pid_t, Entry> entries;
    uint64_t epochs = 0;
};

ProcessMaps::ProcessMaps(const ProcReader& proc, BoundedLoader& loader, WaitFor wait_for)
    : proc_(proc),
      loader_(loader),
      wait_for_(std::move(wait_for)),
      state_(std::make_shared<State>()) {}

bool ProcessMaps::pick_up(State& state, pid_t pid) {
    auto it = state.entries.find(pid);
    if (it == state.entries.end() || !it->second.done) return false;
    State::Entry& e = it->second;
    e.done = false;
    e.kept = std::move(e.result);
    e.gone = !e.kept;
    e.error = std::move(e.result_error);
    return true;
}

ProcessMaps::Read ProcessMaps::read(pid_t pid) {
    const std::string key = "maps:" + std::to_string(pid);
    Read out;
    auto wait = wait_for_(key);
    if (!wait) {
        refuse_file(Refusal::kSlow, proc_.root() + "/" + std::to_string(pid) + "/maps",
                    "reading it takes too long (the process holds up its memory map's lock); "
                    "the maps read before stay in use");
        std::lock_guard lock(state_->mu);
        pick_up(*state_, pid);
        auto& e = state_->entries[pid];
        out.maps = e.kept;
        out.pending = out.refused = true;
        return out;
    }
    uint64_t epoch = 0;
    {
        std::lock_guard lock(state_->mu);
        auto& e = state_->entries[pid];
        if (e.epoch == 0) e.epoch = ++state_->epochs;
        epoch = e.epoch;
    }
    auto load = [proc = proc_, state = state_, pid, epoch] {
        auto maps = proc.maps(pid);
        std::lock_guard lock(state->mu);
        auto it = state->entries.find(pid);
        if (it == state->entries.end() || it->second.epoch != epoch) return;
        State::Entry& e = it->second;
        e.done = true;
        if (maps) {
            e.result = std::make_shared<const std::vector<MapEntry>>(std::move(*maps));
            e.result_error.clear();
        } else {
            e.result = nullptr;
            e.result_error = maps.error().message;
        }
    };
    const auto outcome = loader_.run(key, std::move(load), *wait);
    std::lock_guard lock(state_->mu);
    out.fresh = pick_up(*state_, pid);
    const auto& e = state_->entries[pid];
    out.maps = e.kept;
    out.gone = e.gone;
    out.error = e.error;
    out.pending = outcome == BoundedLoader::Outcome::kWaiting;
    return out;
}

ProcessMaps::Maps ProcessMaps::last(pid_t pid) {
    std::lock_guard lock(state_->mu);
    pick_up(*state_, pid);
    auto it = state_->entries.find(pid);
    return it == state_->entries.end() ? nullptr : it->second.kept;
}

void ProcessMaps::forget(pid_t pid) {
    std::lock_guard lock(state_->mu);
    state_->entries.erase(pid);
}

void ProcessMaps::forget_unless(const std::function<bool(pid_t)>& keep) {
    std::lock_guard lock(state_->mu);
    std::erase_if(state_->entries, [&](const auto& e) { return !keep(e.first); });
}

size_t ProcessMaps::size() const {
    std::lock_guard lock(state_->mu);
    return state_->entries.size();
}

}  // namespace leakwatch
