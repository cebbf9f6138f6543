#include "detect/follow.h"

#include <fmt/format.h>

#include <utility>
#include <vector>

namespace leakwatch {

void follow_growth(Detector& detector, Snapshot& snap, double now) {
    std::vector<std::pair<std::string, Growth*>> followed;
    auto observe = [&](std::string key, int64_t bytes, Growth& g) {
        detector.observe(key, now, static_cast<double>(bytes));
        followed.emplace_back(std::move(key), &g);
    };
    for (auto& p : snap.processes) {
        std::string owner = fmt::format("{}@{:.6f}", p.pid, p.attached_at);
        observe("p/" + owner, p.totals.bytes, p.growth);
        for (auto& s : p.stacks)
            observe(fmt::format("s/{}/{:016x}", owner, s.id), s.bytes, s.growth);
    }
    if (snap.kernel) {
        for (auto& s : snap.kernel->stacks)
            observe(fmt::format("ks/{}/{:016x}", s.kind, s.id), s.bytes, s.growth);
        for (auto& p : snap.kernel->processes)
            observe(fmt::format("kp/{}@{}", p.pid, p.start), p.bytes, p.growth);
    }
    detector.evaluate(now);
    for (auto& [key, g] : followed) {
        auto v = detector.verdict(key);
        if (!v) continue;  // not followed: the detector's series bound was reached
        g->followed = true;
        g->rate = v->rate;
        g->suspected = v->suspected;
        g->flagged_since = v->flagged_since;
    }
}

}  // namespace leakwatch
