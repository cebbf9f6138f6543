// Symbolizer tests on real ELF files: this (PIE) test binary, the system's libc as the dynamic
// linker loaded it, and a small shared object compiled from tests/fixtures/elf at run time.
// Expected values come from independent sources: the dynamic linker (dlsym/dlvsym/link_map),
// binutils (nm, readelf) and the bytes in memory.
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "elf_support.h"
#include "proc/proc.h"
#include "symbols/symbolizer.h"

using namespace leakwatch;
using namespace elf_support;

TEST_CASE("function_address agrees with the dynamic linker and nm on libc", "[symbols]") {
    const Loaded& c = libc();
    auto elf = open_elf(c.path);

    // End to end: where ld.so put malloc, minus libc's load bias, is malloc's ELF vaddr.
    const uint64_t malloc_vaddr = c.address("malloc") - c.bias;
    CHECK(elf->function_address("malloc") == malloc_vaddr);
    CHECK(elf->function_address("free") == c.address("free") - c.bias);
    // Aliases at one address are all attachable by name.
    auto nm = nm_dynamic_functions(c.path);
    if (nm.contains("__libc_malloc")) CHECK(elf->function_address("__libc_malloc") == malloc_vaddr);

    // Every default-version function nm lists, including memcpy whose default version
    // (memcpy@@GLIBC_2.14, an IFUNC) differs from its compatibility one (memcpy@GLIBC_2.2.5).
    REQUIRE(nm.size() > 500);
    REQUIRE(nm.contains("memcpy"));
    CHECK(elf->function_address("memcpy") == nm["memcpy"]);
    size_t mismatches = 0;
    for (const auto& [name, vaddr] : nm) {
        if (elf->function_address(name) != vaddr) {
            if (++mismatches <= 5) UNSCOPED_INFO("mismatch: " << name);
        }
    }
    CHECK(mismatches == 0);

    CHECK_FALSE(elf->function_address("no_such_function_leakwatch").has_value());
    CHECK_FALSE(elf->function_address("stdout").has_value());  // data, not a function
}

TEST_CASE("symbolize resolves a function of the PIE test binary", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    const uint64_t fn = addr_of(reinterpret_cast<const void*>(&leakwatch_test_marker_fn));

    Frame f = symbolizer.symbolize(::getpid(), self_maps(), fn + 5);
    CHECK(f.address == fn + 5);
    CHECK(f.symbol == "leakwatch_test_marker_fn");
    CHECK(f.offset == 5);
    CHECK(f.module == self_path());
    CHECK(f.build_id == readelf_build_id(self_path()));
    CHECK(f.display() == "leakwatch_test_marker_fn+0x5");

    // The module offset is a real file offset: the file's bytes there are the code in memory.
    CHECK(memory_equals(fn, file_bytes(self_path(), f.module_offset - 5, 16)));

    // The first byte of the function, too.
    Frame start = symbolizer.symbolize(::getpid(), self_maps(), fn);
    CHECK(start.symbol == "leakwatch_test_marker_fn");
    CHECK(start.offset == 0);
}

TEST_CASE("C++ names are demangled", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    const uint64_t fn = addr_of(reinterpret_cast<const void*>(&leakwatch_test::Widget::make));
    Frame f = symbolizer.symbolize(::getpid(), self_maps(), fn + 3);
    CHECK(f.symbol == "leakwatch_test::Widget::make(int)");
    CHECK(f.offset == 3);
    CHECK(f.display() == "leakwatch_test::Widget::make(int)+0x3");

    // function_address takes the raw (mangled) name; symbol_at gives the demangled one.
    auto lib = open_elf(fixture_libs().lib);
    auto build = lib->function_address("_ZN10fixture_ns6Gadget5buildEPKc");
    REQUIRE(build.has_value());
    const ElfFile::Symbol* sym = lib->symbol_at(*build + 2);
    REQUIRE(sym != nullptr);
    CHECK(sym->name == "fixture_ns::Gadget::build(char const*)");
    CHECK(sym->start == *build);
}

