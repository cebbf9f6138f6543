// The attach operations the tracker needs: the loader's Probes in the daemon, a fake in the
// tracker's unit tests.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "symbols/python.h"
#include "util/result.h"

namespace leakwatch {

// The allocator functions leakwatch probes, in the order they are attached.
struct AllocatorFunction {
    const char* name;
    bool has_return;  // false: entry-only (free, munmap)
    uint32_t kind;    // enum lw_kind
    int arguments;    // integer arguments the entry program reads
};
const std::vector<AllocatorFunction>& allocator_functions();

// Where each allocator function of one file is: file offsets for uprobes.
struct ProbeTarget {
    std::string path;  // path the kernel opens (through /proc/PID/root)
    std::vector<std::pair<std::string, uint64_t>> offsets;  // function name -> file offset
    // Where the library's file offset 0 would be in the process (start - offset of the mapping
    // holding the probes), so that a probe's address is load_bias + file offset.
    uint64_t load_bias = 0;
    // The name the probes are kept under across restarts of the daemon (the tracker's
    // kept_tag); empty: not kept.
    std::string keep_as;
};

// What the BPF side records of one process.
struct Recording {
    uint64_t min_size = 0;
    uint64_t max_size = UINT64_MAX;
    uint64_t sample_bytes = 0;  // 0: every allocation
    uint64_t lib_lo = 0;        // the allocator library's mapped range
    uint64_t lib_hi = 0;
    bool dwarf_unwind = false;  // walk stacks with unwind rules (x86-64)
    // With dwarf_unwind: code walked by the frame pointer (its functions keep one), process
    // addresses [first, second), and inside it code walked by rules anyway.
    std::vector<std::pair<uint64_t, uint64_t>> frame_pointer_code;
    std::vector<std::pair<uint64_t, uint64_t>> rules_code;
    // CPython's frames (x86-64): the layout of its version and where its thread-state key is;
    // nullptr: none read.
    const PythonLayout* python = nullptr;
    uint64_t python_key_address = 0;
    uint32_t python_max_frames = 0;
};

// The uprobes of one process; detached when destroyed.
class Attachment {
  public:
    virtual ~Attachment() = default;
    virtual size_t links() const = 0;
};

class Attacher {
  public:
    virtual ~Attacher() = default;
    virtual Result<std::unique_ptr<Attachment>> attach(pid_t pid, const ProbeTarget& target) = 0;
    // Starts recording a process (after attach): its filters and zeroed totals.
    virtual Result<void> watch(uint32_t tgid, const Recording& recording) = 0;
    virtual void unwatch(uint32_t tgid) = 0;
    // Whether a process is being recorded: watch() was called for it and neither unwatch() nor
    // its exec or exit (which the BPF side sees itself) happened since.
    virtual bool watching(uint32_t tgid) const = 0;
    // The watch tier (no uprobes): samples the process's first-touch page faults, one page in
    // `fault_sample_bytes` of touched memory, with stacks walked as `recording` says (its
    // unwinding and code ranges; its sizes and sampling are the probes' and unused here).
    virtual Result<void> watch_memory(uint32_t tgid, const Recording& recording,
                                      uint64_t fault_sample_bytes) = 0;
    virtual void unwatch_memory(uint32_t tgid) = 0;
    // Deletes every live allocation, stack and total of these processes, and their sampled
    // pages.
    virtual void purge(const std::set<uint32_t>& tgids) = 0;
    // Deletes what the allocator probes recorded of these processes (live allocations and
    // totals) and keeps their stacks and sampled pages: an escalation that ends.
    virtual void purge_probes(const std::set<uint32_t>& tgids) = 0;
};

}  // namespace leakwatch
