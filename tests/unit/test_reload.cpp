// What a reload changes: every field of the config structs, one by one, against the table in
// config/reload.cpp. The structured bindings below name every field: a field added to one of
// these structs fails to compile here until it is listed, and its check fails until the table
// classifies it.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "config/reload.h"

using namespace leakwatch;
using namespace std::chrono_literals;

namespace {

std::vector<std::string_view> names(const std::vector<const ConfigKey*>& keys) {
    std::vector<std::string_view> out;
    for (const auto* k : keys) out.push_back(k->name);
    return out;
}

std::vector<std::string_view> names(const std::vector<const RuleKey*>& keys) {
    std::vector<std::string_view> out;
    for (const auto* k : keys) out.push_back(k->name);
    return out;
}

Takes takes_of(std::string_view name) {
    for (const auto& k : config_keys())
        if (k.name == name) return k.takes;
    for (const auto& k : rule_keys())
        if (k.name == name) return k.takes;
    FAIL("no key " << name);
    return Takes::kNothing;
}

WatchRule base_rule() {
    WatchRule r;
    r.name = "app";
    r.match.comm = "app";
    return r;
}

}  // namespace

TEST_CASE("every Config field is one key, classified", "[config][reload]") {
    Config base = default_config();
    base.watch = {base_rule()};
    Config c = base;
    // Changes one field of `c`, checks that exactly that key differs and how it takes effect,
    // and puts `c` back.
    auto expect = [&](std::string_view key, Takes takes) {
        INFO(key);
        CHECK(names(changed_keys(base, c)) == std::vector<std::string_view>{key});
        CHECK(takes_of(key) == takes);
        c = base;
    };

    auto& [listen_address, expose_kernel_addresses, interval, log_level, kernel, leak_detection,
           escalation, python, watch, limits, source] = c;
    listen_address = "127.0.0.1:1";
    expect("listen_address", Takes::kRestart);
    expose_kernel_addresses = true;
    expect("expose_kernel_addresses", Takes::kLive);
    interval = 7s;
    expect("interval", Takes::kLive);
    log_level = "debug";
    expect("log_level", Takes::kLive);
    watch.push_back(base_rule());
    expect("watch", Takes::kLive);
    watch[0].min_size = 8;
    expect("watch", Takes::kLive);
    source = "/elsewhere.yaml";
    expect("source (the file read)", Takes::kNothing);

    auto& [k_enabled, kinds, k_min_size, k_max_size, include_movable_pages, k_tracking] = kernel;
    k_enabled = true;
    expect("kernel.enabled", Takes::kRestart);
    kinds[2] = false;
    expect("kernel.kinds", Takes::kRestart);
    k_min_size = 64;
    expect("kernel.min_size", Takes::kRestart);
    k_max_size = 4096;
    expect("kernel.max_size", Takes::kRestart);
    include_movable_pages = true;
    expect("kernel.include_movable_pages", Takes::kRestart);
    k_tracking = WatchRule::Tracking::kFull;
    expect("kernel.tracking", Takes::kRestart);

    auto& [e_duration, max_processes, e_sample_bytes, watch_sample_bytes] = escalation;
    e_duration = 1min;
    expect("escalation.duration", Takes::kLive);
    max_processes = 1;
    expect("escalation.max_processes", Takes::kLive);
    e_sample_bytes = 0;
    expect("escalation.sample_bytes", Takes::kLive);
    watch_sample_bytes = 4096;
    expect("escalation.watch_sample_bytes", Takes::kLive);

    auto& [py_max_frames] = python;
    py_max_frames = 4;
    expect("python.max_frames", Takes::kLive);

    auto& [d_enabled, window, min_rate, min_growth, confidence, max_series] = leak_detection;
    d_enabled = false;
    expect("leak_detection.enabled", Takes::kLive);
    window = 1min;
    expect("leak_detection.window", Takes::kLive);
    min_rate = 1;
    expect("leak_detection.min_rate", Takes::kLive);
    min_growth = 1;
    expect("leak_detection.min_growth", Takes::kLive);
    confidence = 0.9;
    expect("leak_detection.confidence", Takes::kLive);
    max_series = 1;
    expect("leak_detection.max_series", Takes::kLive);

    auto& [live_allocations, stacks, stack_totals, processes, threads, top_stacks,
           kernel_live_allocations, kernel_stacks, kernel_totals, top_processes, symbol_files,
           symbol_cache_entries, file_size, process_share, growth_pages] = limits;
    live_allocations = 1;
    expect("limits.live_allocations", Takes::kRestart);
    stacks = 1;
    expect("limits.stacks", Takes::kRestart);
    stack_totals = 1;
    expect("limits.stack_totals", Takes::kRestart);
    processes = 1;
    expect("limits.processes", Takes::kRestart);
    threads = 1;
    expect("limits.threads", Takes::kRestart);
    top_stacks = 1;
    expect("limits.top_stacks", Takes::kLive);
    kernel_live_allocations = 1;
    expect("limits.kernel_live_allocations", Takes::kRestart);
    kernel_stacks = 1;
    expect("limits.kernel_stacks", Takes::kRestart);
    kernel_totals = 1;
    expect("limits.kernel_totals", Takes::kRestart);
    top_processes = 1;
    expect("limits.top_processes", Takes::kLive);
    symbol_files = 1;
    expect("limits.symbol_files", Takes::kLive);
    symbol_cache_entries = 1;
    expect("limits.symbol_cache_entries", Takes::kLive);
    file_size = 1 << 20;
    expect("limits.file_size", Takes::kLive);
    process_share = 1;
    expect("limits.process_share", Takes::kRestart);
    growth_pages = 1;
    expect("limits.growth_pages", Takes::kRestart);

    CHECK(changed_keys(base, base).empty());
}

