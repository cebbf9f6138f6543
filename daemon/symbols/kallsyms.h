// Kernel symbols from /proc/kallsyms, for the frames of kernel allocation stacks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "symbols/symbolizer.h"
#include "util/result.h"

namespace leakwatch {

// The kernel's text symbols (core kernel, modules, JIT-compiled BPF programs) as they were when
// parsed. Immutable afterwards, so safe to share between threads. Modules and BPF programs
// loaded later are unknown until the file is loaded again.
class Kallsyms {
  public:
    // Where a section of a module starts, as /sys/module/NAME/sections/ lists them.
    struct Section {
        uint64_t start = 0;
        std::string module;  // "[name]"
    };

    // Parses kallsyms text ("ffffffff81000000 T _stext", "ffffffffc0a01000 t leak_fn\t[mod]").
    // Keeps text symbols (types t T w W), one per address; data symbols and section end markers
    // (_etext) only bound the text symbol before them, and a module's section starts (`sections`)
    // only that module's functions.
    // Errors name the line of malformed input; all-zero addresses (what kernel.kptr_restrict
    // shows a reader without CAP_SYSLOG) are an error saying so.
    static Result<Kallsyms> parse(std::string_view text, const std::vector<Section>& sections = {});
    // Reads `path`, and the sections of every module under `sys_module` ("" for none): they
    // bound a module's last function, which kallsyms gives no end, where the module's next
    // section starts (its init code, freed after init and gone from kallsyms, among them).
    static Result<Kallsyms> load(const std::string& path = "/proc/kallsyms",
                                 const std::string& sys_module = "");
    // The sections of the modules under `sys_module` (/sys/module/NAME/sections/*); unreadable
    // or hidden (zero) ones are left out.
    static std::vector<Section> module_sections(const std::string& sys_module);

    // The symbol containing `address`: symbol, offset, module ("[kernel]" or "[modname]"),
    // module_offset = offset; build_id stays empty. Outside every symbol: symbol "" and module
    // "[unknown]", module_offset the distance from the first text symbol (not the address).
    Frame symbolize(uint64_t address) const;
    // Text symbols kept (aliases at one address count once).
    size_t size() const { return symbols_; }

    // Where each module's text symbols start, "[name]" -> lowest symbol address; the core
    // kernel ("[kernel]") is not listed.
    std::map<std::string, uint64_t, std::less<>> module_starts() const;

  private:
    // 16 bytes a symbol: /proc/kallsyms has 100k-250k of them and this lives as long as the
    // daemon. Names sit in one arena.
    struct Entry {
        uint64_t start = 0;
        uint32_t name_offset = 0;
        uint16_t name_size = 0;  // 0: a boundary (data or end marker), not a symbol
        uint16_t module = 0;     // index into modules_
    };
    std::vector<Entry> entries_;  // sorted by start, one per address
    std::string names_;
    std::vector<std::string> modules_;  // "[kernel]", "[bpf]", "[ext4]", ...
    // Per module (index as modules_), its sections' starts, sorted. They end only that module's
    // own functions: a module's freed init code may lie inside another module loaded later.
    std::vector<std::vector<uint64_t>> section_starts_;
    size_t symbols_ = 0;
    uint64_t text_base_ = 0;  // the lowest text symbol's address

    std::string name_of(const Entry& e) const;
    friend class KallsymsBuilder;
};

}  // namespace leakwatch
