// Source lines and inlined functions from DWARF (elfutils libdw), and where a file's DWARF is:
// in the file itself, in a separate file found by build-id, or through .gnu_debuglink.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "proc/files.h"
#include "util/result.h"

namespace leakwatch {

// A source-level function at an address, and where in it the address is.
struct SourceLine {
    std::string function;  // demangled; "" when DWARF names none
    std::string file;      // as the compiler recorded it (usually absolute)
    uint32_t line = 0;
};

struct SourceInfo {
    std::string file;  // "" when unknown
    uint32_t line = 0;
    // Functions inlined at the address, innermost first, each with the line inside it. The
    // frame's own file:line is then where its function calls the outermost of them.
    std::vector<SourceLine> inlined;
    bool known() const { return line != 0 || !inlined.empty(); }
};

// The DWARF of one file, opened once. lookup() is thread-safe (libdw is not: one lock per
// file).
class DebugInfo {
  public:
    // Opens the DWARF of an open file, and reads every DWARF section into memory, so that
    // lookups never read the file again (it may be on a file system that blocks; a caller
    // opens it on a loader thread). With `build_id` non-empty, the file must have that
    // build-id; with `crc` set (a .gnu_debuglink match of a file without build-id), that
    // CRC-32.
    static Result<std::unique_ptr<DebugInfo>> open(OpenFile file, const std::string& build_id,
                                                   const uint32_t* crc = nullptr);
    ~DebugInfo();
    DebugInfo(const DebugInfo&) = delete;
    DebugInfo& operator=(const DebugInfo&) = delete;

    // Source line and inline chain at an ELF virtual address (as in the symbol table; a
    // separate debug file keeps the addresses of the file it was split from).
    SourceInfo lookup(uint64_t vaddr);
    // The dwz common file (.gnu_debugaltlink) this file refers to: its name and build-id, if any.
    std::pair<std::string, std::string> altlink() const;
    // Uses `alt` for the DIEs that refer to the common file (kept alive by this object).
    void set_alt(std::unique_ptr<DebugInfo> alt);
    const std::string& path() const { return path_; }

  private:
    DebugInfo() = default;
    std::pair<std::string, std::string> read_altlink() const;
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::string path_;
    std::pair<std::string, std::string> altlink_;
    std::mutex mu_;
};

// Where to look for the DWARF of one mapped ELF file.
struct DebugSearch {
    std::function<Result<OpenFile>()> open_self;  // opens the mapped file itself
    bool self_has_dwarf = false;
    std::string build_id;   // hex, "" when none
    std::string debuglink;  // .gnu_debuglink file name, "" when none
    uint32_t debuglink_crc = 0;
    std::string mapped_path;              // the file's path as the process sees it
    std::vector<std::string> debug_dirs;  // as the process sees them, e.g. /usr/lib/debug
    // Opens a path inside the process's root (proc/files.h, open_in_root); unset: the paths
    // are the daemon's own.
    std::function<Result<OpenFile>(const std::string&)> open_in_root;
    uint64_t max_bytes = 512ull << 20;  // limits.file_size, for the daemon's own files too
};

struct DebugCandidate {
    std::string path;
    bool in_root = false;  // a path inside the process's root, else the daemon's own
    bool operator==(const DebugCandidate&) const = default;
};

// Candidate separate debug files, in the order they are tried: by build-id in each debug
// directory (inside the process's root, then as seen by the daemon), then the debuglink name
// next to the file, in its .debug/ subdirectory and under each debug directory.
std::vector<DebugCandidate> debug_file_candidates(const DebugSearch& search);

// The DWARF for a mapped file, or an error saying where it was looked for. Opens and reads
// files: call it on a loader thread.
Result<std::unique_ptr<DebugInfo>> find_debug_info(const DebugSearch& search);

// The CRC-32 that .gnu_debuglink records (zlib's polynomial), of a whole file (whose size was
// bounded when it was opened).
Result<uint32_t> file_crc32(const OpenFile& file);

// Bytes as lowercase hex (build-ids).
std::string hex_bytes(const void* data, size_t n);

}  // namespace leakwatch
