// The JSON API: /api/v1/processes and /api/v1/stacks.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>

#include "aggregate/aggregator.h"

namespace leakwatch {

nlohmann::json processes_json(const Snapshot& snapshot);
// The top `top` stacks of one process with every frame; nullopt if the pid is not watched.
std::optional<nlohmann::json> stacks_json(const Snapshot& snapshot, uint32_t pid, size_t top);
// A frame; a kernel frame has its raw address only with `address` (expose_kernel_addresses).
nlohmann::json frame_json(const Frame& frame, bool address = true);

// Which of the suspected series /api/v1/leaks returns: `limit` of them from the `offset`-th,
// fastest growing first.
struct LeaksPage {
    uint64_t offset = 0;
    uint64_t limit = 100;
    bool kernel_addresses = false;  // expose_kernel_addresses
};
// The series the leak detector suspects now, with growth rate and how long they have been
// suspected, one page of them; `now` is unix seconds.
nlohmann::json leaks_json(const Snapshot& snapshot, double now, const LeaksPage& page = {});
// Kernel totals per kind, the top `top` kernel stacks with frames, and the top processes;
// nullopt when kernel tracking is off. Frames carry raw addresses only with `addresses`.
std::optional<nlohmann::json> kernel_json(const Snapshot& snapshot, size_t top,
                                          bool addresses = false);

}  // namespace leakwatch
