#include <re2/re2.h>
#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>

#include "config/config.h"

using namespace leakwatch;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

// Joins lines with '\n' so that a test's line numbers are the positions in the list.
std::string lines(std::initializer_list<std::string_view> text) {
    std::string out;
    for (std::string_view line : text) {
        out += line;
        out += '\n';
    }
    return out;
}

std::string error_of(const std::string& yaml) {
    auto config = parse_config(yaml, "t.yaml");
    REQUIRE_FALSE(config.has_value());
    return config.error().message;
}

Config parsed(const std::string& yaml) {
    auto config = parse_config(yaml, "t.yaml");
    if (!config) FAIL(config.error().message);
    return *config;
}

// A private directory under /tmp, removed with its contents at the end of the test.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        char pattern[] = "/tmp/leakwatch-test-config-XXXXXX";
        REQUIRE(mkdtemp(pattern) != nullptr);
        path = pattern;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string write(const std::string& name, const std::string& text) const {
        std::ofstream(path / name) << text;
        return (path / name).string();
    }
};

}  // namespace

TEST_CASE("parse_size accepts bytes, binary and decimal units", "[config][size]") {
    CHECK(parse_size("0").value() == 0);
    CHECK(parse_size("4096").value() == 4096);
    CHECK(parse_size("16B").value() == 16);
    CHECK(parse_size("64KiB").value() == 64 * 1024);
    CHECK(parse_size("1MiB").value() == 1024 * 1024);
    CHECK(parse_size("2GiB").value() == 2ULL << 30);
    CHECK(parse_size("1TiB").value() == 1ULL << 40);
    CHECK(parse_size("4K").value() == 4096);
    CHECK(parse_size("3M").value() == 3 << 20);
    CHECK(parse_size("1G").value() == 1 << 30);
    CHECK(parse_size("10kB").value() == 10000);
    CHECK(parse_size("10KB").value() == 10000);
    CHECK(parse_size("5MB").value() == 5000000);
    CHECK(parse_size("1GB").value() == 1000000000);
    CHECK(parse_size("1.5MiB").value() == 1572864);
    CHECK(parse_size("0.5KiB").value() == 512);
    CHECK(parse_size("64 KiB").value() == 65536);
    CHECK(parse_size("  1MiB ").value() == 1048576);
    CHECK(parse_size("18446744073709551615").value() == UINT64_MAX);
}

TEST_CASE("parse_size rejects malformed, negative and overflowing sizes", "[config][size]") {
    for (std::string_view bad : {"", "abc", "12XB", "KiB", "1.5", "1.", ".", "1 2KiB", "1kib"}) {
        INFO(bad);
        auto size = parse_size(bad);
        REQUIRE_FALSE(size);
        CHECK_THAT(size.error().message, Contains("(use e.g. 64KiB, 1MiB)"));
    }
    auto negative = parse_size("-1KiB");
    REQUIRE_FALSE(negative);
    CHECK_THAT(negative.error().message, Contains("negative"));
    for (std::string_view huge :
         {"18446744073709551616", "16777216TiB", "99999999999999999999999",
          "9999999999999999999999999999TiB", "340282366920938463463374607431768211457"}) {
        INFO(huge);
        auto size = parse_size(huge);
        REQUIRE_FALSE(size);
        CHECK_THAT(size.error().message, Contains("too large"));
    }
}

TEST_CASE("parse_duration accepts units and combinations", "[config][duration]") {
    CHECK(parse_duration("250ms").value() == 250ms);
    CHECK(parse_duration("5s").value() == 5s);
    CHECK(parse_duration("2m").value() == 2min);
    CHECK(parse_duration("1h").value() == 1h);
    CHECK(parse_duration("1d").value() == 24h);
    CHECK(parse_duration("1h30m").value() == 90min);
    CHECK(parse_duration("1m30s500ms").value() == 90500ms);
    CHECK(parse_duration("1.5s").value() == 1500ms);
    CHECK(parse_duration("10 s").value() == 10s);
    CHECK(parse_duration("0s").value() == 0ms);
}

TEST_CASE("parse_duration rejects bare numbers, bad units and negatives", "[config][duration]") {
    auto bare = parse_duration("5");
    REQUIRE_FALSE(bare);
    CHECK_THAT(bare.error().message, Contains("no unit"));
    CHECK_THAT(bare.error().message, Contains("use e.g. 5s"));
    for (std::string_view bad : {"", "s", "5x", "5sec", "1h30", "abc", "5.s"}) {
        INFO(bad);
        auto duration = parse_duration(bad);
        REQUIRE_FALSE(duration);
        CHECK_THAT(duration.error().message, Contains("use e.g. 5s"));
    }
    auto negative = parse_duration("-5s");
    REQUIRE_FALSE(negative);
    CHECK_THAT(negative.error().message, Contains("negative"));
    auto wrapped = parse_duration("99999999999999999999999999999999d");
    REQUIRE_FALSE(wrapped);
    CHECK_THAT(wrapped.error().message, Contains("too long"));
    auto huge = parse_duration("999999999999999999d");
    REQUIRE_FALSE(huge);
    CHECK_THAT(huge.error().message, Contains("too long"));
}

