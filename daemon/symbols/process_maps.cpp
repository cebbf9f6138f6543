#include "symbols/process_maps.h"

#include <utility>

namespace leakwatch {

ProcessMaps::ProcessMaps(const ProcReader& proc, ProcReadPool& pool, WaitFor wait_for)
    : proc_(proc),
      reads_(proc, pool, std::move(wait_for),
             {.file = "maps", .refused = "the maps read before stay in use"}) {}

ProcessMaps::Read ProcessMaps::read(pid_t pid) {
    auto got = reads_.read(pid, 0, [proc = proc_, pid] { return proc.maps(pid); });
    Read out;
    out.maps = std::move(got.value);
    out.fresh = got.fresh;
    out.pending = got.pending;
    out.refused = got.refused;
    out.busy = got.busy;
    out.gone = got.gone;
    out.error = std::move(got.error);
    return out;
}

ProcessMaps::Maps ProcessMaps::last(pid_t pid) {
    return reads_.last(pid);
}

void ProcessMaps::forget(pid_t pid) {
    reads_.forget(pid);
}

void ProcessMaps::forget_unless(const std::function<bool(pid_t)>& keep) {
    reads_.forget_unless(keep);
}

size_t ProcessMaps::size() const {
    return reads_.size();
}

}  // namespace leakwatch
