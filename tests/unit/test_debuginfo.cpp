// Source lines and inlined functions from DWARF (symbols/debuginfo.cpp, through the
// Symbolizer): tests/progs/leak_inline.c built at test time with -O2 -g, and split into separate
// debug files with objcopy. Expected lines come from marker comments in the source; addresses
// from objdump; inline chains are what addr2line -i reports for the same addresses.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "elf_support.h"
#include "proc/proc.h"
#include "symbols/debuginfo.h"
#include "symbols/symbolizer.h"

using namespace leakwatch;
using namespace elf_support;

namespace {

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
    s.open_in_root = [](const std::string& p) { return leakwatch::open_file(p, 1 << 20); };
    using leakwatch::DebugCandidate;
    CHECK(leakwatch::debug_file_candidates(s) ==
          std::vector<DebugCandidate>{{"/usr/lib/debug/.build-id/ab/cdef01.debug", true},
                                      {"/usr/lib/debug/.build-id/ab/cdef01.debug", false},
                                      {"/opt/app/bin/app.debug", true},
                                      {"/opt/app/bin/.debug/app.debug", true},
                                      {"/usr/lib/debug/opt/app/bin/app.debug", true}});
    // The CRC .gnu_debuglink records is the file's CRC-32 (as zlib and binutils compute it).
    std::ofstream(temp_dir().path / "crc.txt") << "123456789";
    auto crc_file = leakwatch::open_file((temp_dir().path / "crc.txt").string(), 1 << 20);
    REQUIRE(crc_file);
    CHECK(leakwatch::file_crc32(*crc_file) == 0xcbf43926u);
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
    // libc's debug file is large: on a busy machine its read can outlast the daemon's 250 ms
    // wait, and the lookup would answer without lines (asked again later, as the daemon does).
    SymbolizerOptions o;
    o.wait = o.slow;
    Symbolizer symbolizer(proc, o);
    Frame f = symbolizer.symbolize(::getpid(), self_maps(), c.address("malloc") + 4);
    CHECK(f.symbol == "malloc");
    CHECK(f.line > 0);
    CHECK_THAT(f.file.str(), Catch::EndsWith("malloc.c"));
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
