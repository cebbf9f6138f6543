// Which frames belong to the allocator, and so which frame is a stack's `site`.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "symbols/symbolizer.h"

namespace leakwatch {

// True for the allocator's own functions and wrappers that only allocate on behalf of
// their caller (strdup, operator new, std::allocator), with an optional symbol prefix
// (e.g. "je_" for a prefixed jemalloc).
bool is_allocator_frame(std::string_view symbol, std::string_view prefix = {});

// How many of a stack's innermost frames are the allocator's (see is_allocator_frame): a heap
// profile's samples begin after them, at the function that allocated.
size_t allocator_frames(const std::vector<Frame>& frames, std::string_view prefix = {});

// A demangled function name without its parameter list and qualifiers, for a label:
// "Session::open(int) const" -> "Session::open", "Foo::operator()(int)" -> "Foo::operator()".
std::string function_name(std::string_view symbol);

// The first frame outside the allocator: its function name (see function_name), or
// module+offset when it has no symbol. With a Python function named by the interpreter's perf
// map ("py::name:file"), the innermost of those.
// "[unknown]" when the stack has no frame outside the allocator.
std::string site_of(const std::vector<Frame>& frames, std::string_view prefix = {});

// The site of a stack with Python frames (module "[python]"): the innermost Python function,
// past the allocator and the native frames of the interpreter (module `interpreter`), the C
// library and unnamed code; a named C function of another module met before it (a C extension
// that allocates) is the site instead.
std::string python_site_of(const std::vector<Frame>& frames, std::string_view interpreter,
                           std::string_view prefix = {});

// True for the C library's functions that write memory on their caller's behalf (memset,
// memcpy, memmove and their per-CPU variants such as __memset_avx2_unaligned_erms, bzero, the
// string copies): a first touch of new memory inside them belongs to their caller.
bool is_memory_writer_frame(std::string_view symbol);

// The site of a stack that first touched memory (the watch tier): the first frame outside the
// allocator and the memory writers, like site_of.
std::string touch_site_of(const std::vector<Frame>& frames, std::string_view prefix = {});

// How many of a first touch's innermost frames come before its site's (the allocator, the
// memory writers): a growth profile's samples begin at the site, as a heap profile's do after
// allocator_frames. 0 when the stack has no site.
size_t touch_frames(const std::vector<Frame>& frames, std::string_view prefix = {});

}  // namespace leakwatch
