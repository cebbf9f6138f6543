#include "proc/proc_reads.h"

#include <algorithm>

namespace leakwatch {

struct ProcReadPool::Flights {
    struct One {
        pid_t pid = 0;
        uint32_t uid = 0;
        Clock::time_point started;
    };
    mutable std::mutex mu;
    std::map<uint64_t, One> flights;
    uint64_t ids = 0;
};

ProcReadPool::ProcReadPool(Limits limits)
    : limits_(limits),
      flights_(std::make_shared<Flights>()),
      // Every read admitted has a thread of its own (a thread busy at all counts as stuck, so
      // one is started whenever none is idle): none waits behind a read that hangs.
      loader_(std::max<size_t>(1, limits.total), std::chrono::milliseconds(0)) {}

std::pair<ProcReadPool::Admission, ProcReadPool::Flight> ProcReadPool::admit(pid_t pid,
                                                                             uint32_t uid) {
    std::lock_guard lock(flights_->mu);
    size_t of_uid = 0;
    for (const auto& [id, f] : flights_->flights) {
        if (f.pid == pid) return {Admission::kPid, nullptr};
        if (f.uid == uid) of_uid++;
    }
    if (flights_->flights.size() >= limits_.total) return {Admission::kTotal, nullptr};
    if (of_uid >= limits_.per_uid) return {Admission::kUid, nullptr};
    const uint64_t id = ++flights_->ids;
    flights_->flights.emplace(id, Flights::One{pid, uid, Clock::now()});
    // The flight's end: its token let go, on whichever thread, the pool gone or not.
    Flight token(static_cast<void*>(nullptr), [flights = flights_, id](void*) {
        std::lock_guard lock(flights->mu);
        flights->flights.erase(id);
    });
    return {Admission::kStarted, std::move(token)};
}

bool ProcReadPool::stuck(uint32_t uid, std::chrono::milliseconds after) const {
    std::lock_guard lock(flights_->mu);
    const auto now = Clock::now();
    for (const auto& [id, f] : flights_->flights)
        if (f.uid == uid && now - f.started > after) return true;
    return false;
}

size_t ProcReadPool::in_flight() const {
    std::lock_guard lock(flights_->mu);
    return flights_->flights.size();
}

uint32_t process_uid(const ProcReader& proc, pid_t pid) {
    auto uid = proc.uid(pid);
    return uid ? *uid : ProcReadPool::kUnknownUid;
}

}  // namespace leakwatch
