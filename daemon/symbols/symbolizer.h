// ELF symbols for user-space addresses, and symbol -> file offset for attaching uprobes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "proc/proc.h"
#include "symbols/debuginfo.h"
#include "symbols/lru.h"
#include "symbols/perf_map.h"
#include "symbols/shared_string.h"
#include "util/result.h"

namespace leakwatch {

struct Frame {
    uint64_t address = 0;        // absolute address in the process
    std::string symbol;          // demangled; "" when unknown
    uint64_t offset = 0;         // address - symbol start, when symbol is known
    SharedString module;         // path of the mapped file, or "[anon]" / "[unknown]"
    uint64_t module_offset = 0;  // file offset of the address within `module`
    SharedString build_id;       // hex, "" when the file has none
    // From DWARF, when the file or a separate debug file has it: the source line in the frame's
    // own function, and the functions inlined at the address (innermost first, each with its
    // line). Never part of a metric label.
    SharedString file;
    uint32_t line = 0;
    std::vector<SourceLine> inlined;
    // "symbol+0x1f", or "module+0x1234" when no symbol is known.
    std::string display() const;
    // "file:line", or "" when unknown.
    std::string source() const;
};

// One ELF file, parsed once: its symbols (.symtab and .dynsym), its PT_LOAD segments and
// build-id. Safe to share between threads after open().
class ElfFile {
  public:
    static Result<std::shared_ptr<const ElfFile>> open(const std::string& path);

    const std::string& build_id() const { return build_id_; }
    // The ELF virtual address that file offset `off` is loaded at (via PT_LOAD), if any.
    std::optional<uint64_t> vaddr_of_file_offset(uint64_t off) const;
    // File offset of an ELF virtual address (for uprobes), if inside a PT_LOAD segment.
    std::optional<uint64_t> file_offset_of_vaddr(uint64_t vaddr) const;
    struct Symbol {
        std::string name;  // demangled
        uint64_t start = 0;
        uint64_t size = 0;
    };
    // The function symbol containing vaddr (or the nearest preceding one of size 0).
    const Symbol* symbol_at(uint64_t vaddr) const;
    // The vaddr of a defined function symbol by its raw (mangled, unversioned) name.
    std::optional<uint64_t> function_address(const std::string& raw_name) const;
    // Distinct per parse (never reused), to key what is derived from this parse.
    uint64_t id() const { return id_; }
    // The file has DWARF of its own (a non-empty .debug_info).
    bool has_dwarf() const { return has_dwarf_; }
    // Its .gnu_debuglink: the separate debug file's name and CRC-32; "" when none.
    const std::string& debuglink() const { return debuglink_; }
    uint32_t debuglink_crc() const { return debuglink_crc_; }

  private:
    struct Segment {
        uint64_t vaddr, offset, filesz;
    };
    std::string build_id_;
    std::vector<Segment> segments_;
    std::vector<Symbol> symbols_;                        // sorted by start
    std::unordered_map<std::string, uint64_t> by_name_;  // raw name -> vaddr
    bool has_symtab_ = false;  // not stripped: a copy with .symtab beats one without
    bool has_dwarf_ = false;
    std::string debuglink_;
    uint32_t debuglink_crc_ = 0;
    uint64_t id_ = 0;
    friend class ElfFileBuilder;
};

struct SymbolizerOptions {
    size_t max_files = 512;             // parsed ELF files, and as many opened DWARF files
    size_t max_source_entries = 65536;  // addresses whose source line is remembered
    bool source_lines = true;           // look up file:line and inlined functions in DWARF
    // Where separate debug files are, as paths inside the process's root (also tried as the
    // daemon sees them, for build-id matches).
    std::vector<std::string> debug_dirs = {"/usr/lib/debug"};
};

// One cache's use, for the self metrics.
struct SymbolCacheStats {
    std::string cache;  // "elf_files", "debug_files", "source_lines"
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t entries = 0;
    uint64_t capacity = 0;
    uint64_t evictions = 0;
};

// Caches ElfFile per file identity (build-id, else path+device+inode+mtime), so each file is
// parsed once however many processes map it; and, per parsed file, its DWARF and the source
// lines of the addresses looked up. Every cache is bounded, least recently used out first.
// Thread-safe.
class Symbolizer {
  public:
    explicit Symbolizer(const ProcReader& proc, SymbolizerOptions options = {});

