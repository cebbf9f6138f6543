// Symbolizer tests on real ELF files: this (PIE) test binary, the system's libc as the dynamic
// linker loaded it, and a small shared object compiled from tests/fixtures/elf at run time.
// Expected values come from independent sources: the dynamic linker (dlsym/dlvsym/link_map),
// binutils (nm, readelf) and the bytes in memory.
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "proc/proc.h"
#include "symbols/symbolizer.h"

// Functions with distinctive names whose addresses the tests symbolize.
extern "C" __attribute__((noinline, used)) int leakwatch_test_marker_fn(int x) {
    volatile int acc = x;
    for (int i = 0; i < 8; ++i) acc = acc * 7 + i;
    return acc;
}

namespace leakwatch_test {
struct Widget {
    int value;
    static Widget* make(int value);
};
__attribute__((noinline)) Widget* Widget::make(int value) {
    auto* w = new Widget{value};
    w->value += leakwatch_test_marker_fn(value);
    return w;
}
}  // namespace leakwatch_test

namespace {

using leakwatch::ElfFile;
using leakwatch::Frame;
using leakwatch::MapEntry;
using leakwatch::ProcReader;
using leakwatch::Symbolizer;
namespace fs = std::filesystem;

uint64_t addr_of(const void* p) {
    return reinterpret_cast<uint64_t>(p);
}

std::string run(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) return out;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    ::pclose(p);
    return out;
}

std::string self_path() {
    return fs::read_symlink("/proc/self/exe").string();
}

std::vector<MapEntry> self_maps() {
    auto maps = ProcReader().maps(::getpid());
    REQUIRE(maps.has_value());
    return *maps;
}

// libc as the dynamic linker loaded it: its path and load bias (ELF vaddr + l_addr = address).
struct Loaded {
    void* handle = nullptr;
    std::string path;
    uint64_t bias = 0;
    uint64_t address(const char* name) const { return addr_of(::dlsym(handle, name)); }
};

Loaded loaded(const std::string& name) {
    Loaded l;
    l.handle = ::dlopen(name.c_str(), RTLD_LAZY);
    REQUIRE(l.handle != nullptr);
    struct link_map* lm = nullptr;
    REQUIRE(::dlinfo(l.handle, RTLD_DI_LINKMAP, &lm) == 0);
    l.path = lm->l_name;
    l.bias = lm->l_addr;
    return l;
}

const Loaded& libc() {
    static const Loaded l = loaded("libc.so.6");
    return l;
}

// Defined default-version function symbols per `nm -D`: raw name -> vaddr.
std::map<std::string, uint64_t> nm_dynamic_functions(const std::string& path) {
    std::map<std::string, uint64_t> out;
    std::istringstream lines(run("nm -D --defined-only '" + path + "'"));
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        std::string value, type, name;
        if (!(fields >> value >> type >> name)) continue;
        if (type != "T" && type != "i") continue;
        size_t at = name.find('@');
        if (at != std::string::npos && name.compare(at, 2, "@@") != 0) continue;
        out[name.substr(0, at)] = std::stoull(value, nullptr, 16);
    }
    return out;
}

struct Load {
    uint64_t offset, vaddr, filesz;
};

// PT_LOAD segments per `readelf -lW`.
std::vector<Load> readelf_loads(const std::string& path) {
    std::vector<Load> out;
    std::istringstream lines(run("readelf -lW '" + path + "'"));
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        std::string type, off, vaddr, paddr, filesz;
        if (!(fields >> type >> off >> vaddr >> paddr >> filesz) || type != "LOAD") continue;
        out.push_back({std::stoull(off, nullptr, 16), std::stoull(vaddr, nullptr, 16),
                       std::stoull(filesz, nullptr, 16)});
    }
    return out;
}

std::string readelf_build_id(const std::string& path) {
    std::string notes = run("readelf -n '" + path + "'");
    size_t at = notes.find("Build ID: ");
    if (at == std::string::npos) return "";
    std::istringstream rest(notes.substr(at + 10));
    std::string id;
    rest >> id;
    return id;
}

std::vector<unsigned char> file_bytes(const std::string& path, uint64_t offset, size_t n) {
    std::vector<unsigned char> out(n);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    ssize_t got = ::pread(fd, out.data(), n, static_cast<off_t>(offset));
    ::close(fd);
    REQUIRE(got == static_cast<ssize_t>(n));
    return out;
}

