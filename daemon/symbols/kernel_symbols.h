// Kernel symbols that follow modules loaded and unloaded while the daemon runs.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "symbols/kallsyms.h"
#include "util/result.h"

namespace leakwatch {

struct KernelSymbolsOptions {
    using Clock = std::chrono::steady_clock;
    std::string path = "/proc/kallsyms";
    std::string sys_module = "/sys/module";  // modules' section starts (Kallsyms::load)
    // The shortest time between two reads: reading /proc/kallsyms takes tens of milliseconds.
    Clock::duration min_reread_interval = std::chrono::seconds(10);
    // Module loads and unloads the kernel has counted so far (KernelStack::modules), or nullopt
    // when it does not count them: then a frame in a module is named from the symbols as last
    // read.
    std::function<std::optional<uint32_t>()> module_generation = [] {
        return std::optional<uint32_t>();
    };
    std::function<Clock::time_point()> now = [] { return Clock::now(); };
    // Reads after the first in a thread of their own, so that sampling goes on meanwhile (a
    // read took 7 s in a guest under software emulation); refresh() installs them when done.
    bool background = true;
};

// Names the frames of kernel stacks from /proc/kallsyms, read at start and again when a stack
// has addresses it cannot name, or was stored after modules came or went since the last read,
// at most once per min_reread_interval.
//
// A module's addresses are named only from symbols read while that module was loaded and known
// to have been loaded before the stack was stored: the kernel counts module loads and unloads
// (KernelStack::modules), and a read records the count. So a stack stored by a module that was
// unloaded before its symbols were read, its addresses reused by another module, stays
// unnamed rather than taking the other module's names. Frames once named keep their names (the
// caller caches them), also after their module is unloaded.
class KernelSymbols {
  public:
    static Result<KernelSymbols> load(KernelSymbolsOptions options);

    // The frame at `address` of a stack stored when the kernel had counted `modules` module
    // loads and unloads. Unnamed ("[unknown]") when the symbols cannot name it yet; refresh()
    // then reads them again when it may.
    Frame symbolize(uint64_t address, uint32_t modules);

    // Starts reading the symbols again if symbolize() met an address that a newer read may name,
    // and the last read started at least min_reread_interval ago; installs a read that is done.
    // The symbols' version: it changes with every read installed, so that the caller names its
    // unnamed frames again.
    uint64_t refresh();

    uint64_t version() const { return version_; }
    size_t size() const { return table_->size(); }

  private:
    // kallsyms as read, with the kernel's count of module changes before and after.
    struct Read {
        Result<Kallsyms> table;
        std::optional<uint32_t> before, after;
    };
    static Read read(const KernelSymbolsOptions& options);
    Result<void> install(Read read);

    explicit KernelSymbols(KernelSymbolsOptions options) : options_(std::move(options)) {}
    bool counts_modules() const { return generation_.has_value(); }

    KernelSymbolsOptions options_;
    std::future<Read> pending_;  // a read in the background
    std::shared_ptr<const Kallsyms> table_;
    // Module loads and unloads counted before the table was read; nullopt: not counted.
    std::optional<uint32_t> generation_;
    struct Module {
        uint64_t start = 0;     // its lowest symbol: a module loaded anew lands elsewhere
        uint32_t known_at = 0;  // the count at the first read that had it: loaded by then
    };
    std::map<std::string, Module, std::less<>> modules_;  // by "[name]"
    // Addresses symbolize() could not name, with the version that failed first: a read after
    // that one that fails too is final (until modules change).
    std::unordered_map<uint64_t, uint64_t> unnamed_;
    uint64_t version_ = 0;
    bool due_ = false;
    KernelSymbolsOptions::Clock::time_point last_read_{};
};

}  // namespace leakwatch
