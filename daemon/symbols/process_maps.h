// The memory maps of the processes leakwatchd watches (/proc/PID/maps), read on the
// symbolizer's loader (util/bounded_loader.h), never on the caller's thread.
//
// Reading a process's maps takes its memory map's lock for reading. A process can hold that
// lock up for as long as it likes: a reader of its memory (ours, on a loader thread) waits on
// a page of a file that is never served (FUSE) with the lock held, the process then calls
// mmap (a writer, queued), and every later reader of the lock queues behind that writer. So
// each read runs on the loader, one at a time per process, waited for a bounded time; the
// caller gets the new maps when the read ends within the wait, and otherwise the maps read
// last (kept per process) while the read goes on; a later call picks its result up. A read
// longer than the symbolizer's `slow` is refused (files_refused{reason="slow"}, logged once)
// and not waited for again; the maps read last stay in use.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proc/proc.h"
#include "util/bounded_loader.h"

namespace leakwatch {

class ProcessMaps {
  public:
    using Maps = std::shared_ptr<const std::vector<MapEntry>>;
    // How long to wait for the load of a key now; nullopt: it has run too long (refused).
    using WaitFor = std::function<std::optional<std::chrono::milliseconds>(const std::string&)>;

    ProcessMaps(const ProcReader& proc, BoundedLoader& loader, WaitFor wait_for);
    ProcessMaps(const ProcessMaps&) = delete;
    ProcessMaps& operator=(const ProcessMaps&) = delete;

    struct Read {
        Maps maps;             // the newest maps read (nullptr: none read yet, or it failed)
        bool fresh = false;    // `maps` were read since the last call (this one's read, or one
                               // that had ended since)
        bool pending = false;  // a read of pid is still under way
        bool refused = false;  // ... and has run so long that it is refused as slow
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
    struct State;
    // Moves a finished read of pid into what is kept. Caller holds the lock.
    static bool pick_up(State& state, pid_t pid);

    ProcReader proc_;  // a copy: loads may outlive the caller's
    BoundedLoader& loader_;
    WaitFor wait_for_;
    std::shared_ptr<State> state_;  // shared with the loads, which may outlive this
};

}  // namespace leakwatch