bool memory_equals(uint64_t address, const std::vector<unsigned char>& bytes) {
    return std::memcmp(reinterpret_cast<const void*>(address), bytes.data(), bytes.size()) == 0;
}

// A private temporary directory, removed when the tests end.
struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "leakwatch-symbols-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

TempDir& temp_dir() {
    static TempDir dir;
    return dir;
}

// tests/fixtures/elf/fixture.cpp built three ways: with a fixed build-id, the same stripped
// to .dynsym only, and without a build-id.
struct FixtureLibs {
    std::string lib, stripped, no_build_id;
};

const FixtureLibs& fixture_libs() {
    static const FixtureLibs libs = [] {
        const std::string src = std::string(LEAKWATCH_FIXTURES) + "/elf/fixture.cpp";
        const std::string map = std::string(LEAKWATCH_FIXTURES) + "/elf/fixture.map";
        const fs::path dir = temp_dir().path;
        FixtureLibs l{(dir / "libfixture.so").string(), (dir / "libfixture-stripped.so").string(),
                      (dir / "libfixture-noid.so").string()};
        const std::string cc =
            "c++ -shared -fPIC -O1 -Wl,--version-script='" + map + "' '" + src + "' -o ";
        const std::string log = " >>'" + (dir / "build.log").string() + "' 2>&1";
        bool ok =
            std::system((cc + "'" + l.lib + "' -Wl,--build-id=0x0123456789abcdef" + log).c_str()) ==
                0 &&
            std::system(
                ("objcopy --strip-all '" + l.lib + "' '" + l.stripped + "'" + log).c_str()) == 0 &&
            std::system((cc + "'" + l.no_build_id + "' -Wl,--build-id=none" + log).c_str()) == 0;
        if (!ok) FAIL("building the ELF fixture failed; see " << (dir / "build.log").string());
        return l;
    }();
    return libs;
}

std::shared_ptr<const ElfFile> open_elf(const std::string& path) {
    auto file = ElfFile::open(path);
    INFO(path << ": " << (file ? "" : file.error().message));
    REQUIRE(file.has_value());
    return *file;
}

MapEntry file_mapping(const std::string& path, uint64_t inode = 0) {
    MapEntry m;
    m.start = 0x10000;
    m.end = 0x20000;
    m.perms = "r-xp";
    m.path = path;
    m.inode = inode;
    return m;
}

}  // namespace

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

