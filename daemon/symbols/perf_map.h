// Names of JIT-compiled code from the perf map a runtime writes: /tmp/perf-PID.map, one
// "START SIZE name" line per code blob (hex start and size), as written by HotSpot
// (`jcmd PID Compiler.perfmap`, -XX:+DumpPerfMapAtExit), CPython 3.12+ (`-X perf`), V8 and
// others. Read through /proc/PID/root with the process's own pid in its pid namespace.
//
// The file is the watched process's to write, so it is read as proc/files.h says (a regular
// file within limits.file_size, no symlink, owned by the process's own user), its first
// kMaxPerfMapLines lines only, on a loader thread: reading it never blocks the caller longer
// than it chooses to wait.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proc/jvm_attach.h"
#include "proc/proc.h"
#include "symbols/lru.h"
#include "util/bounded_loader.h"

namespace leakwatch {

// Lines of a perf map read at most (a JVM's map has hundreds of thousands).
constexpr size_t kMaxPerfMapLines = 1000000;

class PerfMap {
  public:
    struct Symbol {
        uint64_t start = 0;
        uint64_t size = 0;
        std::string name;  // shown text (util/text.h)
    };
    // Lines that are not "START SIZE name" are skipped (a map being written may end mid-line);
    // at most `max_lines` lines are read.
    static PerfMap parse(std::string_view text, size_t max_lines = kMaxPerfMapLines);
    // The symbol whose [start, start + size) holds addr; the latest line wins where blobs
    // overlap (code freed and reused).
    const Symbol* find(uint64_t addr) const;
    size_t size() const { return symbols_.size(); }

  private:
    std::vector<Symbol> symbols_;  // sorted by start, no overlaps
};

// A perf map name as a frame's symbol: HotSpot's "ReturnType pkg.Class.method(Args)" loses
// the return type, so that the site is "pkg.Class.method" like a C++ function's; CPython's
// "py::func:/path/file.py" and the other runtimes' names stay as they are.
std::string perf_map_symbol(std::string_view name);

// The perf maps of watched processes, read when first needed and again when the file changes
// (checked at most once a second per process), for at most max_processes processes (least
// recently used out first). Thread-safe.
// The longest wait between two asks of a JVM for its perf map.
constexpr std::chrono::minutes kMaxAttachInterval{5};

class PerfMaps {
  public:
    struct Options {
        uint64_t max_bytes = 512 << 20;  // limits.file_size
        // How long a lookup waits for the first read of a process's map (given the read's
        // key in the loader); nullopt: that read is too slow, give up on the file.
        std::function<std::optional<std::chrono::milliseconds>(const std::string&)> wait =
            [](const std::string&) { return std::chrono::milliseconds(250); };
        size_t max_processes = 64;
        // A JVM's perf map is asked for (jcmd's Compiler.perfmap, spoken by proc/jvm_attach.h)
        // at most this often while its stacks hold JIT code the map does not name.
        // (doubling after each ask, up to kMaxAttachInterval).
        std::chrono::milliseconds attach_interval = std::chrono::seconds(10);
        AttachLimits attach_limits = {};
        // JVM attaches in flight at most: each may take attach_limits' 20 s when the JVM does
        // not answer, on threads of their own, so that the reads of perf maps (and of every
        // other file, on the shared loader) never wait behind them. The others wait their turn.
        size_t max_attaches = 2;
        // Runs a command in a JVM: jvm_command (tests put a JVM of their own here).
        std::function<Result<AttachReply>(const ProcReader&, int, std::string_view,
                                          const AttachLimits&, bool*)>
            command = [](const ProcReader& proc, int pid, std::string_view command,
                         const AttachLimits& limits, bool* give_up) {
                return jvm_command(proc, pid, command, limits, give_up);
            };
    };
    PerfMaps(const ProcReader& proc, BoundedLoader& loader, Options options);
    PerfMaps(const ProcReader& proc, BoundedLoader& loader) : PerfMaps(proc, loader, Options{}) {}

    // The perf map symbol of an address of pid, if the map names it. `recheck`: an address
    // the map does not name has the file checked for changes at once, not after a second
    // (the unwinder, whose rules stay). `pending` (if given) is set when the first read of
    // the map is still going on.
    std::optional<PerfMap::Symbol> find(int pid, uint64_t addr, bool recheck = false,
                                        bool* pending = nullptr);
    // Changes whenever pid's map is read anew: frames resolved with an older generation may
    // now be named. Asked for stacks that hold unnamed JIT frames: a JVM (watch_jvm) is asked
    // for a new map when due.
    uint64_t generation(int pid);
    // pid is a HotSpot JVM whose rule lets leakwatchd ask it for its perf map: asked at once,
    // then again (at most once an attach_interval) when an address in anonymous executable
    // memory is not in its map. A JVM that cannot write one (JDK 11) is not asked again.
    void watch_jvm(int pid);
    // Drops what is held of a process that is no longer watched.
    void forget(int pid);
    void set_max_bytes(uint64_t max_bytes);
    // JVM attaches that waited for one in flight to end (Options::max_attaches), since start.
    uint64_t attaches_queued() const;

    struct Read {
        std::string identity;  // "" when there is no file to read
        std::shared_ptr<const PerfMap> map;
        bool unchanged = false;  // the same file as last time: keep what was parsed
    };

  private:
    struct Entry {
        std::shared_ptr<const PerfMap> map;
        std::string identity;  // of the file read ("" when there was none)
        uint64_t generation = 0;
        bool loaded = false;  // read (or found absent) at least once
        std::chrono::steady_clock::time_point checked{};
    };
    struct Jvm {
        bool attaching = false;
        bool unable = false;  // the JVM cannot write a perf map: not asked again
        std::chrono::steady_clock::time_point asked{};
        uint64_t attaches = 0;
    };
    struct Shared {
        std::mutex mu;
        LruCache<int, Entry> entries;
        std::map<int, Jvm> jvms;  // the processes watch_jvm named, until forgotten
        uint64_t next_generation = 1;
        uint64_t max_bytes = 0;
        size_t attaches_in_flight = 0;  // queued or running on attach_loader_
        uint64_t attaches_queued = 0;
        explicit Shared(size_t max) : entries(max) {}
    };
    // Looks at the file again when due (`now`: at once), in the background; returns whether
    // its first read is still going on.
    bool refresh(int pid, bool now);
    // What a read found, into pid's entry.
    static void store(Shared& shared, int pid, Read r);
    // Asks JVM pid for its perf map when it is due (`now`: whatever the interval); returns
    // whether an attach is going on.
    bool request_attach(int pid, bool now);
    // Whether pid is a JVM that may still write a map naming more code.
    bool may_attach(int pid);

    ProcReader proc_;  // a copy: reads go on in loader threads that may outlive the caller
    BoundedLoader& loader_;
    Options options_;
    std::shared_ptr<Shared> shared_;
    BoundedLoader attach_loader_;  // JVM attaches only, Options::max_attaches threads
};

}  // namespace leakwatch
