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
#include "util/result.h"

namespace leakwatch {

struct Frame {
    uint64_t address = 0;        // absolute address in the process
    std::string symbol;          // demangled; "" when unknown
    uint64_t offset = 0;         // address - symbol start, when symbol is known
    std::string module;          // path of the mapped file, or "[anon]" / "[unknown]"
    uint64_t module_offset = 0;  // file offset of the address within `module`
    std::string build_id;        // hex, "" when the file has none
    // "symbol+0x1f", or "module+0x1234" when no symbol is known.
    std::string display() const;
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

  private:
    struct Segment {
        uint64_t vaddr, offset, filesz;
    };
    std::string build_id_;
    std::vector<Segment> segments_;
    std::vector<Symbol> symbols_;                        // sorted by start
    std::unordered_map<std::string, uint64_t> by_name_;  // raw name -> vaddr
    bool has_symtab_ = false;  // not stripped: a copy with .symtab beats one without
    friend class ElfFileBuilder;
};

// Caches ElfFile per file identity (build-id, else path+device+inode+mtime), so each file is
// parsed once however many processes map it. Thread-safe.
class Symbolizer {
  public:
    explicit Symbolizer(const ProcReader& proc) : proc_(proc) {}

    // The parsed ELF file mapped by `pid` at `mapping` (opened via /proc/PID/root).
    Result<std::shared_ptr<const ElfFile>> file_for(int pid, const MapEntry& mapping);
    // Symbolizes one address of process `pid` using its maps. Never fails: unresolved
    // addresses come back with module+offset or "[unknown]".
    Frame symbolize(int pid, const std::vector<MapEntry>& maps, uint64_t address);
    size_t cached_files() const;

  private:
    const ProcReader& proc_;
    mutable std::mutex mu_;
    std::map<std::string, std::shared_ptr<const ElfFile>> by_identity_;
    std::map<std::string, std::shared_ptr<const ElfFile>> by_build_id_;
    // Files that could not be opened or parsed (key: opened path + mapped dev/inode), so a
    // missing or non-ELF file costs one attempt, not one per frame.
    std::map<std::string, std::string> failed_;
    bool warned_full_ = false;
    void remember_failure(const std::string& key, const std::string& message);
    void insert_identity(const std::string& identity, std::shared_ptr<const ElfFile> file);
};

}  // namespace leakwatch
