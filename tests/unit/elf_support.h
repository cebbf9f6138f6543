// What the symbols tests share (test_symbolizer.cpp, test_debuginfo.cpp): real ELF files to
// read, functions of this test binary with known names, and the independent sources the
// expected values come from (the dynamic linker, binutils, the bytes in memory).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proc/proc.h"
#include "symbols/symbolizer.h"

// Functions with distinctive names whose addresses the tests symbolize.
extern "C" int leakwatch_test_marker_fn(int x);
namespace leakwatch_test {
struct Widget {
    int value;
    static Widget* make(int value);
};
}  // namespace leakwatch_test

namespace elf_support {

namespace fs = std::filesystem;

uint64_t addr_of(const void* p);
// The standard output of a shell command.
std::string run(const std::string& cmd);
// Runs a shell command, its output appended to `log`; true when it succeeded.
bool sh(const std::string& cmd, const fs::path& log);
std::string self_path();
std::vector<leakwatch::MapEntry> self_maps();

// A library as the dynamic linker loaded it: its path and load bias (ELF vaddr + l_addr =
// address).
struct Loaded {
    void* handle = nullptr;
    std::string path;
    uint64_t bias = 0;
    uint64_t address(const char* name) const;
};
Loaded loaded(const std::string& name);
const Loaded& libc();

// Defined default-version function symbols per `nm -D`: raw name -> vaddr.
std::map<std::string, uint64_t> nm_dynamic_functions(const std::string& path);
struct Load {
    uint64_t offset, vaddr, filesz;
};
// PT_LOAD segments per `readelf -lW`.
std::vector<Load> readelf_loads(const std::string& path);
std::string readelf_build_id(const std::string& path);
std::vector<unsigned char> file_bytes(const std::string& path, uint64_t offset, size_t n);
bool memory_equals(uint64_t address, const std::vector<unsigned char>& bytes);

// A private temporary directory, removed when the tests end.
struct TempDir {
    fs::path path;
    TempDir();
    ~TempDir();
};
TempDir& temp_dir();

// tests/fixtures/elf/fixture.cpp built three ways: with a fixed build-id, the same stripped
// to .dynsym only, and without a build-id.
struct FixtureLibs {
    std::string lib, stripped, no_build_id;
};
const FixtureLibs& fixture_libs();

std::shared_ptr<const leakwatch::ElfFile> open_elf(const std::string& path);
// A mapping of `path` at 0x10000, file offset 0.
leakwatch::MapEntry file_mapping(const std::string& path, uint64_t inode = 0);
// Moves the value of every dynamic symbol `name` of an ELF64 file by `delta` bytes, in place
// (a fake of a library that claims its build-id); false when there is none.
bool move_dynamic_symbol(const std::string& path, const std::string& name, int64_t delta);

}  // namespace elf_support
