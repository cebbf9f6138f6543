#include "detect/follow.h"

#include <fmt/format.h>

#include <iterator>
#include <utility>
#include <vector>

namespace leakwatch {

void follow_growth(Detector& detector, Snapshot& snap, double now) {
    // One key buffer for every series of the round, and the verdict pointers observe()
    // returns: a round of 10,000 series neither allocates a key each nor looks it up twice.
    std::vector<std::pair<const Verdict*, Growth*>> followed;
    std::string key;
    auto observe = [&](int64_t bytes, Growth& g) {
        if (const Verdict* v = detector.observe(key, now, static_cast<double>(bytes)))
            followed.emplace_back(v, &g);
    };
    std::string owner;
    for (auto& p : snap.processes) {
        owner.clear();
        fmt::format_to(std::back_inserter(owner), "{}@{:.6f}", p.pid, p.attached_at);
        key.clear();
        fmt::format_to(std::back_inserter(key), "p/{}", owner);
        // Its memory for a process of the watch tier (escalated or not: one series across
        // escalations), its probes' outstanding bytes otherwise.
        observe(p.series_bytes(), p.growth);
        for (auto& s : p.stacks) {
            key.clear();
            fmt::format_to(std::back_inserter(key), "s/{}/{:016x}", owner, s.id);
            observe(s.bytes, s.growth);
        }
        for (auto& s : p.growth_stacks) {
            key.clear();
            fmt::format_to(std::back_inserter(key), "g/{}/{:016x}", owner, s.id);
            observe(s.bytes, s.growth);
        }
    }
    if (snap.kernel) {
        for (auto& s : snap.kernel->stacks) {
            key.clear();
            fmt::format_to(std::back_inserter(key), "ks/{}/{:016x}", s.kind, s.id);
            observe(s.bytes, s.growth);
        }
        for (auto& c : snap.kernel->counters) {
            key.clear();
            fmt::format_to(std::back_inserter(key), "kc/{}", c.name);
            observe(c.bytes, c.growth);
        }
        for (auto& p : snap.kernel->processes) {
            key.clear();
            fmt::format_to(std::back_inserter(key), "kp/{}@{}", p.pid, p.start);
            observe(p.bytes, p.growth);
        }
    }
    detector.evaluate(now);
    // The series observed this round are not forgotten by evaluate(): the pointers hold.
    for (auto& [v, g] : followed) {
        g->followed = true;
        g->rate = v->rate;
        g->suspected = v->suspected;
        g->flagged_since = v->flagged_since;
    }
}

}  // namespace leakwatch
