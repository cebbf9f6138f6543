// Outstanding bytes of each watched process over its last samples: the landing page's chart
// starts with the recent past instead of an empty axis.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "aggregate/aggregator.h"

namespace leakwatch {

class History {
  public:
    // At most `points` samples per process (360: half an hour at the default 5 s interval).
    explicit History(size_t points = 360) : points_(points) {}

    // Appends each process's series at the snapshot's time (what the detector follows: the
    // probes' outstanding bytes, or the kernel's count of its memory in the watch tier); a
    // process that is gone (or attached anew: an exec, a reused pid) starts over.
    void record(const Snapshot& snapshot);
    // (unix seconds, outstanding bytes), oldest first; nullopt for a pid not in the last sample.
    std::optional<std::vector<std::pair<double, int64_t>>> of(uint32_t pid) const;

  private:
    struct Series {
        double attached_at = 0;
        std::deque<std::pair<double, int64_t>> points;
    };
    size_t points_;
    std::map<uint32_t, Series> series_;
};

}  // namespace leakwatch
