// The Prometheus exposition of a snapshot (http/metrics.cpp), checked with promtool.
#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "http/metrics.h"
#include "http_support.h"

using namespace leakwatch;
using namespace http_support;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

// --- render_metrics ------------------------------------------------------------------------

TEST_CASE("render_metrics uses the metric names and label sets of the design", "[http][metrics]") {
    auto exp = parse_exposition(render_metrics(make_snapshot(), make_status()));

    const std::set<std::string> process = {"watch", "pid", "comm", "unit"};
    const std::set<std::string> stack = {"watch", "pid", "comm", "unit", "stack_id", "site"};
    const std::map<std::string, std::pair<std::string, std::set<std::string>>> expected = {
        {"leakwatch_outstanding_bytes", {"gauge", process}},
        {"leakwatch_outstanding_allocations", {"gauge", process}},
        {"leakwatch_allocated_bytes_total", {"counter", process}},
        {"leakwatch_freed_bytes_total", {"counter", process}},
        {"leakwatch_stack_outstanding_bytes", {"gauge", stack}},
        {"leakwatch_build_info", {"gauge", {"version"}}},
        {"leakwatch_config_last_reload_successful", {"gauge", {}}},
        {"leakwatch_lost_events_total", {"counter", {"reason"}}},
        {"leakwatch_attached_processes", {"gauge", {}}},
        {"leakwatch_bpf_map_entries", {"gauge", {"map"}}},
        {"leakwatch_bpf_map_capacity", {"gauge", {"map"}}},
    };
    for (const auto& [name, spec] : expected) {
        INFO(name);
        CHECK(exp.types[name] == spec.first);
        CHECK_FALSE(exp.helps[name].empty());
        auto samples = exp.named(name);
        CHECK_FALSE(samples.empty());
        for (const auto& s : samples) CHECK(label_names(s) == spec.second);
    }
    // Every sample is leakwatch_-prefixed and belongs to a declared family.
    for (const auto& s : exp.samples) {
        INFO(s.name);
        CHECK_THAT(s.name, StartsWith("leakwatch_"));
        CHECK(exp.types.contains(s.name));
    }
}

TEST_CASE("render_metrics reports the snapshot's numbers", "[http][metrics]") {
    auto exp = parse_exposition(render_metrics(make_snapshot(), make_status()));

    auto app = process_labels("app", 100, "appd");
    CHECK(exp.one("leakwatch_outstanding_bytes", app).value == 1073741824.0);
    CHECK(exp.one("leakwatch_outstanding_allocations", app).value == 4000);
    CHECK(exp.one("leakwatch_allocated_bytes_total", app).value == 5000000000.0);
    CHECK(exp.one("leakwatch_freed_bytes_total", app).value == 3926258176.0);
    auto svc = process_labels("svc", 4242, "svcd", "svc.service");
    CHECK(exp.one("leakwatch_outstanding_bytes", svc).value == 65536);
    CHECK(exp.one("leakwatch_outstanding_allocations", svc).value == 2);
    CHECK(exp.one("leakwatch_allocated_bytes_total", svc).value == 131072);
    CHECK(exp.one("leakwatch_freed_bytes_total", svc).value == 65536);
    CHECK(exp.named("leakwatch_outstanding_bytes").size() == 2);

    CHECK(exp.one("leakwatch_build_info", {{"version", "0.1.0-test"}}).value == 1);
    CHECK(exp.one("leakwatch_config_last_reload_successful", {}).value == 0);
    CHECK(exp.one("leakwatch_attached_processes", {}).value == 2);

    auto lost = exp.named("leakwatch_lost_events_total");
    CHECK(lost.size() == kLossReasons.size());
    for (const auto& reason : kLossReasons) {
        INFO(reason.name);
        const size_t i = reason.id;
        CHECK(
            exp.one("leakwatch_lost_events_total", {{"reason", std::string(reason.name)}}).value ==
            static_cast<double>(100 * (i + 1) + i));
    }

    CHECK(exp.named("leakwatch_bpf_map_entries").size() == 3);
    CHECK(exp.named("leakwatch_bpf_map_capacity").size() == 3);
    CHECK(exp.one("leakwatch_bpf_map_entries", {{"map", "live"}}).value == 12345);
    CHECK(exp.one("leakwatch_bpf_map_capacity", {{"map", "live"}}).value == 1048576);
    CHECK(exp.one("leakwatch_bpf_map_entries", {{"map", "stacks"}}).value == 678);
    CHECK(exp.one("leakwatch_bpf_map_capacity", {{"map", "stacks"}}).value == 65536);
    CHECK(exp.one("leakwatch_bpf_map_entries", {{"map", "stack_totals"}}).value == 9);

    auto status = make_status();
    status.last_reload_ok = true;
    auto ok = parse_exposition(render_metrics(make_snapshot(), status));
    CHECK(ok.one("leakwatch_config_last_reload_successful", {}).value == 1);
}

