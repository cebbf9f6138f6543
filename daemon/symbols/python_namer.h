// The CPython processes watched: the runtime each runs (found from its files when it is
// attached) and the names of its code objects (read from its memory when a stack is named).
// Both are hostile input read from the process: every read runs on the symbolizer's loader
// (util/bounded_loader.h), waited for a bounded time, so that a process whose memory or files
// block whoever reads them (a page of a FUSE file that is never served, mapped where a code
// object's name should be) holds up a loader thread, never the caller (the main loop). The
// caller only sees finished results: a frame whose code object is still being read is shown
// unnamed ("[python]", pending) and named in a later snapshot; a process whose reads take
// longer than the symbolizer's `slow` is refused (files_refused{reason="slow"}) and its
// Python frames stay unnamed.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proc/proc.h"
#include "symbols/python.h"
#include "symbols/symbolizer.h"

namespace leakwatch {

// The C library a process maps. The BPF side finds a thread's state through glibc's struct
// pthread (its thread-specific data block at a fixed offset), a layout no other C library
// shares.
enum class CLibrary : uint8_t { kGlibc, kMusl, kOther };
CLibrary c_library(const std::vector<MapEntry>& maps);

class PythonNamer {
  public:
    PythonNamer(const ProcReader& proc, Symbolizer& symbolizer);
    ~PythonNamer();
    PythonNamer(const PythonNamer&) = delete;
    PythonNamer& operator=(const PythonNamer&) = delete;

    // The runtime of process pid (started at start_time: another process at the same pid is
    // another entry) whose frames leakwatch can read; nullptr when it has none, when its files
    // took too long to read, or while they are being read (then *pending is set).
    std::shared_ptr<const PythonRuntime> runtime(pid_t pid, uint64_t start_time,
                                                 const std::vector<MapEntry>& maps,
                                                 const std::string& exe, bool* pending);
    // A Python frame named from its code object (FrameResolver::resolve_python).
    Frame resolve(uint32_t pid, uint64_t code, uint32_t instruction);
    // Everything known of pid goes (it exited, exec'd or is no longer watched).
    void forget(pid_t pid);
    void clear();
    // Processes found running a CPython leakwatch cannot read (loss python_unsupported).
    uint64_t unsupported() const;
    // Processes known (tests).
    size_t processes() const;

  private:
    struct State;
    std::shared_ptr<State> state_;  // shared with the loads, which may outlive this
    ProcReader proc_;               // a copy: loads may outlive the caller's
    Symbolizer& symbolizer_;
};

}  // namespace leakwatch
