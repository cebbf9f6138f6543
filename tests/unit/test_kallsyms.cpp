// Kernel symbolization from kallsyms text (symbols/kallsyms.cpp). Fixtures:
// tests/fixtures/kallsyms/kallsyms.txt holds lines of 6.18's /proc/kallsyms as root reads it (plus
// a made-up module, memory_leak), kallsyms_hidden.txt the same lines as a reader without CAP_SYSLOG
// sees them.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "symbols/kallsyms.h"

namespace {

using leakwatch::Frame;
using leakwatch::Kallsyms;

std::string fixture_path(const std::string& name) {
    return std::string(LEAKWATCH_FIXTURES) + "/kallsyms/" + name;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

const Kallsyms& fixture() {
    static const Kallsyms k = [] {
        auto parsed = Kallsyms::parse(read_file(fixture_path("kallsyms.txt")));
        if (!parsed) FAIL(parsed.error().message);
        return std::move(*parsed);
    }();
    return k;
}

void check_frame(uint64_t address, const std::string& symbol, uint64_t offset,
                 const std::string& module) {
    INFO("address 0x" << std::hex << address);
    Frame f = fixture().symbolize(address);
    CHECK(f.address == address);
    CHECK(f.symbol == symbol);
    CHECK(f.offset == offset);
    CHECK(f.module == module);
    CHECK(f.module_offset == offset);
    CHECK(f.build_id.empty());
}

// The lowest text symbol of the fixture (_stext).
constexpr uint64_t kTextBase = 0xffffffff81000000ull;

void check_unknown(const Kallsyms& k, uint64_t address) {
    INFO("address 0x" << std::hex << address);
    Frame f = k.symbolize(address);
    CHECK(f.address == address);
    CHECK(f.symbol.empty());
    CHECK(f.offset == 0);
    CHECK(f.module == "[unknown]");
    // Not the address (KASLR): its distance from the lowest text symbol, 0 below it.
    CHECK(f.module_offset == (address >= kTextBase ? address - kTextBase : 0));
}

}  // namespace

TEST_CASE("kallsyms keeps one text symbol per address, kernel and modules", "[kallsyms]") {
    // 46 lines: 35 addresses with text symbols; aliases, data, per-CPU zero addresses and the
    // _etext/_einittext markers do not count.
    CHECK(fixture().size() == 35);
}

TEST_CASE("kallsyms symbolizes kernel addresses with offsets", "[kallsyms]") {
    check_frame(0xffffffff816c9bf0, "alloc_pipe_info", 0, "[kernel]");
    check_frame(0xffffffff816c9bf0 + 0x2a, "alloc_pipe_info", 0x2a, "[kernel]");
    check_frame(0xffffffff81635e90 + 0x237, "__kmalloc_cache_noprof", 0x237, "[kernel]");
    check_frame(0xffffffff8162fd40 + 0x2b, "__slab_alloc.isra.0", 0x2b, "[kernel]");
    check_frame(0xffffffff81207610 + 1, "abort", 1, "[kernel]");  // weak (W)
    // The byte before a symbol belongs to the one before it.
    check_frame(0xffffffff816c9bf0 - 1, "__pfx_alloc_pipe_info", 0xf, "[kernel]");
    // A __pfx_ symbol without its function after it keeps its whole name.
    check_frame(0xffffffff816c9e20 + 0x100, "__pfx_free_pipe_info", 0x100, "[kernel]");
    check_frame(0xffffffff83783b00 + 0x1000, "start_kernel", 0x1000, "[kernel]");
}

TEST_CASE("kallsyms symbolizes module symbols, sorted from unsorted input", "[kallsyms]") {
    check_frame(0xffffffffc0a01010, "leak_fn", 0, "[memory_leak]");
    check_frame(0xffffffffc0a01010 + 0x42, "leak_fn", 0x42, "[memory_leak]");
    check_frame(0xffffffffc0a01000 + 8, "__pfx_leak_fn", 8, "[memory_leak]");
    // The module's last function ends where its data starts.
    check_frame(0xffffffffc0a03000 - 1, "leak_exit", 0x1eff, "[memory_leak]");
    check_unknown(fixture(), 0xffffffffc0a03000);
    check_unknown(fixture(), 0xffffffffc0a03048);
    check_frame(0xffffffffc0025c8c + 0x30, "bpf_prog_1e312dfcf68d6312_k2", 0x30, "[bpf]");
    check_frame(0xffffffffc0201000 + 0x20, "ftrace_trampoline", 0x20, "[__builtin__ftrace]");
}

TEST_CASE("kallsyms binary search edges", "[kallsyms]") {
    SECTION("exact start of the first symbol picks the kernel's first alias") {
        check_frame(0xffffffff81000000, "srso_alias_untrain_ret", 0, "[kernel]");
    }
    SECTION("below the first symbol") {
        check_unknown(fixture(), 0);
        check_unknown(fixture(), 0x1000);  // zero-address per-CPU symbols are no code
        check_unknown(fixture(), 0xffffffff80ffffff);
    }
    SECTION("exact start of a symbol after a padding symbol") {
        check_frame(0xffffffff816ca5b0, "do_pipe2", 0, "[kernel]");
        check_frame(0xffffffff816ca5b0 - 0x10, "__pfx_do_pipe2", 0, "[kernel]");
    }
    SECTION("a text symbol wins over data at its address") {
        check_frame(0xffffffff83783000, "_sinittext", 0, "[kernel]");
    }
    SECTION("_etext and _einittext end the text before them") {
        check_frame(0xffffffff8220bb07, "__SCT__tp_func_ma_write", 7, "[kernel]");
        check_unknown(fixture(), 0xffffffff8220bb08);
        check_unknown(fixture(), 0xffffffff82300000);
        check_unknown(fixture(), 0xffffffff82400000);  // __start_rodata
        check_unknown(fixture(), 0xffffffff837f8910 + 8);
    }
    SECTION("the last symbol of a module claims a bounded region") {
        // k2 is followed by another module's symbol, far away.
        check_frame(0xffffffffc0025c8c + 0xffff, "bpf_prog_1e312dfcf68d6312_k2", 0xffff, "[bpf]");
        check_unknown(fixture(), 0xffffffffc0025c8c + 0x10000);
        check_unknown(fixture(), 0xffffffffc0201000 + 0x10000);
    }
    SECTION("beyond the end") {
        check_unknown(fixture(), 0xffffffffc0a04000);
        check_unknown(fixture(), UINT64_MAX);
    }
}

TEST_CASE("kallsyms: the very last symbol claims a bounded region", "[kallsyms]") {
    auto k = Kallsyms::parse(
        "ffffffff81000000 T _stext\n"
        "ffffffff81000100 t last_fn\n");
    REQUIRE(k.has_value());
    CHECK(k->size() == 2);
    CHECK(k->symbolize(0xffffffff81000100 + 0x10).symbol == "last_fn");
    CHECK(k->symbolize(0xffffffff81000100 + 0xffff).symbol == "last_fn");
    check_unknown(*k, 0xffffffff81000100 + 0x10000);
    check_unknown(*k, UINT64_MAX);
    // Without a trailing newline and with CRLF line ends, too.
    auto crlf = Kallsyms::parse("ffffffff81000000 T _stext\r\nffffffff81000100 t last_fn");
    REQUIRE(crlf.has_value());
    CHECK(crlf->symbolize(0xffffffff81000101).symbol == "last_fn");
}

TEST_CASE("kallsyms names the line of malformed input", "[kallsyms]") {
    struct Case {
        std::string text, expected;
    };
    const std::vector<Case> cases = {
        {"ffffffff81000000 T _stext\nnothex T foo\n", "line 2: bad address 'nothex'"},
        {"ffffffff81000000 T _stext\n\nffffffff81000010 T\n", "line 3: expected ADDRESS TYPE"},
        {"ffffffff81000000 TT _stext\n", "line 1: bad type 'TT'"},
        {"ffffffff81000000 t foo\t[mod\n", "line 1: bad module '[mod'"},
        {"ffffffff81000000 t foo\t[mod] extra\n", "line 1: too many fields"},
        {"ffffffff81000000 t foo\nfffffffff81000000000 t bar\n", "line 2: bad address"},
        {"0xffffffff81000000 t foo\n", "line 1: bad address"},
    };
    for (const auto& c : cases) {
        INFO(c.text);
        auto k = Kallsyms::parse(c.text);
        REQUIRE_FALSE(k.has_value());
        CHECK_THAT(k.error().message, Catch::Contains(c.expected));
    }
}

TEST_CASE("kallsyms without text symbols is an error", "[kallsyms]") {
    for (std::string text : {"", "\n\n", "ffffffff82400000 D __start_rodata\n"}) {
        auto k = Kallsyms::parse(text);
        REQUIRE_FALSE(k.has_value());
        CHECK_THAT(k.error().message, Catch::Contains("no text symbols"));
    }
}

TEST_CASE("kallsyms with all-zero addresses says they are hidden", "[kallsyms]") {
    auto k = Kallsyms::parse(read_file(fixture_path("kallsyms_hidden.txt")));
    REQUIRE_FALSE(k.has_value());
    CHECK_THAT(k.error().message, Catch::Contains("addresses are zero") &&
                                      Catch::Contains("hides them") && Catch::Contains("root") &&
                                      Catch::Contains("kernel.kptr_restrict"));
}

TEST_CASE("Kallsyms::load names the file in errors", "[kallsyms]") {
    auto hidden = Kallsyms::load(fixture_path("kallsyms_hidden.txt"));
    REQUIRE_FALSE(hidden.has_value());
    CHECK_THAT(hidden.error().message,
               Catch::StartsWith(fixture_path("kallsyms_hidden.txt") + ": all symbol addresses"));
    auto missing = Kallsyms::load(fixture_path("no-such-file"));
    REQUIRE_FALSE(missing.has_value());
    CHECK_THAT(missing.error().message,
               Catch::Contains("no-such-file") && Catch::Contains("No such file or directory"));
    auto ok = Kallsyms::load(fixture_path("kallsyms.txt"));
    REQUIRE(ok.has_value());
    CHECK(ok->size() == 35);
}

TEST_CASE("Kallsyms::load parses the real /proc/kallsyms in well under a second", "[root]") {
    using Clock = std::chrono::steady_clock;
    auto ms = [](Clock::duration d) {
        return std::chrono::duration<double, std::milli>(d).count();
    };
    auto t0 = Clock::now();
    std::ifstream in("/proc/kallsyms");
    if (!in) FAIL("cannot open /proc/kallsyms: this test needs root");
    std::ostringstream buf;
    buf << in.rdbuf();
    std::string text = buf.str();
    auto t1 = Clock::now();
    auto k = Kallsyms::parse(text);
    auto t2 = Clock::now();
    if (!k) FAIL("this test needs root (with kernel.kptr_restrict < 2): " << k.error().message);
    auto loaded = Kallsyms::load();
    auto t3 = Clock::now();
    REQUIRE(loaded.has_value());
    WARN("/proc/kallsyms: " << k->size() << " text symbols; read " << ms(t1 - t0) << " ms, parse "
                            << ms(t2 - t1) << " ms, load (read+parse) " << ms(t3 - t2) << " ms");
    CHECK(ms(t2 - t1) < 500);
    CHECK(ms(t3 - t2) < 1000);
    CHECK(k->size() > 10000);

    // Every function the file names at a unique address symbolizes to itself one byte in, as
    // a plain scan of the text sees it.
    std::istringstream lines(text);
    std::string line;
    size_t checked = 0;
    std::vector<std::pair<uint64_t, std::string>> functions;
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        std::string addr, type, name, module;
        fields >> addr >> type >> name >> module;
        if (type != "T" && type != "t") continue;
        functions.emplace_back(std::stoull(addr, nullptr, 16), name + " " + module);
    }
    std::sort(functions.begin(), functions.end());
    for (size_t i = 1; i + 1 < functions.size(); ++i) {
        const auto& [start, who] = functions[i];
        if (start == functions[i - 1].first || start == functions[i + 1].first) continue;
        if (functions[i + 1].first - start < 2) continue;
        std::string name = who.substr(0, who.find(' '));
        if (name == "_etext" || name == "_einittext" || name.ends_with("_text_end")) continue;
        std::string module = who.substr(who.find(' ') + 1);
        if (module.empty()) module = "[kernel]";
        Frame f = k->symbolize(start + 1);
        if (f.symbol != name || f.offset != 1 || f.module != module) {
            FAIL("0x" << std::hex << start + 1 << ": want " << name << " " << module << ", got "
                      << f.symbol << "+0x" << f.offset << " " << f.module);
        }
        ++checked;
    }
    CHECK(checked > 10000);
}