TEST_CASE("the published exposition and the live families make the whole exposition",
          "[http][metrics]") {
    auto status = make_status();
    status.http_failures = {{"/api/v1/stacks", 3}};
    const std::string whole = render_metrics(make_snapshot(), status);
    const std::string published = render_metrics(make_snapshot(), status, false);
    const std::string live = render_live_metrics(status);
    CHECK(published.find("leakwatch_http_handler_failures_total") == std::string::npos);
    CHECK(parse_exposition(live)
              .one("leakwatch_http_handler_failures_total", {{"path", "/api/v1/stacks"}})
              .value == 3);
    // The same samples, families in another order.
    auto sorted_lines = [](const std::string& text) {
        std::vector<std::string> lines;
        size_t at = 0;
        while (at < text.size()) {
            size_t end = text.find('\n', at);
            lines.push_back(text.substr(at, end - at));
            at = end + 1;
        }
        std::sort(lines.begin(), lines.end());
        return lines;
    };
    CHECK(sorted_lines(published + live) == sorted_lines(whole));
}

TEST_CASE("render_metrics keeps the top_stacks largest stacks of each process", "[http][metrics]") {
    auto snap = make_snapshot();
    auto status = make_status();
    auto exp = parse_exposition(render_metrics(snap, status));

    auto stacks = exp.named("leakwatch_stack_outstanding_bytes");
    CHECK(stacks.size() == 3);  // 2 of app's 3, svc's only one
    CHECK(exp.one("leakwatch_stack_outstanding_bytes",
                  stack_labels("app", 100, "appd", kStackA, "record_entry"))
              .value == 600000000);
    CHECK(exp.one("leakwatch_stack_outstanding_bytes",
                  stack_labels("app", 100, "appd", kStackB, "Session::open"))
              .value == 400000000);
    CHECK(exp.one("leakwatch_stack_outstanding_bytes",
                  stack_labels("svc", 4242, "svcd", kStackD, "record_entry", "svc.service"))
              .value == 65536);
    for (const auto& s : stacks) CHECK(s.labels.at("stack_id") != hex16(kStackC));
    CHECK(hex16(kStackB) == "0000000000000002");

    status.top_stacks = 1;
    exp = parse_exposition(render_metrics(snap, status));
    stacks = exp.named("leakwatch_stack_outstanding_bytes");
    REQUIRE(stacks.size() == 2);
    for (const auto& s : stacks) CHECK(s.value != 400000000);

    status.top_stacks = 0;
    exp = parse_exposition(render_metrics(snap, status));
    CHECK(exp.named("leakwatch_stack_outstanding_bytes").empty());
    CHECK(exp.named("leakwatch_outstanding_bytes").size() == 2);

    status.top_stacks = 100;
    exp = parse_exposition(render_metrics(snap, status));
    CHECK(exp.named("leakwatch_stack_outstanding_bytes").size() == 4);
}

TEST_CASE("render_metrics of an empty snapshot still has the daemon's own metrics",
          "[http][metrics]") {
    DaemonStatus status;
    status.version = "0.1.0";
    auto exp = parse_exposition(render_metrics(Snapshot{}, status));
    CHECK(exp.named("leakwatch_outstanding_bytes").empty());
    CHECK(exp.named("leakwatch_stack_outstanding_bytes").empty());
    CHECK(exp.one("leakwatch_build_info", {{"version", "0.1.0"}}).value == 1);
    CHECK(exp.one("leakwatch_config_last_reload_successful", {}).value == 1);
    CHECK(exp.one("leakwatch_attached_processes", {}).value == 0);
    CHECK(exp.named("leakwatch_lost_events_total").size() == kLossReasons.size());
    for (const auto& s : exp.named("leakwatch_lost_events_total")) CHECK(s.value == 0);
}