TEST_CASE("a copy with .symtab replaces a stripped copy of the same build", "[symbols]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    const auto& libs = fixture_libs();
    const int pid = ::getpid();

    auto stripped = symbolizer.file_for(pid, file_mapping(libs.stripped));
    REQUIRE(stripped.has_value());
    CHECK_FALSE((*stripped)->function_address("fixture_v2").has_value());  // local: in .symtab
    auto full = symbolizer.file_for(pid, file_mapping(libs.lib));
    REQUIRE(full.has_value());
    CHECK((*full)->function_address("fixture_v2").has_value());
    // The stripped path now gets the richer parse too.
    auto stripped_again = symbolizer.file_for(pid, file_mapping(libs.stripped));
    REQUIRE(stripped_again.has_value());
    CHECK(stripped_again->get() == full->get());
    CHECK(symbolizer.cached_files() == 1);
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

// --- source lines and inlined functions from DWARF -----------------------------------------
// tests/progs/leak_inline.c built at test time with -O2 -g, and split into separate debug
// files with objcopy. Expected lines come from marker comments in the source; addresses from
// objdump; inline chains are what addr2line -i reports for the same addresses.

namespace {

using leakwatch::SymbolCacheStats;
using leakwatch::SymbolizerOptions;

std::string inline_source() {
    return fs::canonical(fs::path(LEAKWATCH_FIXTURES) / ".." / "progs" / "leak_inline.c").string();
}

// The 1-based line holding "LINE:<name> */".
uint32_t marker_line(const std::string& name) {
    std::ifstream in(inline_source());
    std::string line;
    for (uint32_t n = 1; std::getline(in, line); ++n) {
        if (line.find("LINE:" + name + " */") != std::string::npos) return n;
    }
    FAIL("no marker " << name << " in " << inline_source());
    return 0;
}

bool sh(const std::string& cmd, const fs::path& log) {
    return std::system((cmd + " >>'" + log.string() + "' 2>&1").c_str()) == 0;
}

// The builds: `full` (DWARF inside), and stripped copies whose DWARF is elsewhere.
struct InlineBuilds {
    fs::path dir;
    std::string full;
    std::string link_same_dir;  // debuglink, debug file beside it
    std::string link_subdir;    // debuglink, debug file in .debug/
    std::string by_build_id;    // no debuglink; debug file under root/usr/lib/debug/.build-id
    std::string debug_root;     // that root's usr/lib/debug
    std::string wrong_link;     // debuglink to the debug file of another build
    std::string no_debug;       // no DWARF anywhere
    std::string other;          // another build (-O1), with DWARF
};

const InlineBuilds& inline_builds() {
    static const InlineBuilds b = [] {
        InlineBuilds b;
        b.dir = temp_dir().path / "inline";
        fs::create_directories(b.dir);
        const fs::path log = b.dir / "build.log";
        const std::string src = inline_source();
        const std::string cc = "cc -g -fno-omit-frame-pointer -I'" +
                               fs::path(src).parent_path().string() + "' '" + src + "' -o ";
        b.full = (b.dir / "leak_inline").string();
        b.other = (b.dir / "leak_inline_o1").string();
        bool ok = sh(cc + "'" + b.full + "' -O2", log) && sh(cc + "'" + b.other + "' -O1", log);
        const std::string debug = (b.dir / "leak_inline.debug").string();
        ok = ok && sh("objcopy --only-keep-debug '" + b.full + "' '" + debug + "'", log);
        auto stripped_into = [&](const fs::path& dir, const std::string& debug_file) {
            fs::create_directories(dir);
            std::string out = (dir / "leak_inline").string();
            ok = ok && sh("objcopy --strip-debug '" + b.full + "' '" + out + "'", log);
            if (!debug_file.empty()) {
                ok =
                    ok && sh("objcopy --add-gnu-debuglink='" + debug_file + "' '" + out + "'", log);
            }
            return out;
        };
        // Same dir: debuglink names leak_inline.debug, which sits beside the binary.
        fs::create_directories(b.dir / "same");
        fs::copy_file(debug, b.dir / "same" / "leak_inline.debug");
        b.link_same_dir =
            stripped_into(b.dir / "same", (b.dir / "same/leak_inline.debug").string());
        fs::create_directories(b.dir / "sub" / ".debug");
        fs::copy_file(debug, b.dir / "sub" / ".debug" / "leak_inline.debug");
        b.link_subdir =
            stripped_into(b.dir / "sub", (b.dir / "sub/.debug/leak_inline.debug").string());
        b.by_build_id = stripped_into(b.dir / "bid", "");
        b.no_debug = stripped_into(b.dir / "none", "");
        // The other build's debug file under the name this build's debuglink looks for.
        fs::create_directories(b.dir / "wrong");
        ok = ok && sh("objcopy --only-keep-debug '" + b.other + "' '" +
                          (b.dir / "wrong" / "leak_inline.debug").string() + "'",
                      log);
        b.wrong_link = stripped_into(b.dir / "wrong", debug);
        const std::string id = readelf_build_id(b.full);
        if (!ok || id.size() < 4) FAIL("building leak_inline failed; see " << log.string());
        b.debug_root = (b.dir / "root" / "usr" / "lib" / "debug").string();
        fs::path by_id = fs::path(b.debug_root) / ".build-id" / id.substr(0, 2);
        fs::create_directories(by_id);
        fs::copy_file(debug, by_id / (id.substr(2) + ".debug"));
        return b;
    }();
    return b;
}

// Addresses in an ELF file by objdump: the address after each `call <callee>` in `function`.
std::vector<uint64_t> return_addresses(const std::string& path, const std::string& function,
                                       const std::string& callee) {
    std::vector<uint64_t> out;
    std::istringstream lines(run("objdump -d --no-show-raw-insn '" + path + "'"));
    std::string line;
    bool inside = false, take_next = false;
    while (std::getline(lines, line)) {
        if (line.find(">:") != std::string::npos) {
            inside = line.find("<" + function + ">:") != std::string::npos;
            continue;
        }
        if (!inside || line.find(':') == std::string::npos) continue;
        uint64_t at = std::stoull(line.substr(0, line.find(':')), nullptr, 16);
        if (take_next) {
            out.push_back(at);
            take_next = false;
        }
        if (line.find("call") != std::string::npos &&
            line.find("<" + callee + ">") != std::string::npos)
            take_next = true;
    }
    return out;
}

// A mapping of the whole file at 0x400000 (file offset 0), so address = 0x400000 + offset.
MapEntry whole_file(const std::string& path, uint64_t inode = 0) {
    MapEntry m = file_mapping(path, inode);
    m.start = 0x400000;
    m.end = m.start + ((fs::file_size(path) + 0xfff) & ~uint64_t{0xfff});
    return m;
}

// Where vaddr is when `path` is mapped as whole_file: through readelf's PT_LOAD table.
uint64_t mapped_address(const std::string& path, uint64_t vaddr) {
    for (const Load& l : readelf_loads(path)) {
        if (vaddr >= l.vaddr && vaddr < l.vaddr + l.filesz)
            return 0x400000 + vaddr - l.vaddr + l.offset;
    }
    FAIL("vaddr " << vaddr << " not in a PT_LOAD of " << path);
    return 0;
}

// What the aggregator does with a return address: look up the call before it.
Frame symbolize_return(Symbolizer& s, const std::string& path, uint64_t vaddr) {
    MapEntry m = whole_file(path);
    return s.symbolize(::getpid(), {m}, mapped_address(path, vaddr) - 1);
}

SymbolizerOptions no_system_debug_dirs() {
    SymbolizerOptions o;
    o.debug_dirs = {};
    return o;
}

void check_leak_nodes_frame(const Frame& f) {
    const std::string src = inline_source();
    CHECK(f.symbol == "leak_nodes");
    CHECK(f.file == src);
    CHECK(f.line == marker_line("leak_nodes_make_node"));
    CHECK(f.source() == src + ":" + std::to_string(marker_line("leak_nodes_make_node")));
    REQUIRE(f.inlined.size() == 2);
    CHECK(f.inlined[0].function == "grab");
    CHECK(f.inlined[0].file == src);
    CHECK(f.inlined[0].line == marker_line("grab_malloc"));
    CHECK(f.inlined[1].function == "make_node");
    CHECK(f.inlined[1].file == src);
    CHECK(f.inlined[1].line == marker_line("make_node_grab"));
}

}  // namespace

TEST_CASE("source lines and the inline chain come from the file's own DWARF", "[symbols][dwarf]") {
    const auto& b = inline_builds();
    auto malloc_ret = return_addresses(b.full, "leak_nodes", "malloc@plt");
    auto memset_ret = return_addresses(b.full, "leak_nodes", "memset@plt");
    auto main_ret = return_addresses(b.full, "main", "leak_nodes");
    REQUIRE(malloc_ret.size() == 1);
    REQUIRE(memset_ret.size() == 1);
    REQUIRE(main_ret.size() == 1);

    ProcReader proc;
    Symbolizer symbolizer(proc, no_system_debug_dirs());
    // malloc is called from grab(), inlined into make_node(), inlined into leak_nodes().
    Frame f = symbolize_return(symbolizer, b.full, malloc_ret[0]);
    check_leak_nodes_frame(f);
    // The same as addr2line -i says for that address.
    char at[32];
    std::snprintf(at, sizeof at, "%llx", static_cast<unsigned long long>(malloc_ret[0] - 1));
    std::string a2l = run("addr2line -f -i -e '" + b.full + "' " + at);
    CHECK(a2l == "grab\n" + inline_source() + ":" + std::to_string(marker_line("grab_malloc")) +
                     "\nmake_node\n" + inline_source() + ":" +
                     std::to_string(marker_line("make_node_grab")) + "\nleak_nodes\n" +
                     inline_source() + ":" + std::to_string(marker_line("leak_nodes_make_node")) +
                     "\n");

    // A call that is not inlined: no chain.
    Frame m = symbolize_return(symbolizer, b.full, memset_ret[0]);
    CHECK(m.symbol == "leak_nodes");
    CHECK(m.line == marker_line("leak_nodes_memset"));
    CHECK(m.inlined.empty());
    Frame top = symbolize_return(symbolizer, b.full, main_ret[0]);
    CHECK(top.symbol == "main");
    CHECK(top.file == inline_source());
    CHECK(top.line == marker_line("main_leak_nodes"));
    CHECK(top.inlined.empty());

    // The symbol and the offset are what they are without DWARF: sites do not change.
    SymbolizerOptions off = no_system_debug_dirs();
    off.source_lines = false;
    Symbolizer plain(proc, off);
    Frame p = symbolize_return(plain, b.full, malloc_ret[0]);
    CHECK(p.symbol == f.symbol);
    CHECK(p.offset == f.offset);
    CHECK(p.display() == f.display());
    CHECK(p.file.empty());
    CHECK(p.line == 0);
    CHECK(p.inlined.empty());
}

TEST_CASE("separate debug files: .gnu_debuglink and build-id", "[symbols][dwarf]") {
    const auto& b = inline_builds();
    const uint64_t ret = return_addresses(b.full, "leak_nodes", "malloc@plt").at(0);
    ProcReader proc;
    // The stripped copies keep the same code: their symbols still resolve.
    for (const std::string& path : {b.link_same_dir, b.link_subdir}) {
        INFO(path);
        CHECK_FALSE(open_elf(path)->has_dwarf());
        CHECK(open_elf(path)->debuglink() == "leak_inline.debug");
        Symbolizer symbolizer(proc, no_system_debug_dirs());
        check_leak_nodes_frame(symbolize_return(symbolizer, path, ret));
    }
    {
        // By build-id, in a debug directory given as a path inside the process's root.
        SymbolizerOptions o;
        o.debug_dirs = {b.debug_root};
        Symbolizer symbolizer(proc, o);
        check_leak_nodes_frame(symbolize_return(symbolizer, b.by_build_id, ret));
        // Without that directory there is nothing: the frame keeps symbol and module.
        Symbolizer bare(proc, no_system_debug_dirs());
        Frame f = symbolize_return(bare, b.by_build_id, ret);
        CHECK(f.symbol == "leak_nodes");
        CHECK(f.file.empty());
        CHECK(f.line == 0);
        CHECK(f.inlined.empty());
        CHECK(f.build_id == readelf_build_id(b.full));
        CHECK(bare.cache_stats()[1].entries == 1);  // the failed search is remembered
    }
    {
        // A debug file of another build under the debuglink's name is refused (build-id).
        Symbolizer symbolizer(proc, no_system_debug_dirs());
        Frame f = symbolize_return(symbolizer, b.wrong_link, ret);
        CHECK(f.symbol == "leak_nodes");
        CHECK(f.line == 0);
        CHECK(f.file.empty());
        Frame none = symbolize_return(symbolizer, b.no_debug, ret);
        CHECK(none.symbol == "leak_nodes");
        CHECK(none.line == 0);
    }
    // The candidates, in order, for a file mapped at /opt/app/bin/app in a process root.
    leakwatch::DebugSearch s;
    s.build_id = "abcdef01";
    s.debuglink = "app.debug";
    s.mapped_path = "/opt/app/bin/app";
    s.debug_dirs = {"/usr/lib/debug"};
    s.in_root = [](const std::string& p) { return "/proc/42/root" + p; };
    CHECK(leakwatch::debug_file_candidates(s) ==
          std::vector<std::string>{"/proc/42/root/usr/lib/debug/.build-id/ab/cdef01.debug",
                                   "/usr/lib/debug/.build-id/ab/cdef01.debug",
                                   "/proc/42/root/opt/app/bin/app.debug",
                                   "/proc/42/root/opt/app/bin/.debug/app.debug",
                                   "/proc/42/root/usr/lib/debug/opt/app/bin/app.debug"});
    // The CRC .gnu_debuglink records is the file's CRC-32 (as zlib and binutils compute it).
    std::ofstream(temp_dir().path / "crc.txt") << "123456789";
    CHECK(leakwatch::file_crc32((temp_dir().path / "crc.txt").string()) == 0xcbf43926u);
}

TEST_CASE("symbol caches are bounded, evict the least recently used, and count",
          "[symbols][dwarf]") {
    const auto& b = inline_builds();
    auto rets = return_addresses(b.full, "leak_nodes", "malloc@plt");
    auto more = return_addresses(b.full, "leak_nodes", "memset@plt");
    auto main_ret = return_addresses(b.full, "main", "leak_nodes");
    const uint64_t other_ret = return_addresses(b.other, "main", "leak_nodes").at(0);
    REQUIRE(rets.size() == 1);
    ProcReader proc;
    SymbolizerOptions o = no_system_debug_dirs();
    o.max_files = 1;
    o.max_source_entries = 2;
    Symbolizer s(proc, o);
    auto stats = [&](const std::string& cache) {
        for (const auto& c : s.cache_stats())
            if (c.cache == cache) return c;
        FAIL("no cache " << cache);
        return SymbolCacheStats{};
    };
    auto counts = [&](const std::string& cache) {
        auto c = stats(cache);
        return std::vector<uint64_t>{c.hits, c.misses, c.entries};
    };
    CHECK(stats("elf_files").capacity == 1);
    CHECK(stats("debug_files").capacity == 1);
    CHECK(stats("source_lines").capacity == 2);

    check_leak_nodes_frame(symbolize_return(s, b.full, rets[0]));
    CHECK(counts("elf_files") == std::vector<uint64_t>{0, 1, 1});
    CHECK(counts("debug_files") == std::vector<uint64_t>{0, 1, 1});
    CHECK(counts("source_lines") == std::vector<uint64_t>{0, 1, 1});
    check_leak_nodes_frame(symbolize_return(s, b.full, rets[0]));  // all from the caches
    CHECK(counts("elf_files") == std::vector<uint64_t>{1, 1, 1});
    CHECK(counts("debug_files") == std::vector<uint64_t>{1, 1, 1});
    CHECK(counts("source_lines") == std::vector<uint64_t>{1, 1, 1});
    symbolize_return(s, b.full, more.at(0));
    symbolize_return(s, b.full, main_ret.at(0));  // a third address: the first is evicted
    CHECK(counts("source_lines") == std::vector<uint64_t>{1, 3, 2});
    CHECK(stats("source_lines").evictions == 1);
    check_leak_nodes_frame(symbolize_return(s, b.full, rets[0]));  // looked up again, right
    CHECK(counts("source_lines") == std::vector<uint64_t>{1, 4, 2});

    // Another file: the one-file caches drop the first.
    Frame o1 = symbolize_return(s, b.other, other_ret);
    CHECK(o1.symbol == "main");
    CHECK(o1.line == marker_line("main_leak_nodes"));
    CHECK(counts("elf_files") == std::vector<uint64_t>{4, 2, 1});
    CHECK(counts("debug_files") == std::vector<uint64_t>{4, 2, 1});
    CHECK(s.cached_files() == 1);
    // ...and the first is parsed again when needed, with the same answer.
    check_leak_nodes_frame(symbolize_return(s, b.full, rets[0]));
    CHECK(counts("elf_files") == std::vector<uint64_t>{4, 3, 1});
    CHECK(stats("elf_files").evictions == 2);

    // Shrinking the limits evicts at once.
    s.set_limits(1, 1);
    CHECK(stats("source_lines").entries == 1);
    CHECK(stats("source_lines").capacity == 1);
}

TEST_CASE("libc's lines come from its separate debug file when installed", "[symbols][dwarf]") {
    const Loaded& c = libc();
    const std::string id = readelf_build_id(c.path);
    const std::string debug =
        "/usr/lib/debug/.build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug";
    if (!fs::exists(debug)) {
        WARN("no debug file for libc (" << debug << "): libc6-dbg is not installed");
        return;
    }
    ProcReader proc;
    Symbolizer symbolizer(proc);
    Frame f = symbolizer.symbolize(::getpid(), self_maps(), c.address("malloc") + 4);
    CHECK(f.symbol == "malloc");
    CHECK(f.line > 0);
    CHECK_THAT(f.file.str(), Catch::EndsWith("malloc.c"));
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

TEST_CASE("cost of source lines: first lookup and cached", "[symbols][dwarf][.][perf]") {
    // Run by hand: unit_symbols "[perf]". A stack of this test binary (C++, -O2 -g) and libc.
    ProcReader proc;
    const auto maps = self_maps();
    std::vector<uint64_t> stack = {
        libc().address("malloc") + 4,
        addr_of(reinterpret_cast<const void*>(&leakwatch_test::Widget::make)) + 8,
        addr_of(reinterpret_cast<const void*>(&leakwatch_test_marker_fn)) + 5,
        libc().address("free") + 3,
        libc().address("printf") + 3,
        libc().address("calloc") + 6,
    };
    auto time_stack = [&](Symbolizer& s) {
        auto t0 = std::chrono::steady_clock::now();
        size_t lines = 0;
        for (uint64_t a : stack) lines += s.symbolize(::getpid(), maps, a).line != 0;
        auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0);
        return std::make_pair(us.count(), lines);
    };
    for (bool source : {false, true}) {
        SymbolizerOptions o;
        o.source_lines = source;
        Symbolizer s(proc, o);
        auto first = time_stack(s);
        auto second = time_stack(s);
        std::printf("source_lines=%d: %zu frames, first %.0f us (%zu with lines), cached %.1f us\n",
                    source, stack.size(), first.first, first.second, second.first);
        if (!source) continue;
        // Per frame, from a cold symbolizer: the first frame of each file pays for its DWARF.
        Symbolizer cold(proc, o);
        for (uint64_t a : stack) {
            auto t0 = std::chrono::steady_clock::now();
            Frame f = cold.symbolize(::getpid(), maps, a);
            auto us =
                std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0);
            std::printf("  %8.0f us  %s at %s, %zu inlined\n", us.count(), f.display().c_str(),
                        f.source().c_str(), f.inlined.size());
        }
    }
}

