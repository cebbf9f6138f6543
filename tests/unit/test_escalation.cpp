// detect/escalation.cpp: which processes of the watch tier get their probes, and when back.
#include <catch2/catch.hpp>

#include "detect/escalation.h"

using namespace leakwatch;

namespace {

ProcessView process(uint32_t pid, TrackingState state, bool suspected, double flagged_since = 0,
                    double escalated_at = 0) {
    ProcessView p;
    p.pid = pid;
    p.tracking = state;
    p.escalated_at = escalated_at;
    p.growth.followed = true;
    p.growth.suspected = suspected;
    p.growth.flagged_since = flagged_since;
    p.growth.rate = suspected ? 4096 : 0;
    return p;
}

Escalation settings(uint32_t max = 2) {
    Escalation e;
    e.duration = std::chrono::seconds(300);
    e.max_processes = max;
    return e;
}

LeakDetection detection() {
    LeakDetection d;
    d.window = std::chrono::seconds(60);
    return d;
}

std::vector<std::pair<EscalationAction::Kind, uint32_t>> kinds(
    const std::vector<EscalationAction>& actions) {
    std::vector<std::pair<EscalationAction::Kind, uint32_t>> out;
    for (const auto& a : actions)
        out.emplace_back(a.kind, static_cast<uint32_t>(std::stoul(a.key)));
    return out;
}

// The policy over a snapshot's processes, as the daemon runs it.
std::vector<EscalationAction> decide(EscalationPolicy& policy, const Snapshot& snap,
                                     const Escalation& e, const LeakDetection& d, double now) {
    return policy.decide(process_candidates(snap), e, d, now);
}

}  // namespace

TEST_CASE("suspects escalate oldest suspicion first, at most max_processes", "[escalation]") {
    EscalationPolicy policy;
    Snapshot snap;
    snap.processes = {process(1, TrackingState::kWatch, true, 50),
                      process(2, TrackingState::kWatch, true, 10),
                      process(3, TrackingState::kWatch, true, 30),
                      process(4, TrackingState::kWatch, false),
                      process(5, TrackingState::kFull, true, 1)};  // probed anyway
    auto actions = decide(policy, snap, settings(2), detection(), 100);
    using K = EscalationAction::Kind;
    CHECK(kinds(actions) ==
          std::vector<std::pair<K, uint32_t>>{{K::kEscalate, 2}, {K::kEscalate, 3}});
    CHECK(actions[0].label == "suspected");
    // The next round: 2 and 3 are escalated; 1 waits for a free place.
    snap.processes[1].tracking = snap.processes[2].tracking = TrackingState::kEscalated;
    snap.processes[1].escalated_at = snap.processes[2].escalated_at = 100;
    CHECK(decide(policy, snap, settings(2), detection(), 105).empty());
    CHECK(kinds(decide(policy, snap, settings(3), detection(), 110)) ==
          std::vector<std::pair<K, uint32_t>>{{K::kEscalate, 1}});
}

TEST_CASE("released after the duration, or after a window without growth", "[escalation]") {
    using K = EscalationAction::Kind;
    EscalationPolicy policy;
    Snapshot snap;
    snap.processes = {process(1, TrackingState::kEscalated, true, 10, 100),
                      process(2, TrackingState::kEscalated, true, 10, 100)};
    CHECK(decide(policy, snap, settings(), detection(), 150).empty());
    // 2 stops growing at 160: released a window (60 s) later, not before.
    snap.processes[1].growth.suspected = false;
    CHECK(decide(policy, snap, settings(), detection(), 160).empty());
    CHECK(decide(policy, snap, settings(), detection(), 219).empty());
    auto at220 = decide(policy, snap, settings(), detection(), 220);
    CHECK(kinds(at220) == std::vector<std::pair<K, uint32_t>>{{K::kRelease, 2}});
    CHECK(at220[0].label == "stopped_growing");
    snap.processes.pop_back();
    // 1 still grows: released at its duration (300 s after 100), and not escalated again
    // while it stays suspected.
    auto at400 = decide(policy, snap, settings(), detection(), 400);
    CHECK(kinds(at400) == std::vector<std::pair<K, uint32_t>>{{K::kRelease, 1}});
    CHECK(at400[0].label == "duration");
    snap.processes[0].tracking = TrackingState::kWatch;
    CHECK(decide(policy, snap, settings(), detection(), 405).empty());
    // Its suspicion clears, then comes back: escalated again.
    snap.processes[0].growth.suspected = false;
    CHECK(decide(policy, snap, settings(), detection(), 500).empty());
    snap.processes[0].growth.suspected = true;
    CHECK(kinds(decide(policy, snap, settings(), detection(), 600)) ==
          std::vector<std::pair<K, uint32_t>>{{K::kEscalate, 1}});
}

TEST_CASE("an operator's release holds while the process stays suspected", "[escalation]") {
    EscalationPolicy policy;
    Snapshot snap;
    snap.processes = {process(1, TrackingState::kWatch, true, 10)};
    policy.released_by_operator("1");
    CHECK(decide(policy, snap, settings(), detection(), 100).empty());
}
