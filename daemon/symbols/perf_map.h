// Names of JIT-compiled code from the perf map a runtime writes: /tmp/perf-PID.map, one
// "START SIZE name" line per code blob (hex start and size), as written by HotSpot
// (`jcmd PID Compiler.perfmap`, -XX:+DumpPerfMapAtExit), CPython 3.12+ (`-X perf`), V8 and
// others. Read through /proc/PID/root with the process's own pid in its pid namespace.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proc/proc.h"
#include "symbols/lru.h"

namespace leakwatch {

class PerfMap {
  public:
    struct Symbol {
        uint64_t start = 0;
        uint64_t size = 0;
        std::string name;
    };
    // Lines that are not "START SIZE name" are skipped (a map being written may end mid-line).
    static PerfMap parse(std::string_view text);
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
// recently used out first). Not thread-safe: the Symbolizer locks around it.
class PerfMaps {
  public:
    explicit PerfMaps(const ProcReader& proc, size_t max_processes = 64);
    // The perf map symbol of an address of pid, if the map names it. `recheck`: an address
    // the map does not name has the file checked for changes at once, not after a second
    // (the unwinder, whose rules stay).
    const PerfMap::Symbol* find(int pid, uint64_t addr, bool recheck = false);
    // Changes whenever pid's map is read anew: frames resolved with an older generation may
    // now be named.
    uint64_t generation(int pid);
    // Drops what is held of a process that is no longer watched.
    void forget(int pid) { entries_.erase(pid); }

  private:
    struct Entry {
        std::shared_ptr<const PerfMap> map;
        std::string path;
        int64_t mtime_ns = -1;
        int64_t size = -1;
        uint64_t generation = 0;
        std::chrono::steady_clock::time_point checked{};
    };
    Entry& refresh(int pid, bool now = false);

    const ProcReader& proc_;
    LruCache<int, Entry> entries_;
    uint64_t next_generation_ = 1;
};

}  // namespace leakwatch
