#include "aggregate/kernel_site.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace leakwatch {

namespace {

// Matched against the base name (see base_name). A prefix stands for "name*".
constexpr std::array<std::string_view, 38> kAllocatorPrefixes = {
    // kmalloc family; 5.10/6.1 spell kmalloc_order_trace, kmem_cache_alloc_trace,
    // __kmalloc_track_caller, 6.1 __do_kmalloc_node, 6.18 ___kmalloc_large_node.
    "kmalloc",
    "__kmalloc",
    "___kmalloc",
    "__do_kmalloc",
    "kzalloc",
    "kcalloc",
    "kvmalloc",
    "__kvmalloc",
    "kvzalloc",
    "kvcalloc",
    "kvrealloc",
    "krealloc",
    "kmemdup",
    "kstrdup",
    "kstrndup",
    "kmem_cache_alloc",
    "__kmem_cache_alloc",
    "kmem_cache_zalloc",
    // slab internals
    "slab_alloc",
    "__slab_alloc",
    "___slab_alloc",
    // page allocator; 5.10 has __alloc_pages_nodemask, alloc_pages_current, alloc_pages_vma,
    // 6.18 alloc_pages_mpol, __alloc_frozen_pages, get_free_pages, vma_alloc_folio.
    "__alloc_pages",
    "alloc_pages",
    "__alloc_frozen_pages",
    "alloc_frozen_pages",
    "get_zeroed_page",
    "__get_free_pages",
    "get_free_pages",
    "__folio_alloc",
    "vma_alloc_folio",
    "rmqueue",
    // vmalloc (and kvmalloc's fallback to it) only hands pages to its caller.
    "vmalloc",
    "__vmalloc",
    "vzalloc",
    // percpu
    "pcpu_alloc",
    "__alloc_percpu",
    "alloc_percpu",
    "__alloc_reserved_percpu",
};

// Tracepoint plumbing between the allocator and the BPF program (perf_trace_* when it is
// attached as a perf tracepoint rather than a raw one).
constexpr std::array<std::string_view, 5> kPlumbingPrefixes = {
    "trace_", "perf_trace_", "__traceiter_", "__bpf_trace_", "bpf_trace_run",
};

constexpr std::array<std::string_view, 14> kAllocatorNames = {
    "allocate_slab",
    "new_slab",
    "alloc_slab_page",
    "slab_pre_alloc_hook",
    "slab_post_alloc_hook",
    "memcg_slab_post_alloc_hook",
    "__memcg_slab_post_alloc_hook",
    // memcg's per-slab vector, kmalloc-ed while a new slab is set up (seen on 6.18)
    "alloc_slab_obj_exts",
    "kmem_cache_prefill_sheaf",
    "get_page_from_freelist",
    "prep_new_page",
    "post_alloc_hook",
    // Not "folio_alloc*": folio_alloc_buffers and folio_alloc_swap allocate no folio.
    "folio_alloc",
    "folio_alloc_mpol",
};

// Page allocations on these paths back slab objects or large kmallocs. kmem_getpages and
// cache_grow_begin are SLAB's (5.10), slob_new_pages SLOB's.
constexpr std::array<std::string_view, 6> kSlabPageNames = {
    "allocate_slab", "new_slab",         "alloc_slab_page",
    "kmem_getpages", "cache_grow_begin", "slob_new_pages",
};
constexpr std::array<std::string_view, 4> kKmallocPagePrefixes = {
    "kmalloc_large",
    "__kmalloc_large",
    "___kmalloc_large",
    "kmalloc_order",
};

constexpr std::string_view kNoprofSuffix = "_noprof";

// "__kmalloc_cache_noprof" -> "__kmalloc_cache", "___slab_alloc.constprop.0" -> "___slab_alloc".
// Kernel identifiers have no dots, so a dot starts a compiler suffix (.constprop.N, .isra.N,
// .part.N, .cold, .llvm.N).
std::string_view base_name(std::string_view symbol) {
    if (size_t dot = symbol.find('.'); dot != std::string_view::npos)
        symbol = symbol.substr(0, dot);
    if (symbol.ends_with(kNoprofSuffix)) symbol.remove_suffix(kNoprofSuffix.size());
    return symbol;
}

// A JIT-compiled BPF program: "bpf_prog_" + 16 hex digits of its tag + optional "_" + name.
// Kernel functions named bpf_prog_* (bpf_prog_alloc, bpf_prog_load) are not this.
bool is_bpf_program(std::string_view name) {
    constexpr std::string_view kPrefix = "bpf_prog_";
    constexpr size_t kTagSize = 16;
    if (!name.starts_with(kPrefix)) return false;
    name.remove_prefix(kPrefix.size());
    if (name.size() < kTagSize) return false;
    for (size_t i = 0; i < kTagSize; ++i)
        if (!std::isxdigit(static_cast<unsigned char>(name[i]))) return false;
    return name.size() == kTagSize || name[kTagSize] == '_';
}

template <size_t N>
bool has_prefix_in(std::string_view name, const std::array<std::string_view, N>& prefixes) {
    return std::any_of(prefixes.begin(), prefixes.end(),
                       [&](std::string_view p) { return name.starts_with(p); });
}

template <size_t N>
bool is_in(std::string_view name, const std::array<std::string_view, N>& names) {
    return std::find(names.begin(), names.end(), name) != names.end();
}

bool is_allocator(std::string_view name) {
    return is_in(name, kAllocatorNames) || has_prefix_in(name, kAllocatorPrefixes);
}

bool is_plumbing(std::string_view name) {
    return has_prefix_in(name, kPlumbingPrefixes) || is_bpf_program(name);
}

}  // namespace

bool is_kernel_allocator_frame(std::string_view symbol) {
    std::string_view name = base_name(symbol);
    return !name.empty() && (is_allocator(name) || is_plumbing(name));
}

std::string kernel_site_of(const std::vector<Frame>& frames) {
    // A BPF program captures the stack inside the tracepoint, so the top frames are the program
    // and its plumbing. They may be unsymbolized (a program loaded after kallsyms was read) or
    // renamed in a newer kernel, so start at the first allocator function proper: whatever is
    // above it, it called.
    auto it = std::find_if(frames.begin(), frames.end(), [](const Frame& f) {
        std::string_view name = base_name(f.symbol);
        return !name.empty() && is_allocator(name);
    });
    if (it == frames.end()) it = frames.begin();
    it = std::find_if_not(it, frames.end(),
                          [](const Frame& f) { return is_kernel_allocator_frame(f.symbol); });
    if (it == frames.end() || it->symbol.empty()) return "[unknown]";
    return it->symbol;
}

bool backs_slab_or_kmalloc(const std::vector<Frame>& frames) {
    return std::any_of(frames.begin(), frames.end(), [](const Frame& f) {
        std::string_view name = base_name(f.symbol);
        return is_in(name, kSlabPageNames) || has_prefix_in(name, kKmallocPagePrefixes);
    });
}

}  // namespace leakwatch
