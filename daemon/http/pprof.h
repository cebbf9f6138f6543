// The snapshot's stacks as profiles: pprof's profile.proto (go tool pprof, Parca, Pyroscope)
// and folded stacks (flamegraph.pl, speedscope).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "aggregate/aggregator.h"
#include "util/result.h"

namespace leakwatch {

// Which stacks a profile holds: one process, every process of one rule, or the kernel's; with
// neither pid nor watch, every watched process.
struct ProfileSelection {
    std::optional<uint32_t> pid;
    std::optional<std::string> watch;
    bool kernel = false;
};

// The sample types of every heap profile, in this order for good: `go tool pprof -diff_base`
// and merging compare them by position. inuse_space is the default, growth_space when the
// profile has only growth samples. growth_*: the watch tier's first-touch stacks (the pages
// they touched first that the process still holds, as estimated from the sampled ones; the
// sampled pages as the count), not allocations, so they never add to inuse_*.
inline constexpr const char* kSampleTypes[] = {"alloc_objects", "alloc_space",  "inuse_objects",
                                               "inuse_space",   "growth_pages", "growth_space"};

// Why the selection names nothing to profile (a pid that is not watched, the kernel when
// kernel tracking is off); nullopt when it is fine. A rule without processes is fine: its
// profile is empty.
std::optional<std::string> missing_target(const Snapshot& snapshot,
                                          const ProfileSelection& selection);

// A gzipped profile.proto of the selected stacks: per stack, allocations and bytes allocated
// since the process was attached, and outstanding now; frames with their mapping (file,
// build-id, file offset), function and source line where known; labels pid, comm and watch
// (kind for kernel stacks). A process's growth stacks (the watch tier) are samples of their
// own, with growth_* values only.
Result<std::string> pprof_profile(const Snapshot& snapshot, const ProfileSelection& selection,
                                  const std::string& version);

// One line per stack that holds bytes: its frames outermost first, separated by ';', a space
// and its outstanding bytes. Inlined functions are frames of their own; a selection of more
// than one process starts each line with a frame "comm [pid]".
std::string folded_stacks(const Snapshot& snapshot, const ProfileSelection& selection);

// gzip (RFC 1952) of `data`, as profile.proto files are stored.
Result<std::string> gzip(const std::string& data);

}  // namespace leakwatch