TEST_CASE("a module's section starts end the function before them", "[kallsyms]") {
    std::string text =
        "ffffffff81000000 T _stext\n"
        "ffffffff81000100 T other\n"
        "ffffffffc0900000 t virtio_probe\t[virtio_pci]\n"
        "ffffffffc0a01000 t leak_fn\t[memory_leak]\n";
    auto plain = Kallsyms::parse(text);
    // The second section's start is hidden (zero): it bounds nothing.
    auto bounded =
        Kallsyms::parse(text, {{0xffffffffc0a02000, "[memory_leak]"}, {0, "[memory_leak]"}});
    REQUIRE(plain);
    REQUIRE(bounded);
    CHECK(plain->symbolize(0xffffffffc0a02010).symbol == "leak_fn");  // the 64 KiB guess
    check_unknown(*bounded, 0xffffffffc0a02010);
    CHECK(bounded->symbolize(0xffffffffc0a01ff0).symbol == "leak_fn");
    CHECK(bounded->size() == plain->size());
    CHECK(bounded->module_starts() == plain->module_starts());

    // Another module's section start inside leak_fn (its freed init code, reused for
    // memory_leak's text) does not end leak_fn; a module without symbols bounds nothing.
    auto other = Kallsyms::parse(
        text, {{0xffffffffc0a01010, "[virtio_pci]"}, {0xffffffffc0a01020, "[no_symbols]"}});
    REQUIRE(other);
    CHECK(other->symbolize(0xffffffffc0a01030).symbol == "leak_fn");
}

