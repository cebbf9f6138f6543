#include "elf_support.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

extern "C" __attribute__((noinline, used)) int leakwatch_test_marker_fn(int x) {
    volatile int acc = x;
    for (int i = 0; i < 8; ++i) acc = acc * 7 + i;
    return acc;
}

namespace leakwatch_test {
__attribute__((noinline)) Widget* Widget::make(int value) {
    auto* w = new Widget{value};
    w->value += leakwatch_test_marker_fn(value);
    return w;
}
}  // namespace leakwatch_test

namespace elf_support {

using leakwatch::ElfFile;
using leakwatch::MapEntry;
using leakwatch::ProcReader;

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

uint64_t Loaded::address(const char* name) const {
    return addr_of(::dlsym(handle, name));
}

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

TempDir::TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "leakwatch-symbols-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
}

TempDir& temp_dir() {
    static TempDir dir;
    return dir;
}

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

MapEntry file_mapping(const std::string& path, uint64_t inode) {
    MapEntry m;
    m.start = 0x10000;
    m.end = 0x20000;
    m.perms = "r-xp";
    m.path = path;
    m.inode = inode;
    // The device, as the maps line of a real mapping of the file gives it (a path is taken for
    // the mapped file only on the same device).
    struct stat st {};
    if (inode != 0 && ::stat(path.c_str(), &st) == 0) {
        m.dev_major = major(st.st_dev);
        m.dev_minor = minor(st.st_dev);
    }
    return m;
}

bool sh(const std::string& cmd, const fs::path& log) {
    return std::system((cmd + " >>'" + log.string() + "' 2>&1").c_str()) == 0;
}

bool move_dynamic_symbol(const std::string& path, const std::string& name, int64_t delta) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    if (!f) return false;
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (bytes.size() < sizeof(Elf64_Ehdr)) return false;
    Elf64_Ehdr eh;
    std::memcpy(&eh, bytes.data(), sizeof eh);
    auto shdr = [&](size_t i) {
        Elf64_Shdr sh;
        std::memcpy(&sh, bytes.data() + eh.e_shoff + i * eh.e_shentsize, sizeof sh);
        return sh;
    };
    bool moved = false;
    for (size_t i = 0; i < eh.e_shnum; i++) {
        Elf64_Shdr sh = shdr(i);
        if (sh.sh_type != SHT_DYNSYM) continue;
        Elf64_Shdr strtab = shdr(sh.sh_link);
        for (uint64_t off = sh.sh_offset; off + sizeof(Elf64_Sym) <= sh.sh_offset + sh.sh_size;
             off += sizeof(Elf64_Sym)) {
            Elf64_Sym sym;
            std::memcpy(&sym, bytes.data() + off, sizeof sym);
            if (name != bytes.data() + strtab.sh_offset + sym.st_name) continue;
            sym.st_value = static_cast<uint64_t>(static_cast<int64_t>(sym.st_value) + delta);
            std::memcpy(bytes.data() + off, &sym, sizeof sym);
            moved = true;
        }
    }
    if (!moved) return false;
    f.seekp(0);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return static_cast<bool>(f);
}

}  // namespace elf_support
