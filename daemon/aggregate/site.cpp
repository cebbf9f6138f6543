#include "aggregate/site.h"

#include <array>

namespace leakwatch {

namespace {

constexpr std::array<std::string_view, 40> kAllocatorNames = {
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "free",
    "cfree",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "mmap",
    "mmap64",
    "munmap",
    "mremap",
    "__libc_malloc",
    "__libc_calloc",
    "__libc_realloc",
    "__libc_free",
    "__libc_memalign",
    "__libc_valloc",
    "__libc_pvalloc",
    "__posix_memalign",
    "__mmap",
    "__mmap64",
    "__munmap",
    "__mremap",
    "strdup",
    "strndup",
    "__strdup",
    "__strndup",
    "wcsdup",
    "__libc_reallocarray",
    "__reallocarray",
    // jemalloc's own API
    "mallocx",
    "rallocx",
    "xallocx",
    "dallocx",
    "sdallocx",
    "nallocx",
};

constexpr std::array<std::string_view, 24> kAllocatorPrefixes = {
    "operator new",
    "operator delete",
    "std::allocator<",
    "std::allocator_traits<",
    "__gnu_cxx::new_allocator<",
    "std::__new_allocator<",
    "__gnu_cxx::__alloc_traits<",
    // HotSpot's C heap (libjvm) and its native-memory entry for Java code
    "os::malloc(",
    "os::realloc(",
    "AllocateHeap(",
    "Unsafe_AllocateMemory0",
    "Unsafe_ReallocateMemory0",
    // Java's own direct-memory allocation, named through the JVM's perf map
    "jdk.internal.misc.Unsafe.allocateMemory",
    "java.nio.DirectByteBuffer.<init>(",
    "java.nio.ByteBuffer.allocateDirect(",
    // CPython's allocators (pymalloc, the PyMem and PyObject families)
    "_PyObject_Malloc",
    "_PyObject_Calloc",
    "_PyObject_Realloc",
    "PyObject_Malloc",
    "PyObject_Calloc",
    "PyObject_Realloc",
    "_PyMem_Raw",
    "PyMem_",
    "_PyMem_",
};

}  // namespace

bool is_allocator_frame(std::string_view symbol, std::string_view prefix) {
    if (symbol.empty()) return false;
    if (!prefix.empty() && symbol.substr(0, prefix.size()) == prefix)
        symbol.remove_prefix(prefix.size());
    for (auto name : kAllocatorNames)
        if (symbol == name) return true;
    for (auto p : kAllocatorPrefixes)
        if (symbol.substr(0, p.size()) == p) return true;
    return false;
}

size_t allocator_frames(const std::vector<Frame>& frames, std::string_view prefix) {
    size_t n = 0;
    while (n < frames.size() && is_allocator_frame(frames[n].symbol, prefix)) n++;
    return n;
}

std::string function_name(std::string_view s) {
    for (;;) {  // trailing qualifiers of member functions
        bool stripped = false;
        for (std::string_view q : {" const", " volatile", " &&", " &", " noexcept"}) {
            if (s.size() > q.size() && s.substr(s.size() - q.size()) == q) {
                s.remove_suffix(q.size());
                stripped = true;
            }
        }
        if (!stripped) break;
    }
    if (s.empty() || s.back() != ')') return std::string(s);
    int depth = 0;
    for (size_t i = s.size(); i-- > 0;) {
        if (s[i] == ')') depth++;
        if (s[i] == '(' && --depth == 0)
            return i > 0 ? std::string(s.substr(0, i)) : std::string(s);
    }
    return std::string(s);
}

bool is_memory_writer_frame(std::string_view symbol) {
    while (symbol.starts_with('_')) symbol.remove_prefix(1);
    if (symbol.starts_with("GI_")) symbol.remove_prefix(3);
    for (std::string_view name : {"memset", "memcpy", "memmove", "mempcpy", "wmemset", "bzero",
                                  "strcpy", "strncpy", "stpcpy", "stpncpy"})
        if (symbol.starts_with(name)) return true;
    return false;
}

namespace {

// The C library (glibc's libc.so.6 or libc-2.x.so, musl's libc.so), whose functions write
// memory for their caller.
bool in_c_library(const Frame& f) {
    std::string_view m = f.module.str();
    m = m.substr(m.rfind('/') == std::string_view::npos ? 0 : m.rfind('/') + 1);
    return m.starts_with("libc.so") || m.starts_with("libc-");
}

// The index of the site's frame, frames.size() when there is none.
size_t first_caller_index(const std::vector<Frame>& frames, std::string_view prefix,
                          bool past_memory_writers) {
    // Interpreted Python (3.12+ with -X perf): the innermost Python function, named by the
    // interpreter's perf map, is the site; the C frames between it and the allocator are the
    // interpreter running it.
    for (size_t i = 0; i < frames.size(); i++)
        if (frames[i].symbol.starts_with("py::")) return i;
    // A first touch inside the C library (memset, memcpy, its allocator's internals: named or
    // not, a stripped libc names none of them) belongs to its caller.
    auto inside = [&](const Frame& f) {
        return is_allocator_frame(f.symbol, prefix) ||
               (past_memory_writers && (is_memory_writer_frame(f.symbol) || in_c_library(f)));
    };
    // Frames without a name below an allocator's own frame are its internals (a stripped
    // libc's _int_malloc, where a first touch of its heap happens): the site is past them.
    size_t start = 0;
    for (size_t i = 0; i < frames.size(); i++) {
        if (is_allocator_frame(frames[i].symbol, prefix))
            start = i + 1;
        else if (!frames[i].symbol.empty() && !inside(frames[i]))
            break;
    }
    for (size_t i = start; i < frames.size(); i++)
        if (!inside(frames[i])) return i;
    return frames.size();
}

std::string first_caller(const std::vector<Frame>& frames, std::string_view prefix,
                         bool past_memory_writers) {
    const size_t i = first_caller_index(frames, prefix, past_memory_writers);
    if (i == frames.size()) return "[unknown]";
    const Frame& f = frames[i];
    if (f.symbol.starts_with("py::")) return f.symbol;
    if (!f.symbol.empty()) return function_name(f.symbol);
    return f.display();
}

}  // namespace

std::string touch_site_of(const std::vector<Frame>& frames, std::string_view prefix) {
    return first_caller(frames, prefix, true);
}

size_t touch_frames(const std::vector<Frame>& frames, std::string_view prefix) {
    const size_t i = first_caller_index(frames, prefix, true);
    return i == frames.size() ? 0 : i;
}

std::string site_of(const std::vector<Frame>& frames, std::string_view prefix) {
    return first_caller(frames, prefix, false);
}

std::string python_site_of(const std::vector<Frame>& frames, std::string_view interpreter,
                           std::string_view prefix) {
    for (size_t i = allocator_frames(frames, prefix); i < frames.size(); i++) {
        const Frame& f = frames[i];
        if (f.module == "[python]") {
            if (!f.symbol.empty()) return f.symbol;
            continue;
        }
        if (f.symbol.empty() || in_c_library(f) ||
            (!interpreter.empty() && f.module == interpreter))
            continue;
        return function_name(f.symbol);
    }
    return site_of(frames, prefix);
}

}  // namespace leakwatch
