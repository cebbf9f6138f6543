// Reading processes from a /proc tree (the real one, or a fixture tree in tests).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
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

// The parts of /proc/PID/status, /proc/PID/cgroup and /proc/PID/stat that leakwatchd reads
// (`path` names the file in errors): the real and effective uids ("Uid:" line); the cgroup v2
// path ("0::PATH", or systemd's name=systemd hierarchy's on a v1 system; "" when none); the
// start time (field 22, after the comm, which may hold spaces and ')').
Result<std::pair<uint32_t, uint32_t>> parse_uids(std::string_view status, const std::string& path);
std::string parse_cgroup(std::string_view text);
Result<uint64_t> parse_start_time(std::string_view stat, const std::string& path);

// The mapping containing addr, or nullptr. `maps` is sorted by start, as the kernel writes it.
const MapEntry* find_mapping(const std::vector<MapEntry>& maps, uint64_t addr);

struct ProcessInfo {
    int pid = 0;
    std::string comm;      // as shown (util/text.h): what the labels, the API and the log carry
    std::string raw_comm;  // the bytes of /proc/PID/comm, which rules match
    std::string exe;       // target of /proc/PID/exe ("" if unreadable, e.g. kernel thread)
    // /proc/PID/cmdline split at NUL: its first kMaxCommandLine bytes (config/config.h).
    std::vector<std::string> argv;
    uint64_t start_time = 0;  // field 22 of /proc/PID/stat (clock ticks since boot)
    uint32_t uid = 0;         // real user id
    uint32_t euid = 0;        // effective user id
    // The cgroup v2 path ("0::PATH" of /proc/PID/cgroup; on a cgroup v1 system, the path in
    // systemd's name=systemd hierarchy), as the kernel gives it; "" when there is none.
    std::string cgroup;
};

// The systemd unit a cgroup path belongs to, as systemd itself tells it (sd_pid_get_unit): the
// first component below the slices ("/system.slice/nginx.service/workers" ->
// "nginx.service"); "" when the path names no unit.
std::string cgroup_unit(std::string_view cgroup);
// The 64-hex-digit id of the container a cgroup path is in (Docker, containerd, CRI-O,
// Podman, and Kubernetes' cgroupfs layout), or "".
std::string cgroup_container_id(std::string_view cgroup);
// The `unit` label of a process: the short (12-digit) id of its container, else its unit,
// else ""; shown text.
std::string unit_label(std::string_view cgroup);

// Shell-style glob: `*` (any text, `/` included), `?` (one character), `[...]` (a set, with
// `!` or `^` for its complement and `a-z` ranges), `\` (the next character as it is). In time
// proportional to the product of the lengths, whatever the pattern (no backtracking blow-up).
bool glob_matches(std::string_view pattern, std::string_view text);
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
    // With its command line unless `with_cmdline` is false (argv left empty): reading
    // /proc/PID/cmdline takes the process's memory map lock, which the process can hold up
    // (tracker/cmdline_reads.h); its comm, stat, status, cgroup and exe do not.
    Result<ProcessInfo> process(int pid, bool with_cmdline = true) const;
    // /proc/PID/cmdline split at NUL (its first kMaxCommandLine bytes).
    Result<std::vector<std::string>> cmdline(int pid) const;
    // Reads the ids and the cgroup of a process again (they change: setuid, a move to
    // another cgroup), into `info`.
    Result<void> reread_uid_and_cgroup(ProcessInfo& info) const;
    Result<std::vector<MapEntry>> maps(int pid) const;
    Result<uint64_t> start_time(int pid) const;
    // Whether the process still has its memory (the exe link of one of its threads reads):
    // false once it exits, from the moment its memory is released, zombie included.
    bool has_memory(int pid) const;
    Result<ProcMemory> memory(int pid) const;
    // The real uid of pid, from /proc/PID/status.
    Result<uint32_t> uid(int pid) const;
    // For each page address (sorted or not), whether the process still holds it as its own
    // memory (pagemap_entry_held). Error when its pagemap cannot be read (it exited).
    Result<std::vector<bool>> pages_held(int pid, const std::vector<uint64_t>& pages) const;
    const std::string& root() const { return root_; }

  private:
    std::string root_;
};

// True when every criterion set in `match` holds for the process.
bool matches(const Match& match, const ProcessInfo& info);
// The first rule (in file order) matching the process, or nullptr.
const WatchRule* matching_rule(const std::vector<WatchRule>& rules, const ProcessInfo& info);
// Whether the rule matching_rule() picks for `info` depends on its command line: the first
// rule whose other criteria match has a `cmdline` one. False for rule sets without `cmdline`.
bool needs_cmdline(const std::vector<WatchRule>& rules, const ProcessInfo& info);

// The mapping of the allocator library a rule selects (see Allocator::library), i.e. the
// first mapping of that file; `exe` is the process's executable path. Error if not mapped.
Result<MapEntry> find_allocator_mapping(const std::vector<MapEntry>& maps,
                                        const Allocator& allocator, const std::string& exe);

}  // namespace leakwatch
