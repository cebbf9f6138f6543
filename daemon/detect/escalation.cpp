#include "detect/escalation.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

namespace leakwatch {

std::vector<EscalationAction> EscalationPolicy::decide(
    const std::vector<EscalationCandidate>& candidates, const Escalation& escalation,
    const LeakDetection& detection, double now) {
    std::vector<EscalationAction> actions;
    const double duration = std::chrono::duration<double>(escalation.duration).count();
    const double window = std::chrono::duration<double>(detection.window).count();
    size_t escalated = 0;
    std::vector<const EscalationCandidate*> suspects;
    std::map<std::string, double> quiet;
    std::map<std::string, bool> spent;
    for (const auto& c : candidates) {
        const bool suspected = c.growth.suspected;
        auto s = spent_.find(c.key);
        // Spent until its suspicion clears.
        bool was_spent = s != spent_.end() && s->second && suspected;
        if (c.escalated) {
            // Since when its series is not suspected (the first such sample), or now.
            auto q = quiet_since_.find(c.key);
            const double since = suspected || q == quiet_since_.end() ? now : q->second;
            if (now - c.escalated_at >= duration) {
                actions.push_back({EscalationAction::kRelease, c.key,
                                   fmt::format("escalation.duration ({:.0f}s) reached", duration),
                                   "duration"});
                was_spent = suspected;
            } else if (!suspected && now - since >= window) {
                actions.push_back({EscalationAction::kRelease, c.key,
                                   fmt::format("it has not grown for a detection window ({:.0f}s)",
                                               window),
                                   "stopped_growing"});
            } else {
                if (!suspected) quiet[c.key] = since;
                escalated++;
            }
        } else if (c.eligible && suspected && !was_spent) {
            suspects.push_back(&c);
        }
        if (was_spent) spent[c.key] = true;
    }
    std::stable_sort(suspects.begin(), suspects.end(), [](const auto* a, const auto* b) {
        return a->growth.flagged_since < b->growth.flagged_since;
    });
    for (const EscalationCandidate* c : suspects) {
        if (escalated >= escalation.max_processes) break;
        actions.push_back({EscalationAction::kEscalate, c->key,
                           fmt::format("it grows {:.0f} bytes/s (suspected since {:.0f}s ago)",
                                       c->growth.rate, now - c->growth.flagged_since),
                           "suspected"});
        escalated++;
    }
    quiet_since_ = std::move(quiet);
    spent_ = std::move(spent);
    return actions;
}

std::vector<EscalationCandidate> process_candidates(const Snapshot& snap) {
    std::vector<EscalationCandidate> out;
    out.reserve(snap.processes.size());
    for (const auto& p : snap.processes)
        out.push_back({std::to_string(p.pid), p.tracking == TrackingState::kEscalated,
                       p.tracking == TrackingState::kWatch, p.escalated_at, p.growth});
    return out;
}

}  // namespace leakwatch