TEST_CASE("module sections are read from /sys/module/NAME/sections", "[kallsyms]") {
    auto sections =
        Kallsyms::module_sections(std::string(LEAKWATCH_FIXTURES) + "/kallsyms/sys_module");
    std::vector<std::pair<uint64_t, std::string>> got;
    for (const auto& s : sections) got.emplace_back(s.start, s.module);
    std::sort(got.begin(), got.end());
    // virtio_pci's .rodata reads 0 (hidden) and the built-in "kernel" has no sections: left out.
    CHECK(got == std::vector<std::pair<uint64_t, std::string>>{
                     {0xffffffffc0200000, "[virtio_pci]"},
                     {0xffffffffc0a01000, "[lw_kleak]"},
                     {0xffffffffc0a01100, "[lw_kleak]"},
                     {0xffffffffc0a03000, "[lw_kleak]"},
                     {0xffffffffc0a05000, "[lw_kleak]"},
                     {0xffffffffc0a05800, "[lw_kleak]"},
                 });
    CHECK(Kallsyms::module_sections("/nonexistent").empty());
}

TEST_CASE("arm64 mapping symbols of modules name nothing", "[kallsyms]") {
    // As 5.10's and 6.1's /proc/kallsyms list an arm64 module: "$x" before the function at the
    // same address, and at the start of .exit.text.
    auto k = Kallsyms::parse(
        "ffff800008010000 T _stext\n"
        "ffffc7faa26fa000 t $x\t[lw_kleak]\n"
        "ffffc7faa26fa000 t lwk_free_held\t[lw_kleak]\n"
        "ffffc7faa26fa0a0 t lwk_leak_kmalloc\t[lw_kleak]\n"
        "ffffc7faa26fa488 t $x\t[lw_kleak]\n"
        "ffffc7faa26fa488 t lwk_exit\t[lw_kleak]\n");
    REQUIRE(k);
    CHECK(k->size() == 4);
    CHECK(k->symbolize(0xffffc7faa26fa010).symbol == "lwk_free_held");
    CHECK(k->symbolize(0xffffc7faa26fa490).symbol == "lwk_exit");
}
