// ELF symbols for user-space addresses, and symbol -> file offset for attaching uprobes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "proc/files.h"
#include "proc/proc.h"
#include "proc/proc_reads.h"
#include "symbols/debuginfo.h"
#include "symbols/hotspot.h"
#include "symbols/lru.h"
#include "symbols/perf_map.h"
#include "symbols/process_maps.h"
#include "symbols/shared_string.h"
#include "util/bounded_loader.h"
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
    // A file this frame needs (its ELF file, its DWARF, its perf map) was still being read:
    // symbolize it again later.
    bool pending = false;
    // "symbol+0x1f", or "module+0x1234" when no symbol is known.
    std::string display() const;
    // "file:line", or "" when unknown.
    std::string source() const;
};

// One ELF file, parsed once: its symbols (.symtab and .dynsym), its PT_LOAD segments and
// build-id. Safe to share between threads after open().
class ElfFile {
  public:
    // Parses an open file (read with pread, never mapped: a file truncated under a mapping
    // would be a SIGBUS).
    static Result<std::shared_ptr<const ElfFile>> open(const OpenFile& file);
    // The same for a path of the daemon's own (tests), within `max_bytes`.
    static Result<std::shared_ptr<const ElfFile>> open(const std::string& path,
                                                       uint64_t max_bytes = 512ull << 20);

    const std::string& build_id() const { return build_id_; }
    // The ELF virtual address that file offset `off` is loaded at (via PT_LOAD), if any.
    std::optional<uint64_t> vaddr_of_file_offset(uint64_t off) const;
    // File offset of an ELF virtual address (for uprobes), if inside a PT_LOAD segment.
    std::optional<uint64_t> file_offset_of_vaddr(uint64_t vaddr) const;
    struct Symbol {
        std::string name;  // demangled, shown text (util/text.h)
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
    // What two files share when they share this parse (hex SHA-256, see Symbolizer).
    const std::string& content_key() const { return content_key_; }

  private:
    struct Segment {
        uint64_t vaddr, offset, filesz;
    };
    std::string build_id_;
    std::vector<Segment> segments_;
    std::vector<Symbol> symbols_;                        // sorted by start
    std::unordered_map<std::string, uint64_t> by_name_;  // raw name -> vaddr
    bool has_dwarf_ = false;
    std::string debuglink_;
    uint32_t debuglink_crc_ = 0;
    std::string content_key_;
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
    uint64_t max_file_bytes = 512ull << 20;  // limits.file_size: larger files are not read
    // How long a lookup waits for a file to be read before it answers without it (it is
    // asked again later), and how long a read may go on before its file is refused as slow
    // (counted, logged once, never waited for again).
    std::chrono::milliseconds wait{250};
    std::chrono::milliseconds slow{10000};
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

// Caches a parsed ElfFile per content (a SHA-256 of what a parse holds: the load segments,
// the section headers, the symbol and version tables with their strings, the build-id), so a
// file is parsed once however many processes and copies of it there are, and a file whose
// symbols differ in any byte (a fake claiming another's build-id) never shares another's
// parse; and, per parsed file, its DWARF and the source lines of the addresses looked up.
// Every cache is bounded, least recently used out first.
//
// Files are opened and read on loader threads (proc/files.h says how), never on the caller's:
// a lookup waits for a file at most options.wait (and within the budget of begin_sample), and
// answers without it meanwhile, its frame marked `pending`. Thread-safe.
class Symbolizer {
  public:
    explicit Symbolizer(const ProcReader& proc, SymbolizerOptions options = {});
    ~Symbolizer();