TEST_CASE("every WatchRule field is one key, classified", "[config][reload]") {
    const WatchRule base = base_rule();
    WatchRule r = base;
    auto expect = [&](std::string_view key, Takes takes) {
        INFO(key);
        CHECK(names(changed_rule_keys(base, r)) == std::vector<std::string_view>{key});
        CHECK(takes_of(key) == takes);
        CHECK(same_rule(base, r) == (takes != Takes::kReattach));
        // The digest kept with a process's probes across restarts tells the same rules apart.
        CHECK((rule_digest(base) == rule_digest(r)) == (takes != Takes::kReattach));
        r = base;
    };

    auto& [name, match, allocator, min_size, max_size, min_age, sample_bytes, unwind, jvm_attach,
           tracking, line] = r;
    name = "other";
    expect("watch.name", Takes::kReattach);
    min_size = 1;
    expect("watch.min_size", Takes::kReattach);
    max_size = 1;
    expect("watch.max_size", Takes::kReattach);
    min_age = 1s;
    expect("watch.min_age", Takes::kReattach);
    sample_bytes = 4096;
    expect("watch.sample_bytes", Takes::kReattach);
    unwind = WatchRule::Unwind::kDwarf;
    expect("watch.unwind", Takes::kReattach);
    jvm_attach = false;
    expect("watch.jvm_attach", Takes::kReattach);
    tracking = WatchRule::Tracking::kFull;
    expect("watch.tracking", Takes::kReattach);
    line = 12;
    expect("watch (line in the file)", Takes::kNothing);

    auto& [comm, exe, pid, cmdline, cmdline_regex, uid, cgroup, unit] = match;
    comm = "other";
    expect("watch.match.comm", Takes::kReattach);
    exe = "/bin/app";
    expect("watch.match.exe", Takes::kReattach);
    pid = 1;
    expect("watch.match.pid", Takes::kReattach);
    cmdline = "x";
    expect("watch.match.cmdline", Takes::kReattach);
    cmdline_regex = *compile_cmdline("x");
    expect("watch.match.cmdline (compiled)", Takes::kNothing);
    uid = 1000;
    expect("watch.match.uid", Takes::kReattach);
    cgroup = "/system.slice/*";
    expect("watch.match.cgroup", Takes::kReattach);
    unit = "app.service";
    expect("watch.match.unit", Takes::kReattach);

    auto& [library, symbol_prefix] = allocator;
    library = "libjemalloc.so.2";
    expect("watch.allocator.library", Takes::kReattach);
    symbol_prefix = "je_";
    expect("watch.allocator.symbol_prefix", Takes::kReattach);
}

