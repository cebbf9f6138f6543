// The command lines of processes a `cmdline` rule is tried on, read on the /proc read pool
// (proc/proc_reads.h), never on the main loop.
//
// Reading /proc/PID/cmdline takes the process's memory map lock for reading, which any process
// can hold up for as long as it likes. A `cmdline` rule is tried on every process of the host,
// so the main loop asks for a read here and goes on: one read in flight per process, waited
// for a bounded time; a later pass picks the result up. A read longer than the symbolizer's
// `slow` is refused (files_refused{reason="slow"}, logged once); reads in flight are bounded,
// so that an exec storm piles up neither loads nor memory.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proc/proc.h"
#include "proc/proc_reads.h"

namespace leakwatch {

class CmdlineReads {
  public:
    // How long to wait for the load of a key now; nullopt: it has run too long (refused).
    using WaitFor = std::function<std::optional<std::chrono::milliseconds>(const std::string&)>;

    CmdlineReads(const ProcReader& proc, ProcReadPool& pool, WaitFor wait_for,
                 size_t max_in_flight = 64);
    CmdlineReads(const CmdlineReads&) = delete;
    CmdlineReads& operator=(const CmdlineReads&) = delete;

    enum class State {
        kRead,     // `argv` is the command line
        kPending,  // a read is under way (or none could start: too many in flight, or the
                   // process's user has too many held up): ask again
        kSlow,     // the read has run longer than `slow`: refused
        kGone,     // it could not be read (the process exited); `error` says why
    };
    struct Read {
        State state = State::kPending;
        std::vector<std::string> argv;
        std::string error;
    };
    // The command line of the process at pid started at `start_time`: starts a read unless one
    // is under way, and waits for a new one as long as `wait_for` says. A result handed out is
    // not kept.
    Read read(pid_t pid, uint64_t start_time);
    // What is held of pid goes (it exited, or its read is no longer wanted).
    void forget(pid_t pid);
    // What is held of every pid but those `keep` says goes.
    void forget_unless(const std::function<bool(pid_t)>& keep);
    size_t size() const;       // processes something is held of
    size_t in_flight() const;  // reads started and not ended (forgotten ones too)

  private:
    ProcReader proc_;
    ProcFileReads<std::vector<std::string>> reads_;
};

}  // namespace leakwatch
