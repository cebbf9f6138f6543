// The memory maps of the processes leakwatchd watches (/proc/PID/maps), read on the /proc
// read pool (proc/proc_reads.h), never on the caller's thread.
//
// Reading a process's maps takes its memory map's lock for reading (before the per-VMA locks
// of 6.x kernels), which a process can hold up for as long as it likes. The caller gets the new
// maps when the read ends within the wait, and otherwise the maps read last (kept per process)
// while the read goes on; a later call picks its result up. A read longer than the
// symbolizer's `slow` is refused (files_refused{reason="slow"}, logged once) and not waited for
// again; the maps read last stay in use.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proc/proc.h"
#include "proc/proc_reads.h"

namespace leakwatch {

class ProcessMaps {
  public:
    using Maps = std::shared_ptr<const std::vector<MapEntry>>;
    // How long to wait for the load of a key now; nullopt: it has run too long (refused).
    using WaitFor = std::function<std::optional<std::chrono::milliseconds>(const std::string&)>;

    ProcessMaps(const ProcReader& proc, ProcReadPool& pool, WaitFor wait_for);
    ProcessMaps(const ProcessMaps&) = delete;
    ProcessMaps& operator=(const ProcessMaps&) = delete;

    struct Read {
        Maps maps;             // the newest maps read (nullptr: none read yet, or it failed)
        bool fresh = false;    // `maps` were read since the last call (this one's read, or one
                               // that had ended since)
        bool pending = false;  // a read of pid is still under way, or could not start yet
        bool refused = false;  // ... and has run so long that it is refused as slow, or could
                               // not start for the /proc read pool's bounds (`busy`)
        bool busy = false;
        bool gone = false;     // the last read failed: the process has no maps (it exited)
        std::string error;     // why, when gone
    };
    // Asks for pid's maps as they are now: starts a read unless one is under way, and waits
    // for it as long as `wait_for` says.
    Read read(pid_t pid);
    // The maps read last of pid, picking up a read ended since; never starts one.
    Maps last(pid_t pid);
    // What is held of pid goes (it exited, exec'd, is no longer watched, or its attach was
    // given up).
    void forget(pid_t pid);
    // What is held of every pid but those `keep` says goes: the processes read once and
    // neither watched nor waited for any more (the kernel sends no exit event for a process
    // that was never watched, so nothing else would say they are gone).
    void forget_unless(const std::function<bool(pid_t)>& keep);
    // How many processes something is held of.
    size_t size() const;

  private:
    ProcReader proc_;
    ProcFileReads<std::vector<MapEntry>> reads_;
};

}  // namespace leakwatch
