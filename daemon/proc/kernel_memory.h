// The kernel's own accounting of its memory, for kernel tracking's watch tier (kernel.tracking:
// escalate): each slab cache's objects in use (/proc/slabinfo, root only) and the kinds
// /proc/meminfo counts.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace leakwatch {

struct SlabCache {
    std::string name;  // "kmalloc-1k", "dentry"
    uint64_t active_objects = 0;
    uint64_t object_size = 0;
    uint64_t bytes() const { return active_objects * object_size; }
};

struct KernelMemory {
    std::vector<SlabCache> caches;
    uint64_t percpu = 0;   // Percpu
    uint64_t vmalloc = 0;  // VmallocUsed
    // Pages the kernel holds outside the page cache, user memory, slab, stacks, page tables
    // and percpu: an estimate of what it allocated page by page (MemTotal - MemFree - Buffers
    // - Cached - AnonPages - Slab - KernelStack - PageTables - Percpu), floored at 0.
    uint64_t pages = 0;
};

// Parses /proc/slabinfo (version 2.1); lines that do not parse are skipped.
std::vector<SlabCache> parse_slabinfo(std::string_view text);
// Fills the /proc/meminfo figures of `out` (caches untouched).
void parse_meminfo(std::string_view text, KernelMemory& out);
// Reads both under `proc_root` (e.g. /proc).
Result<KernelMemory> read_kernel_memory(const std::string& proc_root);

}  // namespace leakwatch