TEST_CASE("an address inside libc's malloc resolves to malloc", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    const Loaded& c = libc();
    const auto maps = self_maps();

    Frame f = symbolizer.symbolize(::getpid(), maps, c.address("malloc") + 4);
    // malloc and __libc_malloc share the address; the public name without underscores is
    // chosen, every time.
    CHECK(f.symbol == "malloc");
    CHECK(f.offset == 4);
    CHECK(fs::path(f.module.str()).filename() == "libc.so.6");
    CHECK(fs::equivalent(f.module.str(), c.path));
    CHECK_FALSE(f.build_id.empty());
    CHECK(f.build_id == open_elf(c.path)->build_id());
    CHECK(f.build_id == readelf_build_id(c.path));
    CHECK(f.display() == "malloc+0x4");

    // free shares its address with __libc_free and the compatibility cfree@GLIBC_2.2.5.
    Frame fr = symbolizer.symbolize(::getpid(), maps, c.address("free") + 1);
    CHECK(fr.symbol == "free");
    CHECK(fr.offset == 1);
    // calloc is a weak alias of __libc_calloc: still the public name.
    CHECK(symbolizer.symbolize(::getpid(), maps, c.address("calloc")).symbol == "calloc");
}

TEST_CASE("anonymous, pseudo and unmapped addresses fall back to module names", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    void* p = ::mmap(nullptr, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    const auto maps = self_maps();
    const uint64_t a = addr_of(p) + 0x10;
    const MapEntry* m = leakwatch::find_mapping(maps, a);
    REQUIRE(m != nullptr);

    Frame anon = symbolizer.symbolize(::getpid(), maps, a);
    CHECK(anon.module == "[anon]");
    CHECK(anon.symbol.empty());
    CHECK(anon.module_offset == a - m->start);
    CHECK(anon.build_id.empty());
    char expected[64];
    std::snprintf(expected, sizeof expected, "[anon]+0x%llx",
                  static_cast<unsigned long long>(a - m->start));
    CHECK(anon.display() == expected);
    ::munmap(p, 2 * 4096);

    // Page 1 is never mapped (mmap_min_addr).
    Frame unknown = symbolizer.symbolize(::getpid(), maps, 0x1000);
    CHECK(unknown.module == "[unknown]");
    CHECK(unknown.symbol.empty());
    CHECK(unknown.display() == "[unknown]+0x1000");
    CHECK(symbolizer.symbolize(::getpid(), {}, 0x1234).module == "[unknown]");

    // [stack] is named but has no file behind it.
    int local = 0;
    Frame stack = symbolizer.symbolize(::getpid(), maps, addr_of(&local));
    CHECK(stack.module == "[stack]");
    CHECK(stack.symbol.empty());
    CHECK(stack.display().starts_with("[stack]+0x"));

    // A file-backed address with no symbol shows the module's basename and file offset.
    Frame plain;
    plain.module = "/usr/lib/x86_64-linux-gnu/libfoo.so.1";
    plain.module_offset = 0x1234;
    CHECK(plain.display() == "libfoo.so.1+0x1234");
    CHECK(symbolizer.cached_files() == 0);
}

TEST_CASE("each file is parsed once however many addresses and copies", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    const Loaded& c = libc();
    const auto maps = self_maps();
    const int pid = ::getpid();

    // Functions of at least 32 bytes (qsort is 8, a jump to an internal function without a
    // symbol in Debian's glibc), and no IFUNCs (dlsym gives their resolved implementation).
    const char* names[] = {"malloc", "free", "calloc", "realloc",
                           "printf", "puts", "getenv", "setlocale"};
    for (const char* name : names) {
        for (uint64_t off = 0; off < 32; ++off) {
            Frame f = symbolizer.symbolize(pid, maps, c.address(name) + off);
            INFO(name << "+" << off);
            CHECK(f.symbol == name);
            CHECK(f.offset == off);
        }
    }
    CHECK(symbolizer.cached_files() == 1);

    symbolizer.symbolize(pid, maps,
                         addr_of(reinterpret_cast<const void*>(&leakwatch_test_marker_fn)));
    CHECK(symbolizer.cached_files() == 2);

    // Every mapping of libc (one per segment) is the same parsed file.
    const MapEntry* text = leakwatch::find_mapping(maps, c.address("malloc"));
    REQUIRE(text != nullptr);
    auto first = symbolizer.file_for(pid, *text);
    REQUIRE(first.has_value());
    for (const MapEntry& m : maps) {
        if (m.path != text->path) continue;
        auto again = symbolizer.file_for(pid, m);
        REQUIRE(again.has_value());
        CHECK(again->get() == first->get());
    }

    // A copy at another path (as in another container) has the same build-id: shared.
    const std::string copy = (temp_dir().path / "libc-copy.so.6").string();
    fs::copy_file(c.path, copy, fs::copy_options::overwrite_existing);
    auto copied = symbolizer.file_for(pid, file_mapping(copy));
    REQUIRE(copied.has_value());
    CHECK(copied->get() == first->get());
    CHECK(symbolizer.cached_files() == 2);
}

TEST_CASE("files of one build-id with other symbols never share a parse", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    const auto& libs = fixture_libs();
    const int pid = ::getpid();

    // The stripped and the full copy of one build: each keeps its own symbols.
    auto stripped = symbolizer.file_for(pid, file_mapping(libs.stripped));
    REQUIRE(stripped.has_value());
    CHECK_FALSE((*stripped)->function_address("fixture_v2").has_value());  // local: in .symtab
    auto full = symbolizer.file_for(pid, file_mapping(libs.lib));
    REQUIRE(full.has_value());
    CHECK((*full)->function_address("fixture_v2").has_value());
    CHECK((*full)->build_id() == (*stripped)->build_id());
    auto stripped_again = symbolizer.file_for(pid, file_mapping(libs.stripped));
    REQUIRE(stripped_again.has_value());
    CHECK(stripped_again->get() == stripped->get());
    CHECK(symbolizer.cached_files() == 2);

    // A fake of libc: the real build-id, malloc's symbol moved one byte into its code (what
    // would put another process's probe in the middle of an instruction). Its own parse says
    // so; the real libc's stays the real one, whichever is read first.
    const Loaded& c = libc();
    const std::string fake = (temp_dir().path / "libc-fake.so.6").string();
    fs::copy_file(c.path, fake, fs::copy_options::overwrite_existing);
    REQUIRE(move_dynamic_symbol(fake, "malloc", 1));
    auto faked = symbolizer.file_for(pid, file_mapping(fake));
    REQUIRE(faked.has_value());
    auto real = symbolizer.file_for(pid, file_mapping(c.path));
    REQUIRE(real.has_value());
    CHECK((*faked)->build_id() == (*real)->build_id());
    CHECK(faked->get() != real->get());
    CHECK((*faked)->content_key() != (*real)->content_key());
    CHECK((*faked)->function_address("malloc") == *(*real)->function_address("malloc") + 1);
    CHECK((*real)->function_address("malloc") == c.address("malloc") - c.bias);
}

TEST_CASE("file offsets and ELF virtual addresses convert through PT_LOAD", "[symbols]") {
    for (const std::string& path : {self_path(), libc().path, fixture_libs().lib}) {
        INFO(path);
        auto elf = open_elf(path);
        auto loads = readelf_loads(path);
        REQUIRE(loads.size() >= 2);
        for (const Load& l : loads) {
            if (l.filesz == 0) continue;
            for (uint64_t d : {uint64_t{0}, l.filesz / 2, l.filesz - 1}) {
                CHECK(elf->vaddr_of_file_offset(l.offset + d) == l.vaddr + d);
                CHECK(elf->file_offset_of_vaddr(l.vaddr + d) == l.offset + d);
            }
        }
        CHECK_FALSE(elf->file_offset_of_vaddr(~uint64_t{0} - 16).has_value());
        CHECK_FALSE(elf->vaddr_of_file_offset(~uint64_t{0} - 16).has_value());
    }

    // The file bytes at file_offset_of_vaddr(function) are the function's code in memory: the
    // conversion a uprobe attachment relies on.
    auto self = open_elf(self_path());
    auto marker = self->function_address("leakwatch_test_marker_fn");
    REQUIRE(marker.has_value());
    auto marker_off = self->file_offset_of_vaddr(*marker);
    REQUIRE(marker_off.has_value());
    CHECK(memory_equals(addr_of(reinterpret_cast<const void*>(&leakwatch_test_marker_fn)),
                        file_bytes(self_path(), *marker_off, 32)));

    const Loaded& c = libc();
    auto lc = open_elf(c.path);
    for (const char* name : {"malloc", "free", "calloc", "realloc"}) {
        INFO(name);
        auto vaddr = lc->function_address(name);
        REQUIRE(vaddr.has_value());
        auto off = lc->file_offset_of_vaddr(*vaddr);
        REQUIRE(off.has_value());
        CHECK(lc->vaddr_of_file_offset(*off) == *vaddr);
        CHECK(memory_equals(c.address(name), file_bytes(c.path, *off, 32)));
    }
}

TEST_CASE("versioned symbols: a name means its default version", "[symbols]") {
    const auto& libs = fixture_libs();
    auto lib = open_elf(libs.lib);
    auto v1 = lib->function_address("fixture_v1");
    auto v2 = lib->function_address("fixture_v2");
    REQUIRE(v1.has_value());
    REQUIRE(v2.has_value());
    REQUIRE(*v1 != *v2);
    CHECK(lib->function_address("fixture_versioned") == v2);  // from .symtab's "@@VERS_2"
    auto stripped = open_elf(libs.stripped);
    CHECK(stripped->function_address("fixture_versioned") == v2);  // from .gnu.version
    CHECK_FALSE(stripped->function_address("fixture_v1").has_value());
    // At an address, the public versioned name beats the local implementation's.
    REQUIRE(lib->symbol_at(*v1) != nullptr);
    CHECK(lib->symbol_at(*v1)->name == "fixture_versioned");

    // What the dynamic linker binds to each version.
    Loaded l = loaded(libs.lib);
    CHECK(addr_of(::dlvsym(l.handle, "fixture_versioned", "VERS_2")) - l.bias == *v2);
    CHECK(addr_of(::dlvsym(l.handle, "fixture_versioned", "VERS_1")) - l.bias == *v1);
    CHECK(l.address("fixture_versioned") - l.bias == *v2);

    CHECK(lib->build_id() == "0123456789abcdef");
    CHECK(stripped->build_id() == "0123456789abcdef");
    CHECK(open_elf(libs.no_build_id)->build_id().empty());
}

TEST_CASE("symbolize resolves a dlopen()ed library", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    Loaded l = loaded(fixture_libs().lib);
    const auto maps = self_maps();

    Frame f = symbolizer.symbolize(::getpid(), maps, l.address("fixture_exported") + 3);
    CHECK(f.symbol == "fixture_exported");
    CHECK(f.offset == 3);
    CHECK(f.build_id == "0123456789abcdef");
    Frame g = symbolizer.symbolize(::getpid(), maps, l.address("_ZN10fixture_ns6Gadget5buildEPKc"));
    CHECK(g.symbol == "fixture_ns::Gadget::build(char const*)");
    CHECK(g.offset == 0);
}

TEST_CASE("a mapped file deleted from disk is read through map_files", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    const std::string path = (temp_dir().path / "libfixture-deleted.so").string();
    fs::copy_file(fixture_libs().no_build_id, path, fs::copy_options::overwrite_existing);
    Loaded l = loaded(path);
    const uint64_t fn = l.address("fixture_exported");
    fs::remove(path);

    const auto maps = self_maps();
    const MapEntry* m = leakwatch::find_mapping(maps, fn);
    REQUIRE(m != nullptr);
    CHECK(m->deleted);
    Frame f = symbolizer.symbolize(::getpid(), maps, fn + 2);
    CHECK(f.module == path);
    // /proc/PID/map_files needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE); the daemon has it.
    if (::geteuid() == 0) {
        CHECK(f.symbol == "fixture_exported");
        CHECK(f.offset == 2);
    } else {
        CHECK(f.display().starts_with("libfixture-deleted.so+0x"));
    }
}

TEST_CASE("files that are not ELF are errors, and failures are remembered", "[symbols]") {
    const fs::path dir = temp_dir().path;
    const std::string text = (dir / "not-elf.txt").string();
    std::ofstream(text) << "this is not an ELF file\n";
    auto r = ElfFile::open(text);
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message, Catch::Contains(text) && Catch::Contains("not an ELF"));

    const std::string empty = (dir / "empty").string();
    std::ofstream{empty};
    CHECK_FALSE(ElfFile::open(empty).has_value());

    auto missing = ElfFile::open((dir / "missing.so").string());
    REQUIRE_FALSE(missing.has_value());
    CHECK_THAT(missing.error().message, Catch::Contains("missing.so"));

    ProcReader proc;
    Symbolizer symbolizer(proc);
    const int pid = ::getpid();
    auto inode_of = [](const std::string& path) {
        struct stat st {};
        REQUIRE(::stat(path.c_str(), &st) == 0);
        return static_cast<uint64_t>(st.st_ino);
    };
    const uint64_t text_inode = inode_of(text);
    auto first = symbolizer.file_for(pid, file_mapping(text, text_inode));
    REQUIRE_FALSE(first.has_value());
    CHECK_THAT(first.error().message, Catch::Contains("not an ELF"));

    // Remembered: even after the file becomes ELF in place, the same mapping is not retried...
    {
        auto elf = file_bytes(fixture_libs().lib, 0, fs::file_size(fixture_libs().lib));
        std::ofstream out(text, std::ios::binary | std::ios::in | std::ios::out);
        out.write(reinterpret_cast<const char*>(elf.data()), static_cast<long>(elf.size()));
    }
    CHECK_FALSE(symbolizer.file_for(pid, file_mapping(text, text_inode)).has_value());
    CHECK(symbolizer.cached_files() == 0);
    // ...while a mapping of another file (another inode, renamed over the path) is.
    fs::copy_file(fixture_libs().lib, text + ".new");
    fs::rename(text + ".new", text);
    REQUIRE(inode_of(text) != text_inode);
    CHECK(symbolizer.file_for(pid, file_mapping(text, inode_of(text))).has_value());
    // A mapping of an inode no path reaches is an error, not whatever file is at its path now.
    auto stale = symbolizer.file_for(pid, file_mapping(text, inode_of(text) + 7919));
    REQUIRE_FALSE(stale.has_value());
    CHECK_THAT(stale.error().message, Catch::Contains("no path reaches"));

    // symbolize() never fails: a mapping whose file cannot be read keeps module+offset.
    MapEntry gone = file_mapping((dir / "missing.so").string(), 7);
    Frame f = symbolizer.symbolize(pid, {gone}, gone.start + 0x20);
    CHECK(f.module == gone.path);
    CHECK(f.symbol.empty());
    CHECK(f.module_offset == 0x20);
    CHECK(f.display() == "missing.so+0x20");
}

