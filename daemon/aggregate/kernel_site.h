// Which kernel frames belong to the allocators, and so which frame is a kernel stack's `site`.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "symbols/symbolizer.h"

namespace leakwatch {

// True for kernel allocator internals: the kmalloc family, kmem_cache_alloc*, slab internals,
// the page allocator (and vmalloc on top of it), percpu, and the tracepoint plumbing (including
// the JIT-compiled BPF program, bpf_prog_<tag>_<name>) that sits on top of a captured stack.
// Names are matched as 5.10 to 6.18 spell them: compiler suffixes (".constprop.0", ".isra.0",
// ".part.0", ".cold") are dropped first, then 6.10+'s "_noprof" suffix.
bool is_kernel_allocator_frame(std::string_view symbol);

// The caller the allocation is charged to: the first frame, from the first allocator function
// proper (not plumbing) on, that is not an allocator internal. Frames above that function are
// what it called, whatever their names, symbolized or not. Its symbol; "[unknown]" when there is
// none or it has no symbol (a kernel address in a label would give the KASLR offset away).
std::string kernel_site_of(const std::vector<Frame>& frames);

// True when a page allocation's stack shows the page backs slab objects or a large kmalloc
// (allocate_slab, new_slab, alloc_slab_page, kmalloc_large*, kmalloc_order*, ...): such pages
// are already counted as kmalloc/kmem_cache objects and must not be counted again as pages.
bool backs_slab_or_kmalloc(const std::vector<Frame>& frames);

}  // namespace leakwatch
