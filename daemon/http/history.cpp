#include "http/history.h"

#include <chrono>

namespace leakwatch {

void History::record(const Snapshot& snap) {
    const double t = std::chrono::duration<double>(snap.taken.time_since_epoch()).count();
    std::map<uint32_t, Series> next;
    for (const auto& p : snap.processes) {
        Series s;
        if (auto it = series_.find(p.pid);
            it != series_.end() && it->second.attached_at == p.attached_at)
            s = std::move(it->second);
        s.attached_at = p.attached_at;
        s.points.emplace_back(t, p.series_bytes());
        while (s.points.size() > points_) s.points.pop_front();
        next.emplace(p.pid, std::move(s));
    }
    series_ = std::move(next);
}

std::optional<std::vector<std::pair<double, int64_t>>> History::of(uint32_t pid) const {
    auto it = series_.find(pid);
    if (it == series_.end()) return std::nullopt;
    return std::vector<std::pair<double, int64_t>>(it->second.points.begin(),
                                                   it->second.points.end());
}

}  // namespace leakwatch
