// Sites: the first frame of a stack outside the allocator, named for a label
// (aggregate/site.cpp).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "aggregate/site.h"

using namespace leakwatch;

namespace {

Frame frame_named(const std::string& symbol) {
    Frame f;
    f.symbol = symbol;
    f.module = "/usr/lib/libfixture.so";
    return f;
}

}  // namespace

TEST_CASE("is_allocator_frame knows libc, C++ and prefixed allocator functions",
          "[aggregate][site]") {
    for (const char* name :
         {"malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc", "mmap",
          "munmap", "strdup", "__libc_malloc", "mallocx", "rallocx", "dallocx", "sdallocx",
          "operator new(unsigned long)", "operator new[](unsigned long)",
          "operator new(unsigned long, std::align_val_t)",
          "std::allocator<int>::allocate(unsigned long)",
          "std::__new_allocator<Foo>::allocate(unsigned long, void const*)",
          "__gnu_cxx::new_allocator<char>::allocate(unsigned long, void const*)",
          "std::allocator_traits<std::allocator<int> >::allocate(std::allocator<int>&, "
          "unsigned long)",
          // HotSpot's C heap and Java's direct buffers (names from the JVM's perf map)
          "os::malloc(unsigned long, MEMFLAGS)", "Unsafe_AllocateMemory0",
          "AllocateHeap(unsigned long, MEMFLAGS, AllocFailStrategy::AllocFailEnum)",
          "jdk.internal.misc.Unsafe.allocateMemory(long)", "java.nio.DirectByteBuffer.<init>(int)",
          "java.nio.ByteBuffer.allocateDirect(int)",
          // CPython
          "_PyObject_Malloc", "PyObject_Realloc", "PyMem_RawMalloc", "_PyMem_RawRealloc",
          "PyMem_Calloc"}) {
        INFO(name);
        CHECK(is_allocator_frame(name));
    }
    for (const char* name : {"", "leak_fn", "main", "Foo::bar", "mallocate", "my_malloc",
                             "os::malloc_info()", "LeakDirect.leakBuffer(int)", "Interpreter",
                             "std::vector<int, std::allocator<int> >::push_back(int const&)"}) {
        INFO(name);
        CHECK_FALSE(is_allocator_frame(name));
    }
    CHECK_FALSE(is_allocator_frame("je_malloc"));
    CHECK(is_allocator_frame("je_malloc", "je_"));
    CHECK(is_allocator_frame("je_calloc", "je_"));
    CHECK(is_allocator_frame("malloc", "je_"));
    CHECK_FALSE(is_allocator_frame("je_leak_fn", "je_"));
}

TEST_CASE("site_of: the innermost Python function named by the perf map", "[aggregate][site]") {
    CHECK(site_of({frame_named("malloc"), frame_named("_PyObject_Malloc"),
                   frame_named("PyByteArray_Resize"), frame_named("_PyEval_EvalFrameDefault"),
                   frame_named("py::leak_buffers:/srv/app.py"),
                   frame_named("_PyEval_EvalFrameDefault"), frame_named("py::main:/srv/app.py")}) ==
          "py::leak_buffers:/srv/app.py");
    // Without the perf map, the interpreter's own C function.
    CHECK(site_of({frame_named("malloc"), frame_named("_PyObject_Malloc"),
                   frame_named("PyByteArray_Resize"), frame_named("_PyEval_EvalFrameDefault")}) ==
          "PyByteArray_Resize");
}

TEST_CASE("site_of is the first frame outside the allocator", "[aggregate][site]") {
    CHECK(site_of({frame_named("malloc"), frame_named("leak_fn"), frame_named("main")}) ==
          "leak_fn");
    CHECK(site_of({frame_named("operator new(unsigned long)"),
                   frame_named("std::allocator<int>::allocate(unsigned long)"),
                   frame_named("Foo::bar")}) == "Foo::bar");
    CHECK(site_of({frame_named("je_malloc"), frame_named("leak_fn")}, "je_") == "leak_fn");
    CHECK(site_of({frame_named("je_malloc"), frame_named("leak_fn")}) == "je_malloc");
    CHECK(site_of({}) == "[unknown]");
    CHECK(site_of({frame_named("malloc"), frame_named("operator new(unsigned long)")}) ==
          "[unknown]");

    // No symbol: module (file name only) + offset.
    Frame anonymous;
    anonymous.module = "/usr/lib/x86_64-linux-gnu/libfoo.so.1";
    anonymous.module_offset = 0x1234;
    CHECK(site_of({frame_named("malloc"), anonymous, frame_named("main")}) == "libfoo.so.1+0x1234");
}