TEST_CASE("a full config parses to the values written", "[config]") {
    Config config = parsed(lines({
        "listen_address: \"127.0.0.1:9100\"",      // 1
        "interval: 2s",                            // 2
        "kernel:",                                 // 3
        "  enabled: false",                        // 4
        "watch:",                                  // 5
        "  - name: redis",                         // 6
        "    match:",                              // 7
        "      comm: redis-server",                // 8
        "      exe: /usr/bin/redis-server",        // 9
        "    allocator:",                          // 10
        "      library: libjemalloc.so.2",         // 11
        "      symbol_prefix: je_",                // 12
        "    min_size: 64KiB",                     // 13
        "    max_size: 1MiB",                      // 14
        "    min_age: 30s",                        // 15
        "  - name: java.app-1",                    // 16
        "    match:",                              // 17
        "      pid: 4242",                         // 18
        "      cmdline: 'java .*-jar app\\.jar'",  // 19
        "limits:",                                 // 20
        "  live_allocations: 500000",              // 21
        "  stacks: 32768",                         // 22
        "  stack_totals: 100000",                  // 23
        "  processes: 64",                         // 24
        "  threads: 4096",                         // 25
        "  top_stacks: 50",                        // 26
    }));
    CHECK(config.source == "t.yaml");
    CHECK(config.listen_address == "127.0.0.1:9100");
    CHECK(config.interval == 2s);
    CHECK_FALSE(config.kernel.enabled);
    REQUIRE(config.watch.size() == 2);

    const WatchRule& redis = config.watch[0];
    CHECK(redis.name == "redis");
    CHECK(redis.line == 6);
    CHECK(redis.match.comm == "redis-server");
    CHECK(redis.match.exe == "/usr/bin/redis-server");
    CHECK_FALSE(redis.match.pid.has_value());
    CHECK_FALSE(redis.match.cmdline.has_value());
    CHECK(redis.match.cmdline_regex == nullptr);
    CHECK(redis.allocator.library == "libjemalloc.so.2");
    CHECK(redis.allocator.symbol_prefix == "je_");
    CHECK(redis.min_size == 65536);
    CHECK(redis.max_size == 1048576);
    CHECK(redis.min_age == 30s);

    const WatchRule& java = config.watch[1];
    CHECK(java.name == "java.app-1");
    CHECK(java.line == 16);
    CHECK_FALSE(java.match.comm.has_value());
    CHECK_FALSE(java.match.exe.has_value());
    CHECK(java.match.pid == 4242);
    CHECK(java.match.cmdline == "java .*-jar app\\.jar");
    REQUIRE(java.match.cmdline_regex != nullptr);
    CHECK(RE2::PartialMatch("/usr/bin/java -Xmx1g -jar app.jar", *java.match.cmdline_regex));
    CHECK_FALSE(RE2::PartialMatch("java -jar appXjar", *java.match.cmdline_regex));
    CHECK(java.allocator.library == "libc");
    CHECK(java.allocator.symbol_prefix.empty());
    CHECK(java.min_size == 0);
    CHECK(java.max_size == UINT64_MAX);
    CHECK(java.min_age == 0ms);

    CHECK(config.limits.live_allocations == 500000);
    CHECK(config.limits.stacks == 32768);
    CHECK(config.limits.stack_totals == 100000);
    CHECK(config.limits.processes == 64);
    CHECK(config.limits.threads == 4096);
    CHECK(config.limits.top_stacks == 50);
}

TEST_CASE("an empty file or an empty watch list is valid", "[config]") {
    for (const std::string& yaml :
         {std::string(), std::string("# nothing but a comment\n"), lines({"watch: []"}),
          lines({"watch:"}), lines({"kernel:", "limits:"})}) {
        INFO(yaml);
        Config config = parsed(yaml);
        CHECK(config.watch.empty());
        CHECK(config.interval == 5s);
        CHECK(config.listen_address == ":10071");
        CHECK(config.source == "t.yaml");
        CHECK(config.limits.top_stacks == Limits{}.top_stacks);
    }
}

TEST_CASE("default_config is the documented default", "[config]") {
    Config config = default_config();
    CHECK(config.source == "<built-in>");
    CHECK(config.interval == 5s);
    CHECK(config.listen_address == ":10071");
    CHECK_FALSE(config.kernel.enabled);
    CHECK(config.watch.empty());
    CHECK(config.limits.live_allocations == 262144);
    CHECK(config.limits.stacks == 16384);
    CHECK(config.limits.stack_totals == 65536);
    CHECK(config.limits.processes == 1024);
    CHECK(config.limits.threads == 65536);
    CHECK(config.limits.top_stacks == 20);
}

TEST_CASE("listen_address accepts host:port forms", "[config]") {
    for (std::string_view address : {":10071", "0.0.0.0:1", "localhost:65535", "[::1]:10071"}) {
        INFO(address);
        Config config = parsed("listen_address: \"" + std::string(address) + "\"\n");
        CHECK(config.listen_address == address);
    }
}

TEST_CASE("a bad port names the key and line", "[config][errors]") {
    std::string message = error_of(lines({"interval: 5s", "listen_address: \":70000\""}));
    CHECK_THAT(message, Contains("t.yaml:2: listen_address: port 70000 is out of range 1..65535"));
    CHECK_THAT(error_of(lines({"listen_address: \":0\""})), Contains("t.yaml:1: listen_address:"));
    CHECK_THAT(error_of(lines({"listen_address: \":http\""})), Contains("is not a number"));
    CHECK_THAT(error_of(lines({"listen_address: localhost"})), Contains("has no port"));
    CHECK_THAT(error_of(lines({"listen_address: \"::1:80\""})), Contains("[::1]:10071"));
}