    // The parsed ELF file mapped by `pid` at `mapping` (opened via /proc/PID/root).
    Result<std::shared_ptr<const ElfFile>> file_for(int pid, const MapEntry& mapping);
    // Symbolizes one address of process `pid` using its maps. Never fails: unresolved
    // addresses come back with module+offset or "[unknown]". With debug info, the frame
    // also gets its source line and inlined functions.
    Frame symbolize(int pid, const std::vector<MapEntry>& maps, uint64_t address);
    size_t cached_files() const;
    // Changes whenever the perf map of pid (JIT-compiled code's names) is read anew.
    uint64_t perf_map_generation(int pid);
    // The JIT code blob of pid's perf map that holds addr. When the map does not name it, the
    // file is checked for changes at once rather than after a second (the unwinder's rules,
    // made from the blob, stay).
    std::optional<PerfMap::Symbol> jit_blob(int pid, uint64_t addr);
    // Drops the perf map held for a process that is no longer watched.
    void forget_process(int pid);
    // New bounds (a config reload); shrinking evicts at once.
    void set_limits(size_t max_files, size_t max_source_entries);
    // Closes the DWARF files opened since the last call; the source lines found stay cached.
    // The daemon calls it after each interval's symbolization: libdw's structures for a large
    // debug file (libc's, from libc6-dbg: about 14 MiB) are then held only while new stacks
    // are symbolized. Returns whether any was open.
    bool release_debug_info();
    std::vector<SymbolCacheStats> cache_stats() const;

  private:
    struct PairHash {
        size_t operator()(const std::pair<uint64_t, uint64_t>& p) const {
            return std::hash<uint64_t>()(p.first * 0x9e3779b97f4a7c15ull ^ p.second);
        }
    };
    Result<std::shared_ptr<const ElfFile>> file_for(int pid, const MapEntry& mapping,
                                                    std::string* opened_path);
    // The DWARF of a parsed file (nullptr: none found), looked for once per parse.
    std::shared_ptr<DebugInfo> debug_info_for(int pid, const MapEntry& mapping, const ElfFile& file,
                                              const std::string& path);
    void add_source(int pid, const MapEntry& mapping, const ElfFile& file, const std::string& path,
                    uint64_t vaddr, Frame& frame);

    const ProcReader& proc_;
    SymbolizerOptions options_;
    mutable std::mutex mu_;
    // identity (opened path + dev:inode:mtime) -> key in files_ ("b:" build-id, else
    // "i:" identity): copies of one build share a parse. Bounded apart (it is only an index).
    std::unordered_map<std::string, std::string> identities_;
    LruCache<std::string, std::shared_ptr<const ElfFile>> files_;
    LruCache<uint64_t, std::shared_ptr<DebugInfo>> debug_;  // by ElfFile::id()
    LruCache<std::pair<uint64_t, uint64_t>, std::shared_ptr<const SourceInfo>, PairHash> lines_;
    // Files that could not be opened or parsed (key: opened path + mapped dev/inode), so a
    // missing or non-ELF file costs one attempt, not one per frame.
    std::map<std::string, std::string> failed_;
    PerfMaps perf_maps_;
    bool warned_evicting_ = false;
    void remember_failure(const std::string& key, const std::string& message);
    void insert_file(const std::string& identity, const std::string& key,
                     std::shared_ptr<const ElfFile> file);
};

}  // namespace leakwatch
