// Opening the files leakwatchd reads on a watched process's behalf (its perf map, the ELF files
// it maps, their debug files and unwind tables): a process controls them, so each is opened
// the one way below. Paths are resolved by the kernel inside the process's root (openat2
// RESOLVE_IN_ROOT: absolute symlinks and ".." cannot leave it; RESOLVE_NO_MAGICLINKS: no
// /proc/PID/fd-style jumps), with O_PATH first, so that a FIFO or a device is never opened for
// reading; only a regular file within a size bound is then opened (O_NONBLOCK, O_NOCTTY), and
// read with pread, never mapped (a file truncated under a mapping would be a SIGBUS). Every
// refusal is counted by reason and logged once per file.
//
// Opening or reading a file can still block (FUSE, a hung NFS server): the callers do it on a
// thread of their own, never on the main loop (util/bounded_loader.h).
#pragma once

#include <sys/stat.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proc/proc.h"
#include "util/result.h"

namespace leakwatch {

// Why a file was not read (the `reason` of leakwatch_files_refused_total).
enum class Refusal : uint8_t {
    kNotRegular,    // a FIFO, device, socket or directory
    kTooLarge,      // larger than limits.file_size
    kSymlink,       // a symlink where none is allowed (a perf map), or a magic link
    kOwner,         // a perf map its process's user does not own
    kSlow,          // opening or reading it took longer than leakwatchd waits
    kTooManyLines,  // a perf map longer than leakwatchd reads: only its first lines are used
    kMalformed,     // a mapped file that is not ELF, or whose headers cannot be read (truncated)
    kBusy,          // a /proc file not read: reads of its user's processes (or of all) are stuck
    kCount,
};
inline constexpr std::array<std::string_view, static_cast<size_t>(Refusal::kCount)> kRefusalNames =
    {"not_regular_file", "too_large", "symlink", "wrong_owner", "slow",
     "too_many_lines",   "malformed", "busy"};
using RefusalCounts = std::array<uint64_t, static_cast<size_t>(Refusal::kCount)>;

// Files refused so far, by reason, by every reader in the process.
RefusalCounts refused_files();
// Counts a refusal and logs it, once per reason and `file` (a path with its identity: a file
// refused again, e.g. a perf map checked each second, counts once; one that changed counts
// anew). What is remembered is bounded.
void refuse_file(Refusal why, const std::string& file, const std::string& detail);

// An open regular file, checked as above.
class OpenFile {
  public:
    OpenFile() = default;
    OpenFile(OpenFile&& o) noexcept;
    OpenFile& operator=(OpenFile&& o) noexcept;
    OpenFile(const OpenFile&) = delete;
    OpenFile& operator=(const OpenFile&) = delete;
    ~OpenFile();

    int fd() const { return fd_; }
    const struct stat& stat() const { return st_; }
    uint64_t size() const { return static_cast<uint64_t>(st_.st_size); }
    // The path as the process sees it, for messages.
    const std::string& path() const { return path_; }
    // A path naming this very file to the kernel while it is open (/proc/self/fd/N): what a
    // uprobe is attached to, so that no path is resolved again.
    std::string fd_path() const;
    // "dev:inode:mtime:size": two opens with the same identity read the same bytes.
    std::string identity() const;

  private:
    friend Result<OpenFile> finish_open(int path_fd, std::string path, uint64_t max_bytes);
    int fd_ = -1;
    struct stat st_ {};
    std::string path_;
};

struct OpenRules {
    uint64_t max_bytes = 0;
    bool symlinks = true;  // false: a symlink anywhere on the path is refused
    // When not empty: the file must be owned by one of these uids (a perf map must be its
    // process's own, so that no other user's file is read through it).
    std::vector<uint32_t> owners = {};
};

// Opens `path` (absolute) as process `pid` sees it, inside its root.
Result<OpenFile> open_in_root(const ProcReader& proc, int pid, const std::string& path,
                              const OpenRules& rules);
// The same below an open directory `root_fd` (what open_in_root does after opening the
// process's root). `use_openat2` false walks the path a component at a time and refuses every
// symlink: what a kernel or seccomp filter without openat2 gets.
Result<OpenFile> open_beneath(int root_fd, const std::string& path, const OpenRules& rules,
                              bool use_openat2 = true);

// Opens a path as the daemon sees it (its own files: host debug directories, tests), with the
// same checks (a regular file within max_bytes, opened without blocking).
Result<OpenFile> open_file(const std::string& path, uint64_t max_bytes);

// Admission for a read of a process's /proc file that takes its memory map's lock, done on the
// caller's thread (ProcReadPool::gate): a token to hold while reading, or nullopt (refused).
using ProcGate = std::function<std::optional<std::shared_ptr<void>>(int pid)>;

// Opens the very file of a mapping: its path inside the process's root or as the daemon sees it
// (a chroot in our mount namespace), each checked to be the mapping's device and inode; else
// (a deleted file, a memfd, a file replaced on disk, an overlay) its /proc/PID/map_files link,
// the mapping itself. That open takes the process's memory map lock, which the process can hold
// up forever: with a `gate`, it is done only when the gate admits it (a refusal is counted as
// files_refused{reason="busy"} and logged once).
Result<OpenFile> open_mapped(const ProcReader& proc, int pid, const MapEntry& mapping,
                             uint64_t max_bytes, const ProcGate& gate = {});

// Up to `length` bytes at `offset` (fewer at the end of the file).
Result<std::string> read_at(const OpenFile& file, uint64_t offset, size_t length);

}  // namespace leakwatch