TEST_CASE("unknown keys are errors with their line and a suggestion", "[config][errors]") {
    std::string top = error_of(lines({"interval: 5s", "", "intervall: 10s"}));
    CHECK_THAT(top, Contains("t.yaml:3: intervall: unknown key (did you mean interval?)"));

    std::string nested = error_of(lines({
        "watch:",               // 1
        "  - name: a",          // 2
        "    match:",           // 3
        "      comm: a",        // 4
        "      cmd_line: 'x'",  // 5
    }));
    CHECK_THAT(nested, Contains("t.yaml:5: watch[0].match.cmd_line: unknown key"));
    CHECK_THAT(nested, Contains("did you mean cmdline?"));
    CHECK_THAT(nested, Contains("known keys: comm, exe, pid, cmdline, uid, cgroup, unit"));

    std::string far = error_of(lines({"limits:", "  bananas: 3"}));
    CHECK_THAT(far, Contains("t.yaml:2: limits.bananas: unknown key;"));
    CHECK_THAT(far, !Contains("did you mean"));

    CHECK_THAT(error_of(lines({"kernel:", "  enable: false"})),
               Contains("t.yaml:2: kernel.enable: unknown key (did you mean enabled?)"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {pid: 1}", "    minsize: 1"})),
               Contains("t.yaml:4: watch[0].minsize: unknown key (did you mean min_size?)"));
    CHECK_THAT(
        error_of(lines({"watch:", "  - name: a", "    match: {pid: 1}",
                        "    allocator:", "      libary: libc"})),
        Contains("t.yaml:5: watch[0].allocator.libary: unknown key (did you mean library?)"));
}

TEST_CASE("a key given twice is an error naming both lines", "[config][errors]") {
    std::string message = error_of(lines({"interval: 5s", "watch: []", "interval: 10s"}));
    CHECK_THAT(message, Contains("t.yaml:3: interval: duplicate key (first set at line 1)"));
}

TEST_CASE("wrong types are errors naming the key and line", "[config][errors]") {
    CHECK_THAT(error_of(lines({"interval: 5s", "watch: redis"})),
               Contains("t.yaml:2: watch: expected a sequence of rules, got \"redis\""));
    CHECK_THAT(error_of(lines({"listen_address:", "  - :80"})),
               Contains("t.yaml:1: listen_address: expected a string, got a sequence"));
    CHECK_THAT(error_of(lines({"limits:", "  stacks: abc"})),
               Contains("t.yaml:2: limits.stacks: \"abc\" is not a positive integer"));
    CHECK_THAT(error_of(lines({"limits:", "  stacks: [1]"})),
               Contains("t.yaml:2: limits.stacks: expected a positive integer, got a sequence"));
    CHECK_THAT(error_of(lines({"limits: 5"})),
               Contains("t.yaml:1: limits: expected a mapping, got \"5\""));
    CHECK_THAT(error_of(lines({"kernel:", "  enabled: maybe"})),
               Contains("t.yaml:2: kernel.enabled: expected true or false, got \"maybe\""));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {pid: abc}"})),
               Contains("t.yaml:3: watch[0].match.pid: \"abc\" is not a positive integer"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match:", "      comm: {x: 1}"})),
               Contains("t.yaml:4: watch[0].match.comm: expected a string, got a mapping"));
    CHECK_THAT(error_of(lines({"watch:", "  - redis"})),
               Contains("t.yaml:2: watch[0]: expected a rule"));
    CHECK_THAT(
        error_of(lines({"interval: 5s", "watch:", "  - name: a", "    match: {pid: 1}", "  -"})),
        Contains("t.yaml:2: watch[1]: expected a rule (a mapping with name and match), got "
                 "nothing"));
    CHECK_THAT(error_of(lines({"- a", "- b"})),
               Contains("t.yaml:1: (top level): expected a mapping"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {pid: 1}", "    min_size:"})),
               Contains("t.yaml:4: watch[0].min_size: expected a size such as 64KiB, got nothing"));
}

TEST_CASE("YAML syntax errors report the line", "[config][errors]") {
    CHECK_THAT(error_of(lines({"interval: 5s", "watch: [a, b"})),
               Contains("t.yaml:3: invalid YAML"));
    CHECK_THAT(error_of(lines({"interval: 5s", "\tlimits: {}"})),
               Contains("t.yaml:2: invalid YAML"));
    CHECK_THAT(error_of(lines({"interval: 5s", "---", "interval: 6s"})),
               Contains("t.yaml:3: a second YAML document"));
}

TEST_CASE("YAML on which the parser would never end is an error, at once", "[config][errors]") {
    // Found by tests/fuzz/fuzz_config: yaml-cpp 0.7 emits null nodes for ever on a file that
    // is only "," (the daemon hung at start, or at a reload, allocating without end).
    for (const char* text : {",", "interval: 5s\n,\n", ", debug, info"}) {
        const auto start = std::chrono::steady_clock::now();
        CHECK_THAT(error_of(text), Contains("invalid YAML"));
        CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));
    }
}

TEST_CASE("a bad size names the key and line", "[config][errors]") {
    std::string message = error_of(lines({
        "watch:",                // 1
        "  - name: a",           // 2
        "    match: {comm: a}",  // 3
        "  - name: b",           // 4
        "    match: {comm: b}",  // 5
        "    min_size: 12XB",    // 6
    }));
    CHECK_THAT(
        message,
        Contains("t.yaml:6: watch[1].min_size: \"12XB\" is not a size (use e.g. 64KiB, 1MiB)"));
}

