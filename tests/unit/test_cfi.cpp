// symbols/cfi.cpp: which files' frames may be walked by the frame pointer.
#include <dlfcn.h>

#include <catch2/catch.hpp>
#include <string>

#include "elf_support.h"
#include "symbols/cfi.h"

using namespace leakwatch;
using namespace elf_support;

namespace {

// tests/fixtures/elf/fixture.cpp as a shared object built with the given flags.
std::string fixture_built(const std::string& name, const std::string& flags) {
    const std::string src = std::string(LEAKWATCH_FIXTURES) + "/elf/fixture.cpp";
    const std::string map = std::string(LEAKWATCH_FIXTURES) + "/elf/fixture.map";
    const fs::path out = temp_dir().path / name;
    const fs::path log = temp_dir().path / "cfi-build.log";
    if (!fs::exists(out))
        REQUIRE(sh("c++ -shared -fPIC " + flags + " -Wl,--version-script='" + map + "' '" + src +
                       "' -o '" + out.string() + "'",
                   log));
    return out.string();
}

FramePointerUse use_of(const std::string& path) {
    auto cfi = CfiFile::open(path);
    INFO(path);
    REQUIRE(cfi.has_value());
    return (*cfi)->frame_pointer_use();
}

}  // namespace

TEST_CASE("a file built with frame pointers is walked by them, but for its few other functions",
          "[symbols][cfi]") {
    auto use = use_of(fixture_built("libfp.so", "-O2 -fno-omit-frame-pointer"));
    INFO(use.with_frame_pointer << " of " << use.functions << " functions keep one; "
                                << use.without.size() << " ranges without");
    // fixture_exported and Gadget::build; the leaf functions fixture_v1 and fixture_v2 (lea;
    // ret) need no frame and GCC gives them none, but a leaf is never a caller.
    CHECK(use.with_frame_pointer >= 2);
    CHECK(use.walkable(4));
    // What does not keep one (the PLT, the C runtime's own functions) is named by range, and
    // none of the fixture's functions is in it.
    auto lib = loaded(fixture_built("libfp.so", "-O2 -fno-omit-frame-pointer"));
    for (const char* name : {"fixture_exported", "_ZN10fixture_ns6Gadget5buildEPKc"}) {
        uint64_t vaddr = lib.address(name) - lib.bias;
        for (const auto& [lo, hi] : use.without) {
            INFO(name << " at " << vaddr);
            CHECK_FALSE((vaddr >= lo && vaddr < hi));
        }
    }
}

TEST_CASE("a file built without frame pointers, or libc, is walked by rules", "[symbols][cfi]") {
    auto nofp = use_of(fixture_built("libnofp.so", "-O2 -fomit-frame-pointer"));
    CHECK(nofp.with_frame_pointer == 0);
    CHECK_FALSE(nofp.walkable(4));
    // Debian's libc: a few functions set up rbp anyway (alloca), scattered among the rest.
    auto libc_use = use_of(libc().path);
    INFO(libc_use.with_frame_pointer << " of " << libc_use.functions);
    CHECK(libc_use.functions > 1000);
    CHECK(libc_use.with_frame_pointer * 10 < libc_use.functions);
    CHECK_FALSE(libc_use.walkable(4));
}
