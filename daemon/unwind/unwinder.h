// Stack unwinding through code built without frame pointers (x86-64), from the call frame
// information (.eh_frame) of the mapped files, read with elfutils libdw's CFI interpreter.
//
// The BPF side walks stacks with one rule per return address (bpf/leakwatch.h, struct
// lw_unwind_rule). When it meets an address without a rule it sends a snapshot of that frame's
// registers and the stack above it; the daemon unwinds the snapshot here, with the same steps,
// and hands back the rules it used (unwind/snapshots.h) so later walks through those frames
// stay in BPF.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "proc/proc.h"
#include "symbols/cfi.h"
#include "symbols/lru.h"
#include "symbols/symbolizer.h"
#include "util/result.h"

namespace leakwatch {

// Where a walk starts: a frame's return address and registers, and a copy of the stack from
// its stack pointer up.
struct UnwindStart {
    uint64_t ip = 0;  // a return address, or with exact_ip an instruction's own address
    uint64_t sp = 0;
    uint64_t bp = 0;
    std::span<const uint8_t> stack;  // memory at [sp, sp + stack.size())
    bool exact_ip = false;
};

struct UnwindStep {
    uint64_t pc = 0;  // a frame's return address
    UnwindRule rule;  // the rule found for it
    // With kJavaInterp: the Method* the interpreter frame runs (0 when it holds none).
    uint64_t java_method = 0;
};

// Walks from `start`: looks up each return address's rule and applies it, exactly as the BPF
// side does, until a rule ends the walk, memory outside the copy is needed, or max_frames.
// Returns every frame met, start.ip first, each with its rule.
std::vector<UnwindStep> unwind(const UnwindStart& start,
                               const std::function<UnwindRule(uint64_t pc)>& rule_for,
                               size_t max_frames);

// The rule at return address `ra` of a code blob without CFI (JIT-compiled code), from its
// instructions `code` (the blob from its start; ra is code-relative): decoded from the start
// up to ra, following pushes and stack adjustments, until a frame pointer is set up
// (push %rbp; mov %rsp,%rbp: the frame-pointer rule) or ra is reached (a CFA from rsp: e.g.
// CPython 3.12's perf trampoline, `sub $8,%rsp; call *%rcx`). nullopt when an instruction on
// the way moves rsp or rbp otherwise, or branches before a frame pointer is set up. x86-64.
std::optional<UnwindRule> rule_from_code(std::span<const uint8_t> code, uint64_t ra);

// The rule of a HotSpot compiled method (an nmethod, C1 or C2, or a native wrapper), from its
// prologue alone: a frame of a fixed size below the return address for the whole body, built by
// `push %rbp; [mov %rsp,%rbp;] sub $n,%rsp` after an optional inline-cache check (a compare and
// a conditional jump away) and stack bangs (stores below rsp). CFA = rsp + 8 + 8 + n, the
// caller's rbp at CFA - 16, as the JVM's own walk has it, with or without
// -XX:+PreserveFramePointer. `ra` (code-relative) must lie past the prologue. nullopt for any
// other shape. x86-64.
std::optional<UnwindRule> rule_from_hotspot_prologue(std::span<const uint8_t> code, uint64_t ra);
// Whether a perf map name is HotSpot's for a Java method ("void pkg.Class.m(int)"), not one of
// its stubs ("Interpreter", "StubRoutines (1)", "I2C/C2I adapters").
bool is_hotspot_method(std::string_view perf_map_name);

struct UnwindStats {
    uint64_t snapshots = 0;    // snapshots unwound
    uint64_t rules = 0;        // rules looked up in CFI
    uint64_t nanoseconds = 0;  // spent unwinding snapshots, CFI reading included
};

// Rules for the return addresses of processes, from the CFI of the files they map, with
// the files' CFI cached (bounded, least recently used out first). One thread unwinds;
// stats() may be read from any.
class Unwinder {
  public:
    // JIT code blobs are looked up in the symbolizer's perf maps.
    Unwinder(const ProcReader& proc, Symbolizer& symbolizer, size_t max_files = 128);

    // The rule for return address `pc` of process `pid` (its CFI at pc - 1, inside the call).
    // Addresses in anonymous executable memory (JIT-compiled code) get the frame-pointer
    // rule; addresses outside any executable mapping, or in a file without CFI there, end the
    // walk. While the file's CFI (or the perf map) is still being read, on the symbolizer's
    // loader: UnwindRule::pending().
    // With `exact`, pc is an instruction's own address (where a walk from a page fault
    // starts): its CFI at pc itself.
    UnwindRule rule_for(int pid, const std::vector<MapEntry>& maps, uint64_t pc,
                        bool exact = false);
    // Unwinds one snapshot of process `pid`.
    std::vector<UnwindStep> unwind_snapshot(int pid, const UnwindStart& start, size_t max_frames);
    UnwindStats stats() const { return {snapshots_.load(), rules_.load(), nanoseconds_.load()}; }

  private:
    // The CFI of a mapped file, nullptr when it has none (or cannot be read); `pending` while
    // it is being read.
    CfiFile* file_for(int pid, const MapEntry& mapping, bool& pending);
    UnwindRule jit_rule(int pid, uint64_t pc);

    // What loads hand back (they may outlive the unwinder): key -> the file read, or nullptr.
    struct Loaded {
        std::mutex mu;
        std::map<std::string, std::shared_ptr<CfiFile>> files;
        std::map<std::string, std::optional<UnwindRule>> jit_rules;  // from the JIT code read
    };

    ProcReader proc_;  // a copy: loads may outlive the caller's
    // by path + device + inode; nullptr: no CFI (or too slow to read)
    LruCache<std::string, std::shared_ptr<CfiFile>> files_;
    std::shared_ptr<Loaded> loaded_ = std::make_shared<Loaded>();
    // "pid:blob start:pc:perf map generation" -> the rule its code gives; nullopt: none
    LruCache<std::string, std::optional<UnwindRule>> jit_rules_{4096};
    Symbolizer& symbolizer_;  // where JIT code blobs start
    std::atomic<uint64_t> snapshots_{0}, rules_{0}, nanoseconds_{0};
};

}  // namespace leakwatch