TEST_CASE("render_metrics escapes label values", "[http][metrics]") {
    auto snap = make_snapshot();
    snap.processes[1].comm = "we\"ird\\name";
    snap.processes[1].stacks[0].site =
        "std::vector<int, std::allocator<int> >::push_back(int const&)";
    auto text = render_metrics(snap, make_status());
    auto exp = parse_exposition(text);
    CHECK(exp.one("leakwatch_outstanding_bytes",
                  process_labels("svc", 4242, "we\"ird\\name", "svc.service"))
              .value == 65536);
    CHECK(exp.one("leakwatch_stack_outstanding_bytes",
                  stack_labels("svc", 4242, "we\"ird\\name", kStackD,
                               "std::vector<int, std::allocator<int> >::push_back(int const&)",
                               "svc.service"))
              .value == 65536);

    auto promtool = promtool_check_metrics(text);
    INFO(text);
    CHECK(promtool.exit_code == 0);
}

TEST_CASE("label values are valid UTF-8 whatever reaches them", "[http][metrics][promtool]") {
    // What comes from a watched process is shown text already; should anything else get
    // through, its bad bytes and control characters become U+FFFD, never a scrape Prometheus
    // rejects whole.
    auto snap = make_snapshot();
    snap.processes[1].comm = "\xff\xfeleak\nline";
    snap.processes[1].stacks[0].site = std::string("site\0\x80", 6);
    auto text = render_metrics(snap, make_status());
    auto exp = parse_exposition(text);
    const std::string fffd = "\xef\xbf\xbd";
    CHECK(exp.one("leakwatch_outstanding_bytes",
                  process_labels("svc", 4242, fffd + fffd + "leak" + fffd + "line", "svc.service"))
              .value == 65536);
    auto promtool = promtool_check_metrics(text);
    INFO(text);
    for (const auto& line : promtool.lines) UNSCOPED_INFO("promtool: " << line);
    CHECK(promtool.exit_code == 0);
}

TEST_CASE("render_metrics exports refused files and handler failures", "[http][metrics]") {
    auto status = make_status();
    status.files_refused[static_cast<size_t>(Refusal::kNotRegular)] = 3;
    status.files_refused[static_cast<size_t>(Refusal::kTooLarge)] = 1;
    status.file_loads_stuck = 2;
    status.attach_retries = 5;
    status.jvm_attaches_queued = 6;
    status.http_failures = {{"/api/v1/processes", 4}, {"/metrics", 0}};
    auto exp = parse_exposition(render_metrics(make_snapshot(), status));
    CHECK(exp.named("leakwatch_files_refused_total").size() == kRefusalNames.size());
    CHECK(exp.one("leakwatch_files_refused_total", {{"reason", "not_regular_file"}}).value == 3);
    CHECK(exp.one("leakwatch_files_refused_total", {{"reason", "too_large"}}).value == 1);
    CHECK(exp.one("leakwatch_files_refused_total", {{"reason", "slow"}}).value == 0);
    CHECK(exp.one("leakwatch_file_loads_stuck", {}).value == 2);
    CHECK(exp.one("leakwatch_attach_retries_total", {}).value == 5);
    CHECK(exp.one("leakwatch_jvm_attaches_queued_total", {}).value == 6);
    CHECK(exp.one("leakwatch_http_handler_failures_total", {{"path", "/api/v1/processes"}}).value ==
          4);
    CHECK(exp.one("leakwatch_http_handler_failures_total", {{"path", "/metrics"}}).value == 0);
}

TEST_CASE("promtool check metrics reports lint through this harness", "[http][metrics][promtool]") {
    // A counter without _total: proves a clean verdict below is promtool's, not a harness
    // that lost its output.
    auto result = promtool_check_metrics("# HELP x_bytes X.\n# TYPE x_bytes counter\nx_bytes 1\n");
    CHECK(result.exit_code != 0);
    REQUIRE(result.lines.size() == 1);
    CHECK_THAT(result.lines[0], Contains("_total"));
}

