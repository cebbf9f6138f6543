// The daemon's configuration: the YAML schema documented in config/leakwatch.yaml.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace re2 {
class RE2;
}

namespace leakwatch {

using Duration = std::chrono::milliseconds;

// All criteria that are set must hold (AND); at least one must be set.
struct Match {
    std::optional<std::string> comm;     // exact, compared with /proc/PID/comm (15 chars)
    std::optional<std::string> exe;      // exact path of /proc/PID/exe
    std::optional<int> pid;              // one process id
    std::optional<std::string> cmdline;  // RE2 regex, searched in argv joined by ' '
    std::shared_ptr<const re2::RE2> cmdline_regex;  // compiled form of cmdline (immutable, shared)
    std::optional<uint32_t> uid;                    // the process's real and effective user id
    std::optional<std::string> cgroup;              // glob (fnmatch) over the cgroup v2 path
    std::optional<std::string> unit;  // glob over the systemd unit that cgroup belongs to
};

// A command line is matched over its first kMaxCommandLine bytes (as /proc/PID/cmdline gives
// them, NULs between the arguments turned into spaces).
constexpr size_t kMaxCommandLine = 1 << 20;
// What a cmdline pattern may use: RE2 compiles it to an automaton within this memory, and
// matches in time linear in the text, whatever the pattern.
constexpr int64_t kMaxRegexMemory = 8 << 20;

// Compiles a cmdline pattern (RE2 syntax) with those bounds; an error says why not.
Result<std::shared_ptr<const re2::RE2>> compile_cmdline(const std::string& pattern);

struct Allocator {
    // "libc" finds the process's own C library in /proc/PID/maps; "exe" probes the main
    // executable (static binaries); any other value is a path (or a basename such as
    // libjemalloc.so.2) of a mapped library.
    std::string library = "libc";
    std::string symbol_prefix;  // e.g. "je_" for a prefixed jemalloc
};

struct WatchRule {
    std::string name;  // becomes the `watch` label
    Match match;
    Allocator allocator;
    uint64_t min_size = 0;
    uint64_t max_size = UINT64_MAX;
    Duration min_age{0};
    // Byte-based sampling of the allocator probes: mean bytes between samples, 0 = every
    // allocation is recorded. An allocation of s bytes is recorded with probability
    // 1 - exp(-s / sample_bytes) and counts for its size divided by that probability. When the
    // rule does not set it: 512KiB for kSampled, escalation.sample_bytes for kEscalate, 0 for
    // kFull (which must not set it).
    uint64_t sample_bytes = 0;
    // How stacks are walked (x86-64; elsewhere always by frame pointers): kAuto, by the frame
    // pointer through the files whose functions keep one and with the CFI (.eh_frame) of the
    // others, frame by frame; kFramePointer, the kernel's frame-pointer walk alone (callers in
    // code without frame pointers are missed); kDwarf, the CFI for every frame.
    enum class Unwind { kAuto, kFramePointer, kDwarf };
    Unwind unwind = Unwind::kAuto;
    // A HotSpot JVM the rule matches is asked for its perf map (Compiler.perfmap through its
    // attach socket, as jcmd does) when it is first watched and, rate-limited, when its stacks
    // hold JIT code the map does not name; false: never (its JIT frames stay unnamed unless it
    // writes a map by itself).
    bool jvm_attach = true;
    // How a matched process is tracked (docs/configuration.md, "Tracking modes"): kEscalate,
    // the watch tier (the kernel's accounting and sampled first-touch page faults, no uprobe)
    // until the leak detector suspects the process, then allocator probes for a while
    // (`escalation`); kSampled, allocator probes always on with sample_bytes; kFull, allocator
    // probes always on for every allocation.
    enum class Tracking { kEscalate, kSampled, kFull };
    Tracking tracking = Tracking::kEscalate;
    int line = 0;  // 1-based line of the rule in the file, for messages
};

// The largest sample_bytes: the BPF side computes with sizes below 24 times it in 31 bits.
constexpr uint64_t kMaxSampleBytes = 64ull << 20;

struct Limits {
    uint32_t live_allocations = 262144;  // BPF map: outstanding allocations, all processes
    uint32_t stacks = 16384;             // BPF map: distinct stacks
    uint32_t stack_totals = 65536;       // BPF map: (process, stack) pairs
    uint32_t processes = 1024;           // processes watched at once
    uint32_t threads = 65536;  // threads with an allocator call in flight (kernels before 5.11)
    uint32_t top_stacks = 20;  // stacks per process exported as metrics
    uint32_t kernel_live_allocations = 262144;  // BPF map: outstanding kernel allocations
    uint32_t kernel_stacks = 16384;             // BPF map: distinct kernel stacks
    uint32_t kernel_totals = 65536;             // BPF map: (process, kind, stack) triples
    uint32_t top_processes = 20;                // processes exported with their kernel bytes
    uint32_t symbol_files = 512;                // ELF files parsed, and DWARF files opened, at once
    uint32_t symbol_cache_entries = 65536;      // code addresses whose source line is remembered
    // The largest file leakwatchd reads for a watched process (ELF, debug file, perf map):
    // a larger one is refused, counted and logged once.
    uint64_t file_size = 512ull << 20;
    // Percent of `stacks` and of `stack_totals` one process may fill (1-100): a process with
    // ever new stacks takes its own share, never the room of the others.
    uint32_t process_share = 50;
    uint32_t growth_pages = 65536;  // BPF map: the watch tier's sampled first-touched pages
};

// The watch tier and its escalation to allocator probes (rules with tracking: escalate).
struct Escalation {
    Duration duration{std::chrono::minutes(30)};  // probes stay at most this long
    uint32_t max_processes = 4;                   // escalated at once
    uint64_t sample_bytes = 512 * 1024;           // probes' sampling while escalated; 0: all
    // Watch tier: mean bytes of first-touched memory between two sampled page faults.
    uint64_t watch_sample_bytes = 512 * 1024;
};

// Python frames in the stacks of CPython processes (x86-64).
struct PythonFrames {
    uint32_t max_frames = 16;  // read per allocation, innermost first; 0: none read
};

// The kinds of kernel allocation leakwatch can trace, by their names in the config.
inline constexpr std::array<std::string_view, 4> kKernelKinds = {"kmalloc", "kmem_cache", "page",
                                                                 "percpu"};

struct KernelConfig {
    bool enabled = false;
    std::array<bool, kKernelKinds.size()> kinds = {true, true, true, true};
    uint64_t min_size = 0;  // applied in BPF before any map update
    uint64_t max_size = UINT64_MAX;
    bool include_movable_pages = false;  // user memory and page cache pages
    // kEscalate: the kernel's own counters (slab caches, percpu, vmalloc) every interval, and
    // the allocation tracepoints only for a kind or cache that keeps growing; kFull: the
    // tracepoints always (WatchRule::Tracking's kSampled is not offered for the kernel).
    WatchRule::Tracking tracking = WatchRule::Tracking::kEscalate;
};

// The leak detector's parameters (docs/detection.md).
struct LeakDetection {
    bool enabled = true;
    Duration window{std::chrono::minutes(10)};  // growth is judged over this span
    double min_rate = 1024;                     // bytes/s: slower growth is never a leak
    uint64_t min_growth = 1 << 20;              // bytes the series must have grown over the window
    double confidence = 0.99;                   // of the Mann-Kendall trend test, 0.5..0.9999
    uint32_t max_series = 10000;  // series followed at once; beyond: not followed, counted
};

struct Config {
    std::string listen_address = ":10071";
    // Kernel frames in the API carry symbol, offset and module; their raw addresses (which
    // give away where KASLR put the kernel) only with this on.
    bool expose_kernel_addresses = false;
    Duration interval{std::chrono::seconds(5)};
    std::string log_level = "info";  // --log-level overrides it
    KernelConfig kernel;
    LeakDetection leak_detection;
    Escalation escalation;
    PythonFrames python;
    std::vector<WatchRule> watch;
    Limits limits;
    std::string source;  // file name it was read from, or "<built-in>"
};

// Parses a size such as "64KiB", "1MiB", "4096", "1.5GiB", "10kB" into bytes.
Result<uint64_t> parse_size(std::string_view text);
// Parses a duration such as "5s", "2m", "250ms", "1h", "1h30m" into milliseconds.
Result<Duration> parse_duration(std::string_view text);

// Parses YAML text; `source` names the input in error messages ("file.yaml:12: ...").
Result<Config> parse_config(const std::string& yaml_text, const std::string& source);
// Reads and parses a file; a missing or unreadable file is an error naming the path.
Result<Config> load_config(const std::string& path);
// The configuration used when no file is given.
Config default_config();
// The daemon's config: `path` must exist when it was given explicitly (--config); the default
// path may be absent, and the built-in default applies (logged).
Result<Config> read_config(const std::string& path, bool explicit_path);

}  // namespace leakwatch
