// The call frame information (CFI: .eh_frame, else .debug_frame) of one ELF file, read with
// elfutils libdw's CFI interpreter: the rule that finds a caller's frame at any address, in
// the form the BPF walker applies (bpf/leakwatch.h, struct lw_unwind_rule), and how the
// file's functions use the frame pointer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "proc/files.h"
#include "util/result.h"

namespace leakwatch {

// How to find the caller's frame from a frame (mirrors struct lw_unwind_rule): its stack
// pointer is the CFA, its return address is at CFA - 8, its rbp at CFA + bp_offset when
// bp_saved, else unchanged.
struct UnwindRule {
    // LW_UW_*; and kPending, the daemon's own: the file's CFI is still being read, so no rule
    // is known yet (none is stored: a walk that needs it sends its snapshot again).
    // kJavaInterp: a HotSpot interpreter frame (LW_UW_JAVA_INTERP): walked from its rbp, and
    // recorded as the Method* it runs.
    enum Kind : uint32_t { kCfaSp = 1, kCfaBp = 2, kEnd = 3, kJavaInterp = 4, kPending = 0xff };
    Kind kind = kEnd;
    int32_t cfa_offset = 0;
    int32_t bp_offset = 0;
    bool bp_saved = false;
    bool operator==(const UnwindRule&) const = default;

    static UnwindRule end() { return {}; }
    // Code with a frame pointer and no CFI (JIT-compiled code): push %rbp; mov %rsp,%rbp.
    static UnwindRule frame_pointer() { return {kCfaBp, 16, -16, true}; }
    static UnwindRule pending() { return {kPending, 0, 0, false}; }
    static UnwindRule java_interpreter() { return {kJavaInterp, 16, -16, true}; }
};

// How the functions of one file use the frame pointer, by the CFI in the middle of each
// function (each entry of .eh_frame_hdr's table): a standard frame record there (CFA =
// rbp + 16, the caller's rbp saved at CFA - 16) means a caller's frame can be found from
// rbp alone. Virtual addresses are the file's (ELF) ones.
struct FramePointerUse {
    size_t functions = 0;           // functions looked at
    size_t with_frame_pointer = 0;  // of them, with a standard frame record mid-function
    // The others, adjacent ones merged: [start, end) ELF virtual addresses.
    std::vector<std::pair<uint64_t, uint64_t>> without;
    // Whether the file's frames may be walked by the frame pointer, with `without` walked by
    // rules: some functions keep one, and the others fit in `max_without` ranges (in a file
    // built without frame pointers, the few functions that set one up anyway are scattered,
    // and the ranges between them are many).
    bool walkable(size_t max_without) const {
        return with_frame_pointer > 0 && without.size() <= max_without;
    }
};

// The CFI of one ELF file (.eh_frame, else .debug_frame), opened once.
class CfiFile {
  public:
    // Reads the unwind tables of an open file into memory (the file may be closed after).
    static Result<std::unique_ptr<CfiFile>> open(const OpenFile& file);
    // The same for a path of the daemon's own (tests), within `max_bytes`.
    static Result<std::unique_ptr<CfiFile>> open(const std::string& path,
                                                 uint64_t max_bytes = 512ull << 20);
    ~CfiFile();
    CfiFile(const CfiFile&) = delete;
    CfiFile& operator=(const CfiFile&) = delete;

    // The rule in effect at an ELF virtual address. nullopt: no CFI covers it. kEnd: the CFI
    // marks the outermost frame (return address undefined), or uses a form the BPF side does
    // not apply (a CFA expression, a register other than rsp/rbp).
    std::optional<UnwindRule> rule_at(uint64_t vaddr);
    // The ELF virtual address that file offset `off` is loaded at (via PT_LOAD), if any.
    std::optional<uint64_t> vaddr_of_file_offset(uint64_t off) const;
    // How its functions use the frame pointer (empty without an .eh_frame_hdr table in the
    // usual encoding: then nothing is walked by the frame pointer).
    FramePointerUse frame_pointer_use();
    // The start of the function (the first address of its FDE, from .eh_frame_hdr) at or
    // before an ELF virtual address: where its instructions are decoded from.
    std::optional<uint64_t> function_start(uint64_t vaddr);

  private:
    CfiFile() = default;
    const std::vector<uint64_t>& function_starts();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace leakwatch