    // The parsed ELF file mapped by `pid` at `mapping`. While it is still being read, an
    // error, with `*pending` set (if given).
    Result<std::shared_ptr<const ElfFile>> file_for(int pid, const MapEntry& mapping,
                                                    bool* pending = nullptr);
    // Parses an open file, or returns the parse of the same content. Reads the file: call it
    // on a loader thread. The function may outlive the symbolizer.
    using Parser = std::function<Result<std::shared_ptr<const ElfFile>>(const OpenFile&)>;
    Parser parser() const;
    // Symbolizes one address of process `pid` using its maps. Never fails: unresolved
    // addresses come back with module+offset or "[unknown]". With debug info, the frame
    // also gets its source line and inlined functions.
    Frame symbolize(int pid, const std::vector<MapEntry>& maps, uint64_t address);
    size_t cached_files() const;
    // Changes whenever the perf map of pid (JIT-compiled code's names) is read anew.
    // pid is a HotSpot JVM: its structures are read (symbols/hotspot.h) so that its
    // interpreted frames are walked and named; `attach`: its perf map may be asked for too
    // (PerfMaps::watch_jvm).
    void watch_jvm(int pid, bool attach);
    // The interpreter's code [first, second) of JVM pid, once its structures are read;
    // `pending` (if given) is set while they are being read.
    std::optional<std::pair<uint64_t, uint64_t>> java_interpreter(int pid, bool* pending = nullptr);
    // The code blob of a compiled frame of JVM pid (symbols/hotspot.h), read from its code
    // cache; nullopt when pid is no JVM watched, its structures are not read (yet: `pending`),
    // or pc is in no blob.
    std::optional<HotSpotBlob> java_blob(int pid, uint64_t pc, bool* pending = nullptr);
    uint64_t perf_map_generation(int pid);
    // The JIT code blob of pid's perf map that holds addr. When the map does not name it, the
    // file is checked for changes at once rather than after a second (the unwinder's rules,
    // made from the blob, stay).
    // `pending` (if given) is set while the map's first read is going on.
    std::optional<PerfMap::Symbol> jit_blob(int pid, uint64_t addr, bool* pending = nullptr);
    // Drops what is held of a process that is no longer watched.
    void forget_process(int pid);
    // New bounds (a config reload); shrinking evicts at once.
    void set_limits(size_t max_files, size_t max_source_entries, uint64_t max_file_bytes);
    void set_limits(size_t max_files, size_t max_source_entries) {
        set_limits(max_files, max_source_entries, options_.max_file_bytes);
    }
    uint64_t max_file_bytes() const;
    // Lookups of the calling thread from now until end_sample wait for loads at most
    // `budget` in all (the daemon's sample: a process mapping many files that block cannot
    // hold it up for each of them).
    void begin_sample(std::chrono::milliseconds budget);
    void end_sample();
    // Closes the DWARF files opened since the last call; the source lines found stay cached.
    // The daemon calls it after each interval's symbolization: libdw's structures for a large
    // debug file (libc's, from libc6-dbg: about 14 MiB) are then held only while new stacks
    // are symbolized. Returns whether any was open.
    bool release_debug_info();
    std::vector<SymbolCacheStats> cache_stats() const;
    // The loader threads that read files for this symbolizer; the tracker and the unwinder
    // read theirs on it too.
    BoundedLoader& loader() { return loader_; }
    // The pool that reads /proc files which take a process's memory map lock (maps, cmdline,
    // pagemap): threads of its own, bounded per user (proc/proc_reads.h).
    ProcReadPool& proc_reads() { return proc_reads_; }
    // Admission to that pool's bounds for the loader's own reads that take a memory map's lock
    // (map_files opens, /proc/PID/mem): ProcReadPool::gate, a read of the same process in
    // flight waited for up to the options' wait.
    const ProcReadPool::Gate& proc_gate() const { return gate_; }
    // The maps of the processes symbolized and unwound, read on that pool (the tracker's
    // and the unwinder's reads of /proc/PID/maps alike: one read in flight per process).
    ProcessMaps& process_maps() { return process_maps_; }
    // JVM attaches that waited their turn (PerfMaps::attaches_queued).
    uint64_t jvm_attaches_queued() const { return perf_maps_.attaches_queued(); }
    // How long to wait for the load of `key` now: the options' wait, less what the sample's
    // budget has left, and nothing for a load already waited for once. When the load has run
    // longer than options.slow, nullopt: its file is to be given up on.
    std::optional<std::chrono::milliseconds> wait_for(const std::string& key);

  private:
    struct Shared;
    // The DWARF of a parsed file (nullptr: none found, or not yet: then `pending`).
    std::shared_ptr<DebugInfo> debug_info_for(int pid, const MapEntry& mapping, const ElfFile& file,
                                              bool& pending);
    void add_source(int pid, const MapEntry& mapping, const ElfFile& file, uint64_t vaddr,
                    Frame& frame);

    ProcReader proc_;  // a copy: loads may outlive the caller's
    SymbolizerOptions options_;
    std::shared_ptr<Shared> shared_;
    // Loads hold what they use by value or shared pointer (proc_, shared_, java_, gate_, the
    // perf maps' and Python namer's own state), never the symbolizer: a load still running when
    // the members below are gone touches none of them.
    BoundedLoader loader_;
    // The reads of /proc files that take a process's memory map lock, on threads of their own.
    ProcReadPool proc_reads_;
    PerfMaps perf_maps_;
    ProcessMaps process_maps_;
    // The JVMs' layouts and their methods' names (symbols/hotspot.h).
    struct Java;
    std::shared_ptr<Java> java_;
    // proc_reads_.gate(): copied into loads (it outlives the pool).
    ProcReadPool::Gate gate_;
    std::shared_ptr<const HotSpotLayout> java_layout(int pid, bool* pending);
    using JavaNamer =
        std::function<std::optional<std::string>(const JvmMemory&, const HotSpotLayout&)>;
    // Names a frame of JVM pid by `read` (on the loader), cached under (pid, key_address).
    void name_java_frame(int pid, uint64_t key_address, const std::string& job,
                         const JavaNamer& read, Frame& frame);
    void name_java_method(int pid, uint64_t address, Frame& frame);
    // Names a frame in a JVM's code cache from its blob's Method*, when the perf map does not.
    void name_java_blob(int pid, uint64_t address, Frame& frame);
};

}  // namespace leakwatch