TEST_CASE("promtool check metrics accepts the exposition", "[http][metrics][promtool]") {
    for (bool empty : {false, true}) {
        auto text = empty ? render_metrics(Snapshot{}, DaemonStatus{})
                          : render_metrics(make_snapshot(), make_status());
        auto result = promtool_check_metrics(text);
        INFO((empty ? "empty snapshot" : "full snapshot") << "; metrics:\n" << text);
        for (const auto& line : result.lines) UNSCOPED_INFO("promtool: " << line);
        CHECK(result.exit_code == 0);
        CHECK(result.lines.empty());
    }
}

TEST_CASE("render_metrics exports the symbol caches; source lines stay out of labels",
          "[http][metrics]") {
    auto snap = make_snapshot();
    for (auto& p : snap.processes)
        for (auto& s : p.stacks) {
            if (!s.frames) continue;
            auto frames = std::make_shared<std::vector<Frame>>(*s.frames);
            for (auto& f : *frames) {
                f.file = "/src/app/file.c";
                f.line = 77;
                f.inlined = {{"inner_fn", "/src/app/inner.h", 12}};
            }
            s.frames = frames;
        }
    auto status = make_status();
    status.symbol_caches = {{"elf_files", 10, 2, 2, 512, 0},
                            {"debug_files", 7, 2, 1, 512, 0},
                            {"source_lines", 30, 5, 5, 65536, 0}};
    const std::string text = render_metrics(snap, status);
    auto exp = parse_exposition(text);
    const std::map<std::string, std::string> types = {
        {"leakwatch_symbol_cache_hits_total", "counter"},
        {"leakwatch_symbol_cache_misses_total", "counter"},
        {"leakwatch_symbol_cache_entries", "gauge"},
        {"leakwatch_symbol_cache_capacity", "gauge"},
    };
    for (const auto& [name, type] : types) {
        INFO(name);
        CHECK(exp.types[name] == type);
        CHECK(exp.named(name).size() == 3);
        for (const auto& s : exp.named(name))
            CHECK(label_names(s) == std::set<std::string>{"cache"});
    }
    auto value = [&](const std::string& name, const std::string& cache) {
        for (const auto& s : exp.named(name))
            if (s.labels.at("cache") == cache) return s.value;
        return -1.0;
    };
    CHECK(value("leakwatch_symbol_cache_hits_total", "source_lines") == 30);
    CHECK(value("leakwatch_symbol_cache_misses_total", "elf_files") == 2);
    CHECK(value("leakwatch_symbol_cache_entries", "debug_files") == 1);
    CHECK(value("leakwatch_symbol_cache_capacity", "source_lines") == 65536);
    // The sites are the same as without source lines, and no file or line is in any label.
    CHECK(text.find("file.c") == std::string::npos);
    CHECK(text.find("inner") == std::string::npos);
    CHECK(text == render_metrics(make_snapshot(), status));
}

TEST_CASE("the kernel's series of a process carry its unit, like its user series",
          "[http][metrics]") {
    Snapshot snap = make_snapshot();
    KernelView k;
    KernelProcessView web;
    web.pid = 300;
    web.comm = "nginx";
    web.unit = "nginx.service";
    web.bytes = 8192;
    web.count = 2;
    web.growth.followed = web.growth.suspected = true;
    web.growth.rate = 10;
    KernelProcessView other;
    other.pid = 301;
    other.comm = "cat";
    other.bytes = 4096;
    other.count = 1;
    k.processes = {web, other};
    snap.kernel = k;
    auto exp = parse_exposition(render_metrics(snap, make_status()));
    const Labels web_labels = {
        {"watch", "kernel"}, {"pid", "300"}, {"comm", "nginx"}, {"unit", "nginx.service"}};
    CHECK(exp.one("leakwatch_outstanding_bytes", web_labels).value == 8192);
    CHECK(exp.one("leakwatch_outstanding_allocations", web_labels).value == 2);
    Labels suspected = web_labels;
    suspected["scope"] = "process";
    suspected["stack_id"] = "";
    suspected["site"] = "";
    CHECK(exp.one("leakwatch_leak_suspected", suspected).value == 1);
    const Labels other_labels = {
        {"watch", "kernel"}, {"pid", "301"}, {"comm", "cat"}, {"unit", ""}};
    CHECK(exp.one("leakwatch_outstanding_bytes", other_labels).value == 4096);
}