TEST_CASE("a negative size is an error", "[config][errors]") {
    std::string message =
        error_of(lines({"watch:", "  - name: a", "    match: {comm: a}", "    max_size: -4KiB"}));
    CHECK_THAT(message, Contains("t.yaml:4: watch[0].max_size: \"-4KiB\" is negative"));
}

TEST_CASE("unwind: auto by default, or frame-pointer, or dwarf", "[config]") {
    Config config = parsed(lines(
        {"watch:", "  - name: a", "    match: {comm: a}", "    unwind: dwarf", "  - name: b",
         "    match: {comm: b}", "  - name: c", "    match: {comm: c}", "    unwind: frame-pointer",
         "  - name: d", "    match: {comm: d}", "    unwind: auto"}));
    CHECK(config.watch[0].unwind == WatchRule::Unwind::kDwarf);
    CHECK(config.watch[1].unwind == WatchRule::Unwind::kAuto);
    CHECK(config.watch[2].unwind == WatchRule::Unwind::kFramePointer);
    CHECK(config.watch[3].unwind == WatchRule::Unwind::kAuto);
    CHECK_THAT(
        error_of(lines({"watch:", "  - name: a", "    match: {comm: a}", "    unwind: cfi"})),
        Contains("t.yaml:4: watch[0].unwind: unwind must be auto, frame-pointer or dwarf, "
                 "not \"cfi\""));
}

TEST_CASE("jvm_attach: on by default, off per rule", "[config]") {
    Config config = parsed(lines({"watch:", "  - name: a", "    match: {comm: java}",
                                  "    jvm_attach: false", "  - name: b", "    match: {comm: b}"}));
    CHECK_FALSE(config.watch[0].jvm_attach);
    CHECK(config.watch[1].jvm_attach);
    CHECK_THAT(
        error_of(lines({"watch:", "  - name: a", "    match: {comm: a}", "    jvm_attach: maybe"})),
        Contains("t.yaml:4: watch[0].jvm_attach"));
}

TEST_CASE("sample_bytes: a size up to 64MiB, 0 for every allocation, absent: the mode's",
          "[config]") {
    Config config = parsed(lines({"watch:", "  - name: a", "    match: {comm: a}",
                                  "    sample_bytes: 1MiB", "  - name: b", "    match: {comm: b}",
                                  "  - name: c", "    match: {comm: c}", "    sample_bytes: 0"}));
    CHECK(config.watch[0].sample_bytes == 1024 * 1024);
    CHECK(config.watch[1].sample_bytes == 512 * 1024);  // escalate: escalation.sample_bytes
    CHECK(config.watch[2].sample_bytes == 0);
    CHECK(
        parsed(lines({"watch:", "  - name: a", "    match: {comm: a}", "    sample_bytes: 64MiB"}))
            .watch[0]
            .sample_bytes == 64ull << 20);
    CHECK_THAT(error_of(lines(
                   {"watch:", "  - name: a", "    match: {comm: a}", "    sample_bytes: 65MiB"})),
               Contains("t.yaml:4: watch[0].sample_bytes: sample_bytes \"65MiB\" is larger than "
                        "64MiB"));
    CHECK_THAT(error_of(lines(
                   {"watch:", "  - name: a", "    match: {comm: a}", "    sample_bytes: lots"})),
               Contains("t.yaml:4: watch[0].sample_bytes:"));
    CHECK_THAT(
        error_of(lines({"watch:", "  - name: a", "    match: {comm: a}", "    sample_bytes: [1]"})),
        Contains("t.yaml:4: watch[0].sample_bytes:"));
}

TEST_CASE("tracking: escalate by default, sampled or full; each mode's sample_bytes", "[config]") {
    Config config = parsed(lines({"escalation:", "  sample_bytes: 64KiB", "watch:", "  - name: a",
                                  "    match: {comm: a}", "  - name: b", "    match: {comm: b}",
                                  "    tracking: sampled", "  - name: c", "    match: {comm: c}",
                                  "    tracking: full", "  - name: d", "    match: {comm: d}",
                                  "    tracking: escalate", "    sample_bytes: 0"}));
    CHECK(config.watch[0].tracking == WatchRule::Tracking::kEscalate);
    CHECK(config.watch[0].sample_bytes == 64 * 1024);  // after escalation, wherever it is
    CHECK(config.watch[1].tracking == WatchRule::Tracking::kSampled);
    CHECK(config.watch[1].sample_bytes == 512 * 1024);
    CHECK(config.watch[2].tracking == WatchRule::Tracking::kFull);
    CHECK(config.watch[2].sample_bytes == 0);
    CHECK(config.watch[3].tracking == WatchRule::Tracking::kEscalate);
    CHECK(config.watch[3].sample_bytes == 0);
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {comm: a}",
                               "    tracking: full", "    sample_bytes: 4KiB"})),
               Contains("t.yaml:5: watch[0].sample_bytes: tracking: full records every "
                        "allocation"));
    CHECK_THAT(
        error_of(lines({"watch:", "  - name: a", "    match: {comm: a}", "    tracking: always"})),
        Contains("t.yaml:4: watch[0].tracking: tracking must be escalate, sampled or "
                 "full, not \"always\""));
    CHECK_THAT(error_of(lines({"kernel:", "  tracking: sampled"})),
               Contains("t.yaml:2: kernel.tracking: tracking must be escalate or full"));
    CHECK(parsed(lines({"kernel:", "  tracking: full"})).kernel.tracking ==
          WatchRule::Tracking::kFull);
    CHECK(default_config().kernel.tracking == WatchRule::Tracking::kEscalate);
}

