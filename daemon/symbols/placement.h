// Where to put an entry-only probe (free, munmap): past instructions the kernel would have to
// single-step, when doing so cannot change what the probe sees.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace leakwatch {

// Bytes to skip at a function's entry when it starts with x86-64 `test %rdi,%rdi` and a `je`
// (glibc's free: `if (p == NULL) return;`). The kernel single-steps `test` out of line, which
// costs about 9 us per call here, while it emulates the instruction after the `je`; %rdi is
// unchanged there, and a NULL argument, which the probe ignores anyway, jumps past it.
// 0 when the code does not start that way (or on other architectures).
uint64_t null_check_prefix(std::span<const uint8_t> code);

// The file offset for an entry-only probe of the function at `offset` in `path`: past its
// NULL check when it has one, else `offset` itself.
uint64_t entry_only_probe_offset(const std::string& path, uint64_t offset);

}  // namespace leakwatch
