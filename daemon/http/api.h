// The JSON API: /api/v1/processes and /api/v1/stacks.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>

#include "aggregate/aggregator.h"

namespace leakwatch {

nlohmann::json processes_json(const Snapshot& snapshot);
// The top `top` stacks of one process with every frame; nullopt if the pid is not watched.
std::optional<nlohmann::json> stacks_json(const Snapshot& snapshot, uint32_t pid, size_t top);
nlohmann::json frame_json(const Frame& frame);
// The series the leak detector suspects now, with growth rate and how long they have been
// suspected; `now` is unix seconds.
nlohmann::json leaks_json(const Snapshot& snapshot, double now);
// Kernel totals per kind, the top `top` kernel stacks with frames, and the top processes;
// nullopt when kernel tracking is off.
std::optional<nlohmann::json> kernel_json(const Snapshot& snapshot, size_t top);

}  // namespace leakwatch