TEST_CASE("concurrent symbolization shares one cache", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    const auto maps = self_maps();
    const uint64_t malloc_at = libc().address("malloc");
    const uint64_t marker = addr_of(reinterpret_cast<const void*>(&leakwatch_test_marker_fn));
    std::vector<int> wrong(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (uint64_t i = 0; i < 200; ++i) {
                Frame a = symbolizer.symbolize(::getpid(), maps, malloc_at + i % 16);
                Frame b = symbolizer.symbolize(::getpid(), maps, marker + i % 16);
                if (a.symbol != "malloc" || a.offset != i % 16) ++wrong[t];
                if (b.symbol != "leakwatch_test_marker_fn" || b.offset != i % 16) ++wrong[t];
            }
        });
    }
    for (auto& th : threads) th.join();
    for (int w : wrong) CHECK(w == 0);
    CHECK(symbolizer.cached_files() == 2);
}

TEST_CASE("a binary replaced on disk is read only through the process's mapping", "[symbols]") {
    // Two builds of one shape: the same code at the same addresses under different names.
    const fs::path dir = temp_dir().path / "replaced";
    fs::create_directories(dir);
    const fs::path log = dir / "build.log";
    for (const char* name : {"alpha", "beta"}) {
        std::ofstream(dir / (std::string(name) + ".c"))
            << "int " << name
            << "_fn(int x) { volatile int a = x; for (int i = 0; i < 9; i++) a = a * 3 + i; return "
               "a; }\n";
        REQUIRE(sh("cc -shared -fPIC -O1 -o '" +
                       (dir / (std::string("lib") + name + ".so")).string() + "' '" +
                       (dir / (std::string(name) + ".c")).string() + "'",
                   log));
    }
    const std::string path = (dir / "libapp.so").string();
    fs::copy_file(dir / "libalpha.so", path, fs::copy_options::overwrite_existing);
    auto alpha = open_elf(path);
    const uint64_t fn = *alpha->function_address("alpha_fn");
    REQUIRE(open_elf((dir / "libbeta.so").string())->function_address("beta_fn") == fn);

    // The process mapped libapp.so (alpha) and the maps were read then (as at attach time).
    Loaded l = loaded(path);
    const auto maps = self_maps();
    const uint64_t at = l.address("alpha_fn") + 2;
    const MapEntry* m = leakwatch::find_mapping(maps, at);
    REQUIRE(m != nullptr);
    REQUIRE_FALSE(m->deleted);
    // Then the package manager renames a new build over it.
    fs::copy_file(dir / "libbeta.so", dir / "libapp.so.new");
    fs::rename(dir / "libapp.so.new", path);

    // A /proc without map_files (e.g. no CAP_CHECKPOINT_RESTORE): its root shows the new file,
    // whose inode is not the mapping's. Nothing is read rather than the wrong file.
    const fs::path fake = temp_dir().path / "fake-proc";
    fs::create_directories(fake / std::to_string(::getpid()));
    fs::create_directory_symlink("/", fake / std::to_string(::getpid()) / "root");
    ProcReader no_map_files(fake.string());
    Symbolizer blind(no_map_files);
    Frame f = blind.symbolize(::getpid(), maps, at);
    CHECK(f.symbol.empty());
    CHECK(f.module == path);
    CHECK(f.display().starts_with("libapp.so+0x"));

    // The real /proc: map_files reaches the mapped (old) file.
    ProcReader proc;
    Symbolizer symbolizer(proc);
    Frame g = symbolizer.symbolize(::getpid(), maps, at);
    if (::geteuid() == 0) {
        CHECK(g.symbol == "alpha_fn");
        CHECK(g.offset == 2);
    } else {
        CHECK(g.symbol != "beta_fn");
    }
}

TEST_CASE("a file cut short of its section headers is refused, not read", "[symbols]") {
    const std::string copy = (temp_dir().path / "libfixture-cut.so").string();
    fs::copy_file(fixture_libs().lib, copy, fs::copy_options::overwrite_existing);
    auto whole = ElfFile::open(copy);
    REQUIRE(whole.has_value());
    fs::resize_file(copy, fs::file_size(copy) / 2);
    auto cut = ElfFile::open(copy);
    REQUIRE_FALSE(cut.has_value());
    CHECK_THAT(cut.error().message, Catch::Contains("section headers cannot be read"));
}