// --- perf maps (symbols/perf_map.h) ---

TEST_CASE("perf maps: hex start and size, the latest blob wins, partial lines skipped",
          "[symbols][perf_map]") {
    auto map = leakwatch::PerfMap::parse(
        "7f0000001000 100 Interpreter\n"
        "0x7f0000002000 0x80 void LeakDirect.leakBuffer(int)\n"
        "not a line\n"
        "7f0000003000 0 empty\n"
        "7f0000002040 40 java.nio.ByteBuffer java.nio.ByteBuffer.allocateDirect(int)\n"
        "7f0000004000 10 py::leak_bytes:/tmp/leak.py\n"
        "7f0000005000 10 cut off");
    REQUIRE(map.find(0x7f0000001000) != nullptr);
    CHECK(map.find(0x7f00000010ff)->name == "Interpreter");
    CHECK(map.find(0x7f0000001100) == nullptr);
    // the later blob at 0x...2040 replaced the one it overlaps
    CHECK(map.find(0x7f0000002000) == nullptr);
    CHECK(map.find(0x7f0000002050)->name ==
          "java.nio.ByteBuffer java.nio.ByteBuffer.allocateDirect(int)");
    CHECK(map.find(0x7f0000003000) == nullptr);
    CHECK(map.find(0x7f0000004008)->name == "py::leak_bytes:/tmp/leak.py");
    CHECK(map.find(0x7f0000005000) == nullptr);  // no newline yet: being written
    CHECK(map.size() == 3);

    using leakwatch::perf_map_symbol;
    CHECK(perf_map_symbol("void LeakDirect.leakBuffer(int)") == "LeakDirect.leakBuffer(int)");
    CHECK(perf_map_symbol("java.nio.ByteBuffer java.nio.ByteBuffer.allocateDirect(int)") ==
          "java.nio.ByteBuffer.allocateDirect(int)");
    CHECK(perf_map_symbol("void java.util.HashMap.put(java.lang.Object, java.lang.Object)") ==
          "java.util.HashMap.put(java.lang.Object, java.lang.Object)");
    CHECK(perf_map_symbol("Interpreter") == "Interpreter");
    CHECK(perf_map_symbol("StubRoutines (1)") == "StubRoutines (1)");
    CHECK(perf_map_symbol("py::leak_bytes:/tmp/leak.py") == "py::leak_bytes:/tmp/leak.py");
}

TEST_CASE("perf maps are read through /proc/PID/root, and reread when they change",
          "[symbols][perf_map]") {
    std::string path = "/tmp/perf-" + std::to_string(getpid()) + ".map";
    {
        std::ofstream out(path);
        out << "1000 100 first\n";
    }
    ProcReader proc;
    leakwatch::PerfMaps maps(proc);
    REQUIRE(maps.find(getpid(), 0x1010) != nullptr);
    CHECK(maps.find(getpid(), 0x1010)->name == "first");
    uint64_t g = maps.generation(getpid());
    {
        std::ofstream out(path, std::ios::app);
        out << "2000 100 second\n";
    }
    // checked again at most once a second
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    REQUIRE(maps.find(getpid(), 0x2010) != nullptr);
    CHECK(maps.find(getpid(), 0x2010)->name == "second");
    CHECK(maps.generation(getpid()) != g);
    std::remove(path.c_str());
}