TEST_CASE("function_name drops parameter lists and qualifiers for site labels",
          "[aggregate][site]") {
    CHECK(function_name("record_entry") == "record_entry");
    CHECK(function_name("Session::open(int)") == "Session::open");
    CHECK(function_name("Session::open(int) const") == "Session::open");
    CHECK(function_name("Foo::operator()(int) const &") == "Foo::operator()");
    CHECK(function_name("std::vector<int, std::allocator<int> >::push_back(int const&)") ==
          "std::vector<int, std::allocator<int> >::push_back");
    CHECK(function_name("main::{lambda()#1}::operator()() const") ==
          "main::{lambda()#1}::operator()");
    CHECK(function_name("void (*)(int)") == "void (*)");
    CHECK(function_name("") == "");
    std::vector<Frame> frames(2);
    frames[0].symbol = "operator new(unsigned long)";
    frames[1].symbol = "Session::open(int)";
    CHECK(site_of(frames) == "Session::open");
}

TEST_CASE("allocator_frames counts the allocator's innermost frames", "[aggregate][site]") {
    CHECK(allocator_frames({frame_named("malloc"), frame_named("leak_fn"), frame_named("main")}) ==
          1);
    CHECK(allocator_frames({frame_named("operator new(unsigned long)"),
                            frame_named("std::allocator<int>::allocate(unsigned long)"),
                            frame_named("Foo::bar"), frame_named("malloc")}) == 2);
    CHECK(allocator_frames({frame_named("je_malloc"), frame_named("leak_fn")}, "je_") == 1);
    CHECK(allocator_frames({frame_named("leak_fn")}) == 0);
    CHECK(allocator_frames({}) == 0);
}

TEST_CASE("touch_site_of: past the allocator, its unnamed internals and the memory writers",
          "[aggregate][site][watch]") {
    Frame internal;  // a stripped libc's _int_malloc
    internal.module = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    internal.module_offset = 0x98109;
    std::vector<Frame> in_malloc = {internal, frame_named("malloc"), frame_named("churn_buffers"),
                                    frame_named("main")};
    CHECK(touch_site_of(in_malloc) == "churn_buffers");
    CHECK(site_of(in_malloc) == "churn_buffers");
    std::vector<Frame> in_memset = {frame_named("__memset_avx2_unaligned_erms"),
                                    frame_named("leak_record_entry"), frame_named("main")};
    CHECK(touch_site_of(in_memset) == "leak_record_entry");
    CHECK(site_of(in_memset) == "__memset_avx2_unaligned_erms");  // as an allocation site
    CHECK(is_memory_writer_frame("memcpy"));
    CHECK(is_memory_writer_frame("__memmove_avx_unaligned_erms"));
    CHECK_FALSE(is_memory_writer_frame("memory_pool_grow"));  // a name that only looks alike
    // A stripped libc names none of its memset variants: any C library frame writes for its
    // caller.
    std::vector<Frame> unnamed_memset = {internal, frame_named("leak_steady_growth")};
    CHECK(touch_site_of(unnamed_memset) == "leak_steady_growth");
    // Outside the C library, an unnamed first frame is the code that touched.
    Frame own = internal;
    own.module = "/usr/bin/app";
    std::vector<Frame> app = {own, frame_named("main")};
    CHECK(touch_site_of(app) == own.display());
    // A growth profile's samples begin at that frame.
    CHECK(touch_frames(in_malloc) == 2);
    CHECK(touch_frames(in_memset) == 1);
    CHECK(touch_frames(unnamed_memset) == 1);
    CHECK(touch_frames(app) == 0);
    CHECK(touch_frames({internal}) == 0);  // no site: the whole stack
}

TEST_CASE("python_site_of: the innermost Python function past the interpreter, or a C extension",
          "[aggregate][site]") {
    auto in = [](const std::string& symbol, const std::string& module) {
        Frame f;
        f.symbol = symbol;
        f.module = module;
        return f;
    };
    const std::string python = "/usr/bin/python3.11";
    // Interpreted code allocating: the interpreter's C functions (named or not) are passed.
    std::vector<Frame> interpreted = {in("malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
                                      in("", python), in("PyByteArray_Resize", python),
                                      in("leak_buffers", "[python]"), in("main", "[python]")};
    CHECK(python_site_of(interpreted, python) == "leak_buffers");
    // A C extension's own function allocating: it is the site; its Python caller follows.
    std::vector<Frame> extension = {in("malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
                                    in("extleak_alloc_block(unsigned long)", "/x/extleak.so"),
                                    in("cfunction_call", python), in("caller", "[python]")};
    CHECK(python_site_of(extension, python) == "extleak_alloc_block");
    // A Python frame that could not be named: the next named one.
    std::vector<Frame> unnamed = {in("malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
                                  in("", "[python]"), in("outer", "[python]")};
    CHECK(python_site_of(unnamed, python) == "outer");
}
