// http/history.cpp: each process's outstanding bytes over its last samples.
#include <catch2/catch.hpp>

#include "http/history.h"

using namespace leakwatch;

namespace {

Snapshot at(int seconds, std::vector<std::tuple<uint32_t, double, int64_t>> processes) {
    Snapshot s;
    s.taken = std::chrono::system_clock::time_point(std::chrono::seconds(seconds));
    for (auto [pid, attached, bytes] : processes) {
        ProcessView p;
        p.pid = pid;
        p.attached_at = attached;
        p.totals.bytes = bytes;
        s.processes.push_back(p);
    }
    return s;
}

using Points = std::vector<std::pair<double, int64_t>>;

}  // namespace

TEST_CASE("History keeps the last samples of each process", "[http][history]") {
    History h(3);
    h.record(at(10, {{1, 5.0, 100}, {2, 5.0, 7}}));
    h.record(at(11, {{1, 5.0, 200}, {2, 5.0, 7}}));
    CHECK(*h.of(1) == Points{{10, 100}, {11, 200}});
    h.record(at(12, {{1, 5.0, 300}}));
    h.record(at(13, {{1, 5.0, 400}}));
    CHECK(*h.of(1) == Points{{11, 200}, {12, 300}, {13, 400}});
    CHECK(!h.of(2));  // gone from the last sample
    CHECK(!h.of(3));
}

TEST_CASE("History starts over for a process attached anew", "[http][history]") {
    History h;
    h.record(at(10, {{1, 5.0, 100}}));
    h.record(at(11, {{1, 9.0, 50}}));  // an exec, or the pid reused
    CHECK(*h.of(1) == Points{{11, 50}});
}

TEST_CASE("History follows the process's series: its memory in the watch tier", "[http][history]") {
    History h;
    Snapshot s = at(10, {{1, 5.0, 100}});
    s.processes[0].tracking = TrackingState::kWatch;
    s.processes[0].memory = ProcMemory{8 << 20, 1 << 20, 64 << 20};
    h.record(s);
    s = at(11, {{1, 5.0, 100}});  // tracking: full, the probes' outstanding bytes
    s.processes[0].tracking = TrackingState::kFull;
    h.record(s);
    CHECK(*h.of(1) == Points{{10, 9 << 20}, {11, 100}});
}
