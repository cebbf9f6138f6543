#include "proc/proc_reads.h"

#include <algorithm>
#include <thread>

namespace leakwatch {

struct ProcReadPool::Flights {
    struct One {
        pid_t pid = 0;
        uint32_t uid = 0;
        bool on_caller = false;
        Clock::time_point started;
    };
    mutable std::mutex mu;
    std::map<uint64_t, One> flights;
    uint64_t ids = 0;
};

namespace {
std::pair<ProcReadPool::Admission, ProcReadPool::Flight> admit_to(
    const std::shared_ptr<ProcReadPool::Flights>& flights, const ProcReadLimits& limits, pid_t pid,
    uint32_t uid, bool on_caller) {
    using Admission = ProcReadPool::Admission;
    std::lock_guard lock(flights->mu);
    size_t of_uid = 0, of_callers = 0;
    for (const auto& [id, f] : flights->flights) {
        if (f.pid == pid) return {Admission::kPid, nullptr};
        if (f.uid == uid) of_uid++;
        if (f.on_caller) of_callers++;
    }
    if (flights->flights.size() >= limits.total) return {Admission::kTotal, nullptr};
    if (on_caller && of_callers >= limits.on_caller) return {Admission::kTotal, nullptr};
    if (of_uid >= limits.per_uid) return {Admission::kUid, nullptr};
    const uint64_t id = ++flights->ids;
    flights->flights.emplace(
        id, ProcReadPool::Flights::One{pid, uid, on_caller, ProcReadPool::Clock::now()});
    // The flight's end: its token let go, on whichever thread, the pool gone or not.
    ProcReadPool::Flight token(static_cast<void*>(nullptr), [flights, id](void*) {
        std::lock_guard lock(flights->mu);
        flights->flights.erase(id);
    });
    return {Admission::kStarted, std::move(token)};
}
}  // namespace

ProcReadPool::ProcReadPool(Limits limits)
    : limits_(limits),
      flights_(std::make_shared<Flights>()),
      // Every read admitted has a thread of its own (a thread busy at all counts as stuck, so
      // one is started whenever none is idle): none waits behind a read that hangs.
      loader_(std::max<size_t>(1, limits.total), std::chrono::milliseconds(0)) {}

std::pair<ProcReadPool::Admission, ProcReadPool::Flight> ProcReadPool::admit(pid_t pid,
                                                                             uint32_t uid) {
    return admit_to(flights_, limits_, pid, uid, false);
}

ProcReadPool::Gate ProcReadPool::gate(const ProcReader& proc,
                                      std::chrono::milliseconds wait) const {
    return [flights = flights_, limits = limits_, proc, wait](pid_t pid) -> std::optional<Flight> {
        const uint32_t uid = process_uid(proc, pid);  // status: takes no memory map lock
        const auto until = Clock::now() + wait;
        for (;;) {
            auto [admission, flight] = admit_to(flights, limits, pid, uid, true);
            if (admission == Admission::kStarted) return std::move(flight);
            // Another read of the process, or of its user, may end soon; a stuck one does not,
            // and costs the caller `wait` once per call.
            if (Clock::now() >= until) return std::nullopt;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    };
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
