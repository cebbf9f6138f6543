// Where to put an allocator function's uprobe: on the first instruction the kernel emulates,
// when the instructions before it cannot change what the probe reads.
//
// A uprobe replaces one instruction with a breakpoint. When it fires, the kernel runs the BPF
// program and then has to execute the displaced instruction: a few kinds (push of a register,
// jumps, calls, conditional jumps, nop) it emulates in a few dozen nanoseconds; every other one
// it copies to a page of the process and single-steps there, which costs two more traps (about
// 9 us a call on a 2-vCPU VM, against 0.7 us). Functions that start with a compare, a test or a
// register move (glibc's free, mmap, memalign, valloc, posix_memalign) can be probed a few
// bytes in instead, on the first emulated instruction, as long as
//   - nothing skipped writes an argument register the probe reads (the first `arguments`
//     of %rdi, %rsi, %rdx, %rcx, %r8, %r9) or memory,
//   - nothing skipped moves the stack pointer (a return probe takes the return address at
//     [%rsp], and the BPF side compares stack pointers to see nested calls),
//   - nothing skipped branches, so every call passes the probe: the one exception is a leading
//     `test %rdi,%rdi; je` in a function for which a NULL first argument does nothing (free).
// Only x86-64 is decoded (with Capstone); elsewhere, and for any instruction not decoded, the
// probe stays on the first instruction.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "proc/files.h"

namespace leakwatch {

struct Placement {
    uint64_t skip = 0;      // bytes past the function's first instruction
    bool emulated = false;  // the probed instruction is one the kernel emulates
    std::string how;        // what was decoded, for the log
};

// Decodes the first instructions of a function whose probe reads its first `arguments`
// integer arguments. `null_is_noop`: a NULL first argument makes the call do nothing, so a
// leading NULL check may be skipped.
Placement place_probe(std::span<const uint8_t> code, int arguments, bool null_is_noop);

// The same for the function at file offset `offset` of an open file (the probe stays at the
// entry if it cannot be read).
Placement place_probe_in_file(const OpenFile& file, uint64_t offset, int arguments,
                              bool null_is_noop);

// Whether an instruction starts `offset` bytes into `code`, decoded from its first byte (a
// function's start): a breakpoint there replaces a whole instruction, not part of one. False
// too when an instruction on the way cannot be decoded (it cannot be told). x86-64 is decoded;
// on arm64 every instruction is 4 bytes.
bool instruction_boundary(std::span<const uint8_t> code, uint64_t offset);

}  // namespace leakwatch