TEST_CASE("escalation: duration, max_processes, sample_bytes, watch_sample_bytes", "[config]") {
    Config config = parsed(lines({"escalation:", "  duration: 10m", "  max_processes: 2",
                                  "  sample_bytes: 0", "  watch_sample_bytes: 64KiB"}));
    CHECK(config.escalation.duration == std::chrono::minutes(10));
    CHECK(config.escalation.max_processes == 2);
    CHECK(config.escalation.sample_bytes == 0);
    CHECK(config.escalation.watch_sample_bytes == 64 * 1024);
    const Escalation defaults = default_config().escalation;
    CHECK(defaults.duration == std::chrono::minutes(30));
    CHECK(defaults.max_processes == 4);
    CHECK(defaults.sample_bytes == 512 * 1024);
    CHECK(defaults.watch_sample_bytes == 512 * 1024);
    CHECK_THAT(error_of(lines({"escalation:", "  watch_sample_bytes: 0"})),
               Contains("t.yaml:2: escalation.watch_sample_bytes:"));
    CHECK_THAT(error_of(lines({"escalation:", "  spare: 1"})),
               Contains("t.yaml:2: escalation.spare:"));
}

TEST_CASE("python: max_frames 0 to 32, 16 by default", "[config]") {
    CHECK(default_config().python.max_frames == 16);
    CHECK(parsed(lines({"python:", "  max_frames: 32"})).python.max_frames == 32);
    CHECK(parsed(lines({"python:", "  max_frames: 0"})).python.max_frames == 0);
    CHECK_THAT(error_of(lines({"python:", "  max_frames: 33"})),
               Contains("t.yaml:2: python.max_frames:"));
    CHECK_THAT(error_of(lines({"python:", "  max_frames: -1"})),
               Contains("t.yaml:2: python.max_frames:"));
    CHECK_THAT(error_of(lines({"python:", "  depth: 1"})), Contains("t.yaml:2: python.depth:"));
}

TEST_CASE("min_size above max_size is an inverted range", "[config][errors]") {
    std::string message = error_of(lines({
        "watch:",                // 1
        "  - name: a",           // 2
        "    match: {comm: a}",  // 3
        "    max_size: 64KiB",   // 4
        "    min_size: 1MiB",    // 5
    }));
    CHECK_THAT(message, Contains("t.yaml:5: watch[0].min_size: inverted range"));
    CHECK_THAT(message, Contains("\"1MiB\""));
    CHECK_THAT(message, Contains("max_size \"64KiB\" (line 4)"));
    // Equal bounds select exactly one size: allowed.
    Config config = parsed(lines({"watch:", "  - name: a", "    match: {comm: a}",
                                  "    min_size: 4KiB", "    max_size: 4096"}));
    CHECK(config.watch[0].min_size == 4096);
    CHECK(config.watch[0].max_size == 4096);
}

TEST_CASE("a bad duration names the key and line", "[config][errors]") {
    CHECK_THAT(error_of(lines({"listen_address: ':1'", "interval: 5"})),
               Contains("t.yaml:2: interval: \"5\" has no unit (use e.g. 5s"));
    CHECK_THAT(error_of(lines({"interval: 50ms"})),
               Contains("t.yaml:1: interval: \"50ms\" is shorter than the minimum 100ms"));
    CHECK_THAT(
        error_of(lines({"watch:", "  - name: a", "    match: {comm: a}", "    min_age: 3y"})),
        Contains("t.yaml:4: watch[0].min_age: \"3y\" is not a duration"));
}

TEST_CASE("bad regex in cmdline carries the regex error", "[config][errors]") {
    std::string message =
        error_of(lines({"watch:", "  - name: a", "    match:", "      cmdline: 'java (['"}));
    CHECK_THAT(message, Contains("t.yaml:4: watch[0].match.cmdline: \"java ([\" is not a valid "
                                 "regex (RE2 syntax): "));
    // The text after the colon comes from RE2 and is not empty.
    const std::string after = "(RE2 syntax): ";
    CHECK(message.size() > message.find(after) + after.size());
    // What std::regex took and RE2 does not: backreferences and lookahead.
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match:", "      cmdline: '(a)\\1'"})),
               Contains("is not a valid regex (RE2 syntax)"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match:", "      cmdline: 'a(?=b)'"})),
               Contains("is not a valid regex (RE2 syntax)"));
}

TEST_CASE("a duplicate rule name names both lines", "[config][errors]") {
    std::string message = error_of(lines({
        "watch:",                // 1
        "  - name: app",         // 2
        "    match: {comm: a}",  // 3
        "  - name: other",       // 4
        "    match: {comm: b}",  // 5
        "  - match: {comm: c}",  // 6
        "    name: app",         // 7
    }));
    CHECK_THAT(
        message,
        Contains("t.yaml:7: watch[2].name: duplicate rule name \"app\" (also used at line 2)"));
}

