// Reading processes from a /proc tree (the real one, or a fixture tree in tests).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "util/result.h"

namespace leakwatch {

struct MapEntry {
    uint64_t start = 0;
    uint64_t end = 0;
    uint64_t offset = 0;  // file offset of `start`
    std::string perms;    // "r-xp"
    uint32_t dev_major = 0;
    uint32_t dev_minor = 0;
    uint64_t inode = 0;
    std::string path;  // "" for anonymous, "[heap]", "/usr/lib/.../libc.so.6", "(deleted)" stripped
    bool deleted = false;  // path had the " (deleted)" suffix
    bool executable() const { return perms.size() > 2 && perms[2] == 'x'; }
    bool contains(uint64_t addr) const { return addr >= start && addr < end; }
};

// Parses the text of /proc/PID/maps. Malformed lines are an error naming the line number.
Result<std::vector<MapEntry>> parse_maps(std::string_view text);

// The mapping containing addr, or nullptr. `maps` is sorted by start, as the kernel writes it.
const MapEntry* find_mapping(const std::vector<MapEntry>& maps, uint64_t addr);

struct ProcessInfo {
    int pid = 0;
    std::string comm;
    std::string exe;  // target of /proc/PID/exe ("" if unreadable, e.g. kernel thread)
    std::vector<std::string> argv;  // /proc/PID/cmdline split at NUL
    uint64_t start_time = 0;        // field 22 of /proc/PID/stat (clock ticks since boot)
};

// What the kernel accounts of a process's memory (/proc/PID/status), in bytes: its resident
// anonymous memory (RssAnon), what of it is swapped out (VmSwap), and its data size (VmData:
// private writable mappings, the heap included, resident or not).
struct ProcMemory {
    uint64_t anon = 0;
    uint64_t swap = 0;
    uint64_t data = 0;
};
// Parses the text of /proc/PID/status; fields it lacks stay 0 (a kernel thread has none).
ProcMemory parse_status_memory(std::string_view status);

// A pagemap entry (/proc/PID/pagemap): whether the page is still the process's own memory,
// present or swapped out, and not a file page or shared anonymous memory.
bool pagemap_entry_held(uint64_t entry);

class ProcReader {
  public:
    explicit ProcReader(std::string root = "/proc") : root_(std::move(root)) {}

    std::vector<int> pids() const;  // numeric entries of the root, ascending
    Result<ProcessInfo> process(int pid) const;
    Result<std::vector<MapEntry>> maps(int pid) const;
    Result<uint64_t> start_time(int pid) const;
    Result<ProcMemory> memory(int pid) const;
    // For each page address (sorted or not), whether the process still holds it as its own
    // memory (pagemap_entry_held). Error when its pagemap cannot be read (it exited).
    Result<std::vector<bool>> pages_held(int pid, const std::vector<uint64_t>& pages) const;
    // Path through which a file the process sees at `path` can be opened from here
    // (root/PID/root/path), so containers' own libraries are used, not ours.
    std::string path_in(int pid, const std::string& path) const;
    // A path that reaches the very file of a mapping, checked by inode: the path inside the
    // process's root (containers), its map_files link (deleted files), or the path as the
    // maps show it (a chroot in our mount namespace shows host paths). Error if none does.
    Result<std::string> mapped_file(int pid, const MapEntry& mapping) const;
    const std::string& root() const { return root_; }

  private:
    std::string root_;
};

// True when every criterion set in `match` holds for the process.
bool matches(const Match& match, const ProcessInfo& info);
// The first rule (in file order) matching the process, or nullptr.
const WatchRule* matching_rule(const std::vector<WatchRule>& rules, const ProcessInfo& info);

// The mapping of the allocator library a rule selects (see Allocator::library), i.e. the
// first mapping of that file; `exe` is the process's executable path. Error if not mapped.
Result<MapEntry> find_allocator_mapping(const std::vector<MapEntry>& maps,
                                        const Allocator& allocator, const std::string& exe);

}  // namespace leakwatch
