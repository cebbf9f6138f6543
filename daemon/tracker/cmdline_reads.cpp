#include "tracker/cmdline_reads.h"

#include <utility>

namespace leakwatch {

CmdlineReads::CmdlineReads(const ProcReader& proc, ProcReadPool& pool, WaitFor wait_for,
                           size_t max_in_flight)
    : proc_(proc),
      reads_(proc, pool, std::move(wait_for),
             {.file = "cmdline",
              .refused = "the process is not matched against `cmdline` rules",
              .max_in_flight = max_in_flight,
              .hand_out_ended = true}) {}

CmdlineReads::Read CmdlineReads::read(pid_t pid, uint64_t start_time) {
    auto got = reads_.read(pid, start_time, [proc = proc_, pid] { return proc.cmdline(pid); });
    Read out;
    if (got.refused && !got.busy) {
        out.state = State::kSlow;
        return out;
    }
    if (!got.fresh) return out;  // pending
    // Handed out once: nothing is kept of a command line.
    reads_.forget(pid);
    if (got.value) {
        out.state = State::kRead;
        out.argv = *got.value;
    } else {
        out.state = State::kGone;
        out.error = std::move(got.error);
    }
    return out;
}

void CmdlineReads::forget(pid_t pid) {
    reads_.forget(pid);
}

void CmdlineReads::forget_unless(const std::function<bool(pid_t)>& keep) {
    reads_.forget_unless(keep);
}

size_t CmdlineReads::size() const {
    return reads_.size();
}

size_t CmdlineReads::in_flight() const {
    return reads_.in_flight();
}

}  // namespace leakwatch