TEST_CASE("rule names are required, plain and not reserved", "[config][errors]") {
    CHECK_THAT(error_of(lines({"watch:", "  - match: {comm: a}"})),
               Contains("t.yaml:2: watch[0]: missing required key name"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: ''", "    match: {comm: a}"})),
               Contains("t.yaml:2: watch[0].name: must not be empty"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: 'my app'", "    match: {comm: a}"})),
               Contains("t.yaml:2: watch[0].name: \"my app\" may contain only"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: kernel", "    match: {comm: a}"})),
               Contains("t.yaml:2: watch[0].name: \"kernel\" is reserved"));
}

TEST_CASE("a rule without criteria is an error", "[config][errors]") {
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {}"})),
               Contains("t.yaml:3: watch[0].match: give at least one of comm, exe, pid, cmdline, "
                        "uid, cgroup, unit"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match:"})),
               Contains("t.yaml:3: watch[0].match: expected a mapping"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    min_size: 1"})),
               Contains("t.yaml:2: watch[0]: missing required key match"));
}

TEST_CASE("matcher values are checked", "[config][errors]") {
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {comm: a-very-long-command}"})),
               Contains("t.yaml:3: watch[0].match.comm: \"a-very-long-command\" must be 1 to 15"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {exe: bin/app}"})),
               Contains("t.yaml:3: watch[0].match.exe: \"bin/app\" is not an absolute path"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {pid: 0}"})),
               Contains("t.yaml:3: watch[0].match.pid: must be at least 1"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {pid: -3}"})),
               Contains("t.yaml:3: watch[0].match.pid: \"-3\" is negative"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {pid: 99999999999}"})),
               Contains("t.yaml:3: watch[0].match.pid: 99999999999 is above the maximum"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {comm: a}",
                               "    allocator:", "      symbol_prefix: 'je-'"})),
               Contains("t.yaml:5: watch[0].allocator.symbol_prefix: \"je-\" is not a symbol"));
}

TEST_CASE("rules by uid, cgroup and systemd unit", "[config]") {
    Config config = parsed(lines({
        "watch:",                                           // 1
        "  - name: web",                                    // 2
        "    match:",                                       // 3
        "      unit: nginx.service",                        // 4
        "      uid: 33",                                    // 5
        "  - name: slice",                                  // 6
        "    match: {cgroup: '/system.slice/*', comm: x}",  // 7
        "  - name: root",                                   // 8
        "    match: {uid: root, unit: 'app-*.service'}",    // 9
    }));
    REQUIRE(config.watch.size() == 3);
    CHECK(config.watch[0].match.unit == "nginx.service");
    CHECK(config.watch[0].match.uid == 33u);
    CHECK_FALSE(config.watch[0].match.cgroup.has_value());
    CHECK(config.watch[1].match.cgroup == "/system.slice/*");
    CHECK(config.watch[1].match.comm == "x");
    CHECK(config.watch[2].match.uid == 0u);  // a user name, looked up
    CHECK(config.watch[2].match.unit == "app-*.service");

    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {uid: -1}"})),
               Contains("t.yaml:3: watch[0].match.uid: \"-1\" is negative"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {uid: 4294967295}"})),
               Contains("is above the largest uid"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {uid: no-such-user-lw}"})),
               Contains("t.yaml:3: watch[0].match.uid: \"no-such-user-lw\" is neither a uid nor "
                        "a known user name"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {cgroup: system.slice}"})),
               Contains("t.yaml:3: watch[0].match.cgroup: \"system.slice\" is not a cgroup path"));
    CHECK_THAT(error_of(lines({"watch:", "  - name: a", "    match: {unit: 'a/b.service'}"})),
               Contains("t.yaml:3: watch[0].match.unit: \"a/b.service\" is not a unit name"));
}

TEST_CASE("limits.file_size and expose_kernel_addresses", "[config]") {
    Config defaults = parsed("watch: []\n");
    CHECK(defaults.limits.file_size == 512ull << 20);
    CHECK_FALSE(defaults.expose_kernel_addresses);
    Config config =
        parsed(lines({"expose_kernel_addresses: true", "limits:", "  file_size: 2GiB"}));
    CHECK(config.expose_kernel_addresses);
    CHECK(config.limits.file_size == 2ull << 30);
    CHECK_THAT(error_of(lines({"limits:", "  file_size: 100KiB"})),
               Contains("t.yaml:2: limits.file_size: \"100KiB\" is outside 1MiB..64GiB"));
    CHECK_THAT(error_of(lines({"expose_kernel_addresses: sometimes"})),
               Contains("t.yaml:1: expose_kernel_addresses: expected true or false"));
}

TEST_CASE("a cmdline pattern that would blow std::regex's stack compiles, and is bounded",
          "[config]") {
    auto re = compile_cmdline("(a|b)*c");
    REQUIRE(re.has_value());
    // A pattern whose automaton exceeds the memory bound is refused, not compiled.
    std::string huge = "(";
    for (int i = 0; i < 2000; i++) huge += "a{1,1000}";
    huge += ")";
    auto too_big = compile_cmdline(huge);
    REQUIRE_FALSE(too_big.has_value());
    CHECK_THAT(too_big.error().message, Contains("is not a valid regex (RE2 syntax)"));
}

TEST_CASE("limits must be positive and bounded", "[config][errors]") {
    CHECK_THAT(error_of(lines({"limits:", "  stacks: 1024", "  top_stacks: 0"})),
               Contains("t.yaml:3: limits.top_stacks: must be at least 1"));
    CHECK_THAT(error_of(lines({"limits:", "  top_stacks: 1001"})),
               Contains("t.yaml:2: limits.top_stacks: 1001 is above the maximum of 1000"));
    CHECK_THAT(error_of(lines({"limits:", "  live_allocations: 16777217"})),
               Contains("t.yaml:2: limits.live_allocations: 16777217 is above the maximum"));
    CHECK_THAT(error_of(lines({"limits:", "  stacks: 1048577"})),
               Contains("t.yaml:2: limits.stacks: 1048577 is above the maximum"));
    CHECK_THAT(error_of(lines({"limits:", "  processes: -1"})),
               Contains("t.yaml:2: limits.processes: \"-1\" is negative"));
    CHECK_THAT(error_of(lines({"limits:", "  process_share: 0%"})),
               Contains("t.yaml:2: limits.process_share: \"0%\" is out of range"));
    CHECK_THAT(error_of(lines({"limits:", "  process_share: 101%"})),
               Contains("t.yaml:2: limits.process_share: \"101%\" is out of range"));
    CHECK_THAT(error_of(lines({"limits:", "  process_share: 50"})),
               Contains("t.yaml:2: limits.process_share: \"50\" is not a percentage"));
    CHECK(parsed(lines({"limits:", "  process_share: 25%"})).limits.process_share == 25);
    CHECK(parsed(lines({"limits:", "  process_share: 100%"})).limits.process_share == 100);
    CHECK(default_config().limits.process_share == 50);
    Config config = parsed(lines({"limits:", "  live_allocations: 16777216", "  stacks: 1048576"}));
    CHECK(config.limits.live_allocations == 16777216);
    CHECK(config.limits.stacks == 1048576);
    CHECK(config.limits.top_stacks == 20);  // untouched keys keep their defaults
}

TEST_CASE("kernel section: kinds, sizes and movable pages", "[config][kernel]") {
    auto config =
        parsed(lines({"kernel:", "  enabled: true", "  kinds: [kmalloc, page]", "  min_size: 1KiB",
                      "  max_size: 4MiB", "  include_movable_pages: true"}));
    CHECK(config.kernel.enabled);
    CHECK(config.kernel.kinds == std::array<bool, 4>{true, false, true, false});
    CHECK(config.kernel.min_size == 1024);
    CHECK(config.kernel.max_size == 4 << 20);
    CHECK(config.kernel.include_movable_pages);
    CHECK_FALSE(parsed(lines({"kernel:", "  enabled: no"})).kernel.enabled);
    CHECK(parsed(lines({"interval: 5s"})).kernel.kinds ==
          std::array<bool, 4>{true, true, true, true});
    CHECK_THAT(error_of(lines({"kernel:", "  kinds:", "    - kmalloc", "    - slab"})),
               Contains("t.yaml:4: kernel.kinds: unknown kind \"slab\""));
    CHECK_THAT(error_of(lines({"kernel:", "  kinds: page"})), Contains("t.yaml:2: kernel.kinds:"));
    CHECK_THAT(error_of(lines({"kernel:", "  min_size: 2MiB", "  max_size: 1MiB"})),
               Contains("t.yaml:2: kernel.min_size: inverted range"));
    CHECK_THAT(error_of(lines({"limits:", "  kernel_stacks: 0"})),
               Contains("t.yaml:2: limits.kernel_stacks"));
}

TEST_CASE("load_config reads a file and names it in messages", "[config][file]") {
    TempDir dir;
    std::string good = dir.write("good.yaml", lines({"interval: 10s"}));
    auto config = load_config(good);
    REQUIRE(config.has_value());
    CHECK(config->interval == 10s);
    CHECK(config->source == good);

    std::string bad = dir.write("bad.yaml", lines({"interval: 10s", "watch: 3"}));
    auto error = load_config(bad);
    REQUIRE_FALSE(error);
    CHECK_THAT(error.error().message, Contains(bad + ":2: watch:"));
}

TEST_CASE("a missing config file is an error naming the path", "[config][file][errors]") {
    TempDir dir;
    std::string path = (dir.path / "absent.yaml").string();
    auto config = load_config(path);
    REQUIRE_FALSE(config);
    CHECK_THAT(config.error().message, Contains(path));
    CHECK_THAT(config.error().message, Contains("No such file or directory"));
}

TEST_CASE("an unreadable config file is an error naming the path", "[config][file][errors]") {
    // A directory cannot be read as a file even by root, unlike a chmod 000 file.
    TempDir dir;
    auto config = load_config(dir.path.string());
    REQUIRE_FALSE(config);
    CHECK_THAT(config.error().message, Contains(dir.path.string()));
    CHECK_THAT(config.error().message, Contains("Is a directory"));
}

TEST_CASE("the shipped config/leakwatch.yaml is valid", "[config][file]") {
    auto config = load_config(LEAKWATCH_FIXTURES "/../../config/leakwatch.yaml");
    if (!config) FAIL(config.error().message);
    CHECK(config->watch.empty());
    CHECK(config->interval == 5s);
    CHECK(config->listen_address == ":10071");
    CHECK_FALSE(config->kernel.enabled);
    CHECK(config->limits.live_allocations == Limits{}.live_allocations);
    CHECK(config->limits.stacks == Limits{}.stacks);
    CHECK(config->limits.stack_totals == Limits{}.stack_totals);
    CHECK(config->limits.processes == Limits{}.processes);
    CHECK(config->limits.threads == Limits{}.threads);
    CHECK(config->limits.top_stacks == Limits{}.top_stacks);
}

TEST_CASE("the commented-out examples in config/leakwatch.yaml are valid", "[config][file]") {
    // An example block starts with "#key:" and runs over the following lines that are "#"
    // or "#  ..."; keeping it parseable keeps the reference honest.
    std::ifstream file(LEAKWATCH_FIXTURES "/../../config/leakwatch.yaml");
    REQUIRE(file.good());
    std::string examples;
    bool in_block = false;
    for (std::string line; std::getline(file, line);) {
        bool starts_block = line.size() > 1 && line[0] == '#' &&
                            (std::islower(static_cast<unsigned char>(line[1])) || line[1] == '_');
        bool continues_block = line == "#" || line.starts_with("#  ");
        in_block = starts_block || (in_block && continues_block);
        if (in_block) examples += line.substr(1) + "\n";
    }
    auto config = parse_config(examples, "examples");
    if (!config) FAIL(config.error().message << "\n" << examples);
    REQUIRE(config->watch.size() == 7);
    const WatchRule& redis = config->watch[0];
    CHECK(redis.name == "redis");
    CHECK(redis.match.comm == "redis-server");
    CHECK(redis.allocator.library == "libjemalloc.so.2");
    CHECK(redis.min_size == 64);
    CHECK(redis.max_size == 1048576);
    CHECK(redis.min_age == 30s);
    CHECK(config->watch[1].match.exe == "/usr/local/bin/billing-api");
    CHECK(config->watch[1].unwind == WatchRule::Unwind::kAuto);
    CHECK(config->watch[2].match.comm == "java");
    REQUIRE(config->watch[2].match.cmdline_regex != nullptr);
    CHECK(RE2::PartialMatch("/usr/bin/java -Xmx2g -jar /opt/orders/orders-1.4.2.jar --port 80",
                            *config->watch[2].match.cmdline_regex));
    const Match& web = config->watch[3].match;
    CHECK(web.unit == "nginx.service");
    REQUIRE(web.uid.has_value());
    CHECK(*web.uid == 33);  // Debian's www-data
    CHECK(config->watch[4].match.cgroup == "/kubepods.slice/*");
    CHECK(config->watch[5].allocator.library == "exe");
    CHECK(config->watch[6].match.pid == 4242);
}

TEST_CASE("log_level takes the spdlog level names", "[config]") {
    CHECK(parsed(lines({"log_level: debug"})).log_level == "debug");
    CHECK(parsed(lines({"interval: 5s"})).log_level == "info");
    CHECK_THAT(error_of(lines({"interval: 5s", "log_level: loud"})),
               Contains("t.yaml:2: log_level: \"loud\" is not a log level"));
}

TEST_CASE("leak_detection section", "[config][detection]") {
    auto config =
        parsed(lines({"leak_detection:", "  window: 20s", "  min_rate: 4KiB", "  min_growth: 2MiB",
                      "  confidence: 0.95", "  max_series: 500", "  enabled: false"}));
    CHECK(config.leak_detection.window == std::chrono::seconds(20));
    CHECK(config.leak_detection.min_rate == 4096.0);
    CHECK(config.leak_detection.min_growth == 2u << 20);
    CHECK(config.leak_detection.confidence == 0.95);
    CHECK(config.leak_detection.max_series == 500);
    CHECK_FALSE(config.leak_detection.enabled);
    auto defaults = parsed(lines({"interval: 5s"})).leak_detection;
    CHECK(defaults.enabled);
    CHECK(defaults.window == std::chrono::minutes(10));
    CHECK_THAT(error_of(lines({"leak_detection:", "  window: 5s"})),
               Contains("t.yaml:2: leak_detection.window: the window must be at least 10s"));
    CHECK_THAT(error_of(lines({"leak_detection:", "  confidence: 1.5"})),
               Contains("t.yaml:2: leak_detection.confidence:"));
    CHECK_THAT(error_of(lines({"leak_detection:", "  confidence: high"})),
               Contains("t.yaml:2: leak_detection.confidence:"));
    CHECK_THAT(error_of(lines({"leak_detection:", "  min_rate: fast"})),
               Contains("t.yaml:2: leak_detection.min_rate:"));
    CHECK_THAT(error_of(lines({"leak_detection:", "  windw: 1m"})),
               Contains("t.yaml:2: leak_detection.windw: unknown key"));
}

TEST_CASE("the detection window must cover 16 intervals", "[config][detection]") {
    CHECK_THAT(error_of(lines({"interval: 5s", "leak_detection:", "  window: 60s"})),
               Contains("t.yaml:2: leak_detection.window: the window (60000ms) must cover at "
                        "least 16 intervals (80000ms)"));
    CHECK(
        parsed(lines({"interval: 1s", "leak_detection:", "  window: 20s"})).leak_detection.window ==
        std::chrono::seconds(20));
}

TEST_CASE("limits.symbol_files and symbol_cache_entries bound the symbolizer's caches",
          "[config]") {
    CHECK(default_config().limits.symbol_files == 512);
    CHECK(default_config().limits.symbol_cache_entries == 65536);
    Config c = parsed(lines({"limits:", "  symbol_files: 64", "  symbol_cache_entries: 1000"}));
    CHECK(c.limits.symbol_files == 64);
    CHECK(c.limits.symbol_cache_entries == 1000);
    CHECK_THAT(error_of(lines({"limits:", "  symbol_files: 0"})),
               Contains("t.yaml:2: limits.symbol_files: must be at least 1"));
    CHECK_THAT(error_of(lines({"limits:", "  symbol_files: 65537"})),
               Contains("t.yaml:2: limits.symbol_files: 65537 is above the maximum of 65536"));
    CHECK_THAT(error_of(lines({"limits:", "  symbol_cache_entries: 16777217"})),
               Contains("limits.symbol_cache_entries: 16777217 is above the maximum of 16777216"));
    auto shipped = load_config(LEAKWATCH_FIXTURES "/../../config/leakwatch.yaml");
    REQUIRE(shipped);
    CHECK(shipped->limits.symbol_files == Limits{}.symbol_files);
    CHECK(shipped->limits.symbol_cache_entries == Limits{}.symbol_cache_entries);
}