TEST_CASE("reload_config keeps what waits for a restart and says so once per kind",
          "[config][reload]") {
    Config running = default_config();
    Config fresh = running;
    fresh.interval = 1s;
    fresh.limits.top_stacks = 3;
    fresh.limits.kernel_stacks = 99;
    fresh.limits.stacks = 77;
    fresh.kernel.enabled = true;
    fresh.listen_address = ":1";
    auto r = reload_config(running, fresh);
    CHECK(r.config.interval == 1s);
    CHECK(r.config.limits.top_stacks == 3);
    CHECK(r.config.limits.kernel_stacks == running.limits.kernel_stacks);
    CHECK(r.config.limits.stacks == running.limits.stacks);
    CHECK_FALSE(r.config.kernel.enabled);
    CHECK(r.config.listen_address == running.listen_address);
    CHECK(r.warnings == std::vector<std::string_view>{
                            "kernel settings change at restart",
                            "listen_address changes take effect at restart",
                            "BPF map limits change at restart; keeping the current sizes"});
    CHECK(r.changed_key("interval"));
    CHECK_FALSE(r.changed_key("log_level"));

    // A kernel map size alone is reported too.
    fresh = running;
    fresh.limits.kernel_live_allocations = 5;
    r = reload_config(running, fresh);
    CHECK(r.warnings == std::vector<std::string_view>{
                            "BPF map limits change at restart; keeping the current sizes"});
    CHECK(r.config.limits.kernel_live_allocations == running.limits.kernel_live_allocations);
    CHECK(reload_config(running, running).warnings.empty());
}

// docs/operations.md says which keys apply at once and which need a restart: the same as the
// table, key for key.
TEST_CASE("docs/operations.md lists the keys as the table classifies them", "[config][reload]") {
    std::ifstream in(std::string(LEAKWATCH_DOCS) + "/operations.md");
    REQUIRE(in);
    // The two bullets of the "Reloading" section, each with its continuation lines.
    std::string line, live, restart;
    std::string* bullet = nullptr;
    bool in_section = false;
    while (std::getline(in, line)) {
        if (line.starts_with("## ")) in_section = line == "## Reloading";
        if (!in_section) continue;
        if (line.starts_with("- ")) bullet = nullptr;
        if (line.starts_with("- apply at once")) bullet = &live;
        if (line.starts_with("- need a restart")) bullet = &restart;
        if (line.empty()) bullet = nullptr;
        if (bullet) *bullet += line + "\n";
    }
    auto keys_in = [](const std::string& text) {
        std::set<std::string> out;
        static const std::regex quoted("`([a-z_.]+)`");
        for (std::sregex_iterator it(text.begin(), text.end(), quoted), end; it != end; ++it)
            out.insert((*it)[1]);
        return out;
    };
    std::set<std::string> want_live, want_restart;
    for (const auto& k : config_keys()) {
        if (k.name == "watch") continue;  // the rule bullets above say what a rule change does
        if (k.takes == Takes::kLive) want_live.insert(std::string(k.name));
        if (k.takes == Takes::kRestart) want_restart.insert(std::string(k.name));
    }
    CHECK(keys_in(live) == want_live);
    CHECK(keys_in(restart) == want_restart);
}
