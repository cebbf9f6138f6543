// HTTP tests: the Prometheus exposition of a snapshot (checked with promtool), the JSON API,
// and one real HttpServer on an ephemeral port, fetched over TCP by a tiny HTTP/1.0 client.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "aggregate/aggregator.h"
#include "http/api.h"
#include "http/metrics.h"
#include "http/server.h"
#include "http/state.h"

using namespace leakwatch;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using Labels = std::map<std::string, std::string>;

namespace {

// --- a parser for the Prometheus text format (what the tests need of it) ------------------

struct Sample {
    std::string name;
    Labels labels;
    double value = 0;
};

struct Exposition {
    std::vector<Sample> samples;
    std::map<std::string, std::string> types;  // family -> gauge/counter/...
    std::map<std::string, std::string> helps;

    std::vector<Sample> named(const std::string& name) const {
        std::vector<Sample> out;
        for (const auto& s : samples)
            if (s.name == name) out.push_back(s);
        return out;
    }
    const Sample& one(const std::string& name, const Labels& labels) const {
        const Sample* found = nullptr;
        for (const auto& s : samples) {
            if (s.name != name || s.labels != labels) continue;
            INFO(name);
            REQUIRE(found == nullptr);
            found = &s;
        }
        INFO("no sample " << name << " with the expected labels");
        REQUIRE(found != nullptr);
        return *found;
    }
};

Labels parse_labels(const std::string& line, size_t& i) {
    Labels labels;
    REQUIRE(line[i] == '{');
    i++;
    while (i < line.size() && line[i] != '}') {
        size_t eq = line.find('=', i);
        REQUIRE(eq != std::string::npos);
        std::string key = line.substr(i, eq - i);
        i = eq + 1;
        REQUIRE(line[i] == '"');
        i++;
        std::string value;
        for (; i < line.size() && line[i] != '"'; i++) {
            if (line[i] != '\\') {
                value += line[i];
                continue;
            }
            i++;
            REQUIRE(i < line.size());
            value += line[i] == 'n' ? '\n' : line[i];
        }
        REQUIRE(i < line.size());
        i++;  // closing quote
        INFO("duplicate label " << key);
        REQUIRE(labels.emplace(key, value).second);
        if (line[i] == ',') i++;
    }
    REQUIRE(i < line.size());
    i++;  // '}'
    return labels;
}

Exposition parse_exposition(const std::string& text) {
    Exposition out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        INFO("line: " << line);
        if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) {
            std::string rest = line.substr(7);
            size_t sp = rest.find(' ');
            REQUIRE(sp != std::string::npos);
            auto& table = line[2] == 'H' ? out.helps : out.types;
            table[rest.substr(0, sp)] = rest.substr(sp + 1);
            continue;
        }
        REQUIRE(line[0] != '#');
        Sample s;
        size_t i = 0;
        while (i < line.size() && line[i] != '{' && line[i] != ' ') i++;
        s.name = line.substr(0, i);
        if (line[i] == '{') s.labels = parse_labels(line, i);
        REQUIRE(line[i] == ' ');
        char* end = nullptr;
        s.value = std::strtod(line.c_str() + i + 1, &end);
        REQUIRE(end != line.c_str() + i + 1);
        out.samples.push_back(std::move(s));
    }
    return out;
}

std::set<std::string> label_names(const Sample& s) {
    std::set<std::string> out;
    for (const auto& [k, v] : s.labels) out.insert(k);
    return out;
}

// --- a snapshot with known numbers ---------------------------------------------------------

Frame frame(uint64_t address, std::string symbol, uint64_t offset, std::string module,
            uint64_t module_offset, std::string build_id) {
    Frame f;
    f.address = address;
    f.symbol = std::move(symbol);
    f.offset = offset;
    f.module = std::move(module);
    f.module_offset = module_offset;
    f.build_id = std::move(build_id);
    return f;
}

constexpr uint64_t kStackA = 0xdeadbeef00c0ffeeull;
constexpr uint64_t kStackB = 0x2ull;
constexpr uint64_t kStackC = 0x00000000000abcdeull;
constexpr uint64_t kStackD = 0x7777ull;
const char* const kLibc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const char* const kLibcBuildId = "4a9e0d9c2f3b1e5d7c6a8b9f0e1d2c3b4a5f6e7d";

Snapshot make_snapshot() {
    auto malloc_leak = std::make_shared<std::vector<Frame>>(std::vector<Frame>{
        frame(0x7f0000028a40, "malloc", 0, kLibc, 0x28a40, kLibcBuildId),
        frame(0x55550000123f, "record_entry", 0x2f, "/usr/bin/appd", 0x123f, ""),
        frame(0x555500001300, "main", 0x40, "/usr/bin/appd", 0x1300, ""),
    });
    auto new_leak = std::make_shared<std::vector<Frame>>(std::vector<Frame>{
        frame(0x7f0000100000, "operator new(unsigned long)", 0, "/usr/lib/libstdc++.so.6", 0xa0000,
              "0123abcd"),
        frame(0x555500002010, "Session::open", 0x10, "/usr/bin/appd", 0x2010, ""),
    });
    auto unknown = std::make_shared<std::vector<Frame>>(std::vector<Frame>{
        frame(0x7f0000028a40, "malloc", 0, kLibc, 0x28a40, kLibcBuildId),
        frame(0x7f00dead0010, "", 0, "[anon]", 0x10, ""),
    });

    Snapshot snap;
    snap.taken = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));

    ProcessView app;
    app.pid = 100;
    app.watch = "app";
    app.comm = "appd";
    app.totals = {1 << 30, 4000, 5000000000ull, 9000, 3926258176ull, 5000};
    app.stacks = {
        {kStackA, 600000000, 3000, "record_entry", malloc_leak, {}},
        {kStackB, 400000000, 900, "Session::open", new_leak, {}},
        {kStackC, 73741824, 100, "anon+0x10", unknown, {}},
    };
    ProcessView svc;
    svc.pid = 4242;
    svc.watch = "svc";
    svc.comm = "svcd";
    svc.totals = {65536, 2, 131072, 4, 65536, 2};
    svc.stacks = {{kStackD, 65536, 2, "record_entry", malloc_leak, {}}};
    snap.processes = {app, svc};

    for (size_t i = 0; i < snap.lost.size(); i++) snap.lost[i] = 100 * (i + 1) + i;
    snap.usage = {{"live", 12345, 1048576}, {"stacks", 678, 65536}, {"stack_totals", 9, 65536}};
    return snap;
}

DaemonStatus make_status() {
    DaemonStatus status;
    status.version = "0.1.0-test";
    status.attached = 2;
    status.last_reload_ok = false;
    status.last_reload_time = 1699999999.5;
    status.top_stacks = 2;
    return status;
}

std::string hex16(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

Labels process_labels(const std::string& watch, uint32_t pid, const std::string& comm) {
    return {{"watch", watch}, {"pid", std::to_string(pid)}, {"comm", comm}};
}

Labels stack_labels(const std::string& watch, uint32_t pid, const std::string& comm, uint64_t id,
                    const std::string& site) {
    Labels l = process_labels(watch, pid, comm);
    l["stack_id"] = hex16(id);
    l["site"] = site;
    return l;
}

// --- promtool ------------------------------------------------------------------------------

struct PromtoolResult {
    int exit_code = -1;
    std::vector<std::string> lines;
};

std::string find_promtool() {
    if (access("/usr/bin/promtool", X_OK) == 0) return "/usr/bin/promtool";
    if (const char* path = std::getenv("PATH")) {
        std::istringstream dirs(path);
        std::string dir;
        while (std::getline(dirs, dir, ':')) {
            std::string candidate = dir + "/promtool";
            if (!dir.empty() && access(candidate.c_str(), X_OK) == 0) return candidate;
        }
    }
    return "";
}

PromtoolResult promtool_check_metrics(const std::string& text) {
    std::string promtool = find_promtool();
    if (promtool.empty())
        FAIL(
            "promtool not found: install the prometheus package (apt-get install -y "
            "prometheus); it is a declared test dependency of leakwatch's unit tests");
    char path[] = "/tmp/leakwatch-test-metrics-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    std::ofstream(path) << text;
    std::string cmd = promtool + " check metrics < " + path + " 2>&1";
    FILE* pipe = popen(cmd.c_str(), "r");
    REQUIRE(pipe != nullptr);
    PromtoolResult result;
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
    int status = pclose(pipe);
    std::filesystem::remove(path);
    REQUIRE(WIFEXITED(status));
    result.exit_code = WEXITSTATUS(status);
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line))
        if (!line.empty()) result.lines.push_back(line);
    return result;
}

// --- a blocking HTTP/1.0 client ------------------------------------------------------------

struct HttpResponse {
    int status = 0;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
};

struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0) close(fd);
    }
};

HttpResponse http_get(int port, const std::string& target) {
    Fd sock{socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    REQUIRE(sock.fd >= 0);
    timeval timeout{5, 0};
    setsockopt(sock.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(sock.fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    INFO("connect to 127.0.0.1:" << port << ": " << std::strerror(errno));
    REQUIRE(connect(sock.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);

    std::string request = "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    for (size_t sent = 0; sent < request.size();) {
        ssize_t n = send(sock.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        REQUIRE(n > 0);
        sent += static_cast<size_t>(n);
    }
    std::string raw;
    char buf[4096];
    for (;;) {
        ssize_t n = recv(sock.fd, buf, sizeof(buf), 0);
        INFO("recv: " << std::strerror(errno));
        REQUIRE(n >= 0);
        if (n == 0) break;
        raw.append(buf, static_cast<size_t>(n));
    }

    HttpResponse response;
    size_t head_end = raw.find("\r\n\r\n");
    INFO("response: " << raw);
    REQUIRE(head_end != std::string::npos);
    std::istringstream head(raw.substr(0, head_end));
    std::string line;
    std::getline(head, line);
    REQUIRE_THAT(line, StartsWith("HTTP/1."));
    response.status = std::atoi(line.c_str() + line.find(' ') + 1);
    while (std::getline(head, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return std::tolower(c); });
        size_t v = line.find_first_not_of(' ', colon + 1);
        response.headers[name] = v == std::string::npos ? "" : line.substr(v);
    }
    response.body = raw.substr(head_end + 4);
    if (response.headers.contains("content-length"))
        CHECK(std::stoul(response.headers["content-length"]) == response.body.size());
    return response;
}

nlohmann::json json_body(const HttpResponse& r) {
    CHECK_THAT(r.headers.at("content-type"), StartsWith("application/json"));
    INFO("body: " << r.body);
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    return j;
}

}  // namespace

// --- render_metrics ------------------------------------------------------------------------

TEST_CASE("render_metrics uses the metric names and label sets of the design", "[http][metrics]") {
    auto exp = parse_exposition(render_metrics(make_snapshot(), make_status()));

    const std::set<std::string> process = {"watch", "pid", "comm"};
    const std::set<std::string> stack = {"watch", "pid", "comm", "stack_id", "site"};
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
    auto svc = process_labels("svc", 4242, "svcd");
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
                  stack_labels("svc", 4242, "svcd", kStackD, "record_entry"))
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
    snap.processes[1].comm = "we\"ird\\na\nme";
    snap.processes[1].stacks[0].site =
        "std::vector<int, std::allocator<int> >::push_back(int const&)";
    auto text = render_metrics(snap, make_status());
    auto exp = parse_exposition(text);
    CHECK(exp.one("leakwatch_outstanding_bytes", process_labels("svc", 4242, "we\"ird\\na\nme"))
              .value == 65536);
    CHECK(exp.one("leakwatch_stack_outstanding_bytes",
                  stack_labels("svc", 4242, "we\"ird\\na\nme", kStackD,
                               "std::vector<int, std::allocator<int> >::push_back(int const&)"))
              .value == 65536);

    auto promtool = promtool_check_metrics(text);
    INFO(text);
    CHECK(promtool.exit_code == 0);
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

// --- JSON API ------------------------------------------------------------------------------

TEST_CASE("processes_json lists every process with its totals", "[http][api]") {
    auto j = processes_json(make_snapshot());
    REQUIRE(j["processes"].is_array());
    REQUIRE(j["processes"].size() == 2);
    const auto& app = j["processes"][0];
    CHECK(app["pid"] == 100);
    CHECK(app["watch"] == "app");
    CHECK(app["comm"] == "appd");
    CHECK(app["outstanding_bytes"] == 1073741824);
    CHECK(app["outstanding_allocations"] == 4000);
    CHECK(app["allocated_bytes_total"] == 5000000000ull);
    CHECK(app["freed_bytes_total"] == 3926258176ull);
    CHECK(app["stacks"] == 3);
    CHECK(j["processes"][1]["pid"] == 4242);
    CHECK(j["processes"][1]["comm"] == "svcd");

    CHECK(processes_json(Snapshot{})["processes"] == nlohmann::json::array());
}

TEST_CASE("stacks_json gives the top stacks of one process with every frame", "[http][api]") {
    auto snap = make_snapshot();
    CHECK_FALSE(stacks_json(snap, 999, 10).has_value());

    auto one = stacks_json(snap, 100, 1);
    REQUIRE(one.has_value());
    CHECK((*one)["pid"] == 100);
    CHECK((*one)["outstanding_bytes"] == 1073741824);
    REQUIRE((*one)["stacks"].size() == 1);

    auto all = stacks_json(snap, 100, 10);
    REQUIRE(all.has_value());
    const auto& stacks = (*all)["stacks"];
    REQUIRE(stacks.size() == 3);

    const auto& a = stacks[0];
    CHECK(a == (*one)["stacks"][0]);
    CHECK(a["stack_id"] == hex16(kStackA));  // the same id as the metrics' stack_id label
    CHECK(a["outstanding_bytes"] == 600000000);
    CHECK(a["outstanding_allocations"] == 3000);
    CHECK(a["site"] == "record_entry");
    REQUIRE(a["frames"].size() == 3);
    CHECK(a["frames"][0] == nlohmann::json{{"address", "0x7f0000028a40"},
                                           {"symbol", "malloc"},
                                           {"offset", 0},
                                           {"module", kLibc},
                                           {"module_offset", "0x28a40"},
                                           {"build_id", kLibcBuildId}});
    CHECK(a["frames"][1] == nlohmann::json{{"address", "0x55550000123f"},
                                           {"symbol", "record_entry"},
                                           {"offset", 0x2f},
                                           {"module", "/usr/bin/appd"},
                                           {"module_offset", "0x123f"}});
    CHECK(a["frames"][2]["symbol"] == "main");

    CHECK(stacks[1]["stack_id"] == "0000000000000002");
    CHECK(stacks[1]["site"] == "Session::open");
    CHECK(stacks[1]["frames"][0]["symbol"] == "operator new(unsigned long)");
    CHECK(stacks[1]["frames"][0]["build_id"] == "0123abcd");
    CHECK(stacks[2]["frames"][1]["symbol"] == "");
    CHECK(stacks[2]["frames"][1]["module"] == "[anon]");
    CHECK_FALSE(stacks[2]["frames"][1].contains("build_id"));

    // A stack without frames (id 0, or not in the stack map).
    snap.processes[1].stacks[0].frames = nullptr;
    auto svc = stacks_json(snap, 4242, 10);
    REQUIRE(svc.has_value());
    CHECK((*svc)["stacks"][0]["frames"] == nlohmann::json::array());
}

// --- civetweb_ports ------------------------------------------------------------------------

TEST_CASE("civetweb_ports turns listen addresses into civetweb's form", "[http][server]") {
    CHECK(civetweb_ports(":10071") == "10071");
    CHECK(civetweb_ports("127.0.0.1:10071") == "127.0.0.1:10071");
    CHECK(civetweb_ports("0.0.0.0:80") == "0.0.0.0:80");
    CHECK(civetweb_ports("[::1]:10071") == "[::1]:10071");
}

// --- a real server -------------------------------------------------------------------------

TEST_CASE("HttpServer serves metrics, the API and the landing page on one port", "[http][server]") {
    auto snap = std::make_shared<const Snapshot>(make_snapshot());
    auto status = make_status();
    PublishedState state;
    state.publish(snap, status);

    auto server = HttpServer::start("127.0.0.1:0", state);
    if (!server) FAIL(server.error().message);
    int port = (*server)->port();
    INFO("port() " << port);
    REQUIRE(port > 0);
    REQUIRE(port < 65536);
    // One server for every check below: civetweb's mg_stop takes about 2 s.

    {
        INFO("/metrics");
        auto r = http_get(port, "/metrics");
        CHECK(r.status == 200);
        CHECK_THAT(r.headers["content-type"], StartsWith("text/plain; version=0.0.4"));
        CHECK(r.body == render_metrics(*snap, status));
        auto exp = parse_exposition(r.body);
        CHECK(exp.one("leakwatch_outstanding_bytes", process_labels("app", 100, "appd")).value ==
              1073741824.0);
    }
    {
        INFO("/api/v1/processes");
        auto r = http_get(port, "/api/v1/processes");
        CHECK(r.status == 200);
        CHECK(json_body(r) == processes_json(*snap));
    }
    {
        INFO("/api/v1/stacks?pid=N&top=1");
        auto r = http_get(port, "/api/v1/stacks?pid=100&top=1");
        CHECK(r.status == 200);
        auto j = json_body(r);
        CHECK(j == *stacks_json(*snap, 100, 1));
        REQUIRE(j["stacks"].size() == 1);
        CHECK(j["stacks"][0]["site"] == "record_entry");
        CHECK(j["stacks"][0]["frames"].size() == 3);

        auto all = json_body(http_get(port, "/api/v1/stacks?pid=100"));
        CHECK(all["stacks"].size() == 3);
    }
    {
        INFO("/api/v1/stacks without pid is a bad request");
        auto r = http_get(port, "/api/v1/stacks");
        CHECK(r.status == 400);
        CHECK(json_body(r).contains("error"));
        CHECK(http_get(port, "/api/v1/stacks?pid=abc").status == 400);
    }
    {
        INFO("/api/v1/stacks of a pid that is not watched");
        auto r = http_get(port, "/api/v1/stacks?pid=999");
        CHECK(r.status == 404);
        CHECK(json_body(r).contains("error"));
    }
    {
        INFO("/api/v1/stacks with a bad top");
        for (const char* top : {"abc", "0", "", "-1", "10001"}) {
            INFO("top=" << top);
            auto r = http_get(port, std::string("/api/v1/stacks?pid=100&top=") + top);
            CHECK(r.status == 400);
            CHECK(json_body(r).contains("error"));
        }
    }
    {
        INFO("/ is the landing page");
        auto r = http_get(port, "/");
        CHECK(r.status == 200);
        CHECK_THAT(r.headers["content-type"], StartsWith("text/html"));
        CHECK_THAT(r.body, Contains("leakwatch 0.1.0-test"));
        CHECK_THAT(r.body, Contains("href=\"/metrics\""));
    }
    {
        INFO("unknown paths are 404");
        CHECK(http_get(port, "/nope").status == 404);
        CHECK(http_get(port, "/api/v1/nope").status == 404);
        CHECK(http_get(port, "/metricsx").status == 404);
    }
    {
        INFO("a newly published snapshot is what the next request sees");
        auto next = make_snapshot();
        next.processes.pop_back();
        state.publish(std::make_shared<const Snapshot>(next), status);
        auto after = parse_exposition(http_get(port, "/metrics").body);
        CHECK(after.named("leakwatch_outstanding_bytes").size() == 1);
        CHECK(json_body(http_get(port, "/api/v1/processes")) == processes_json(next));
    }
}

TEST_CASE("HttpServer::start fails with a message when the port is taken", "[http][server]") {
    PublishedState state;
    auto first = HttpServer::start("127.0.0.1:0", state);
    if (!first) FAIL(first.error().message);
    std::string address = "127.0.0.1:" + std::to_string((*first)->port());
    auto second = HttpServer::start(address, state);
    REQUIRE_FALSE(second.has_value());
    CHECK_THAT(second.error().message, Contains("cannot listen on " + address));
}

// Query values past uint32 (pids) or longer than any number (top) are errors, not wrapped or
// ignored. One server for both: mg_stop takes about 2 s.
TEST_CASE("HttpServer rejects pids above 2^32-1 and long top values", "[http][server]") {
    PublishedState state;
    state.publish(std::make_shared<const Snapshot>(make_snapshot()), make_status());
    auto server = HttpServer::start("127.0.0.1:0", state);
    if (!server) FAIL(server.error().message);
    int port = (*server)->port();
    auto wrapped = http_get(port, "/api/v1/stacks?pid=4294967396");
    INFO("pid=4294967396: status " << wrapped.status);
    CHECK((wrapped.status == 400 || wrapped.status == 404));
    auto long_top = http_get(port, "/api/v1/stacks?pid=100&top=" + std::string(40, 'a'));
    CHECK(long_top.status == 400);
}

// Debian's libcivetweb 1.15 is built without IPv6 (mg_check_feature(8) == 0): either
// listening works, or the error says that IPv6 is not supported.
TEST_CASE("HttpServer listens on [::1] or says IPv6 is unsupported", "[http][server]") {
    PublishedState state;
    auto server = HttpServer::start("[::1]:0", state);
    if (server) {
        CHECK((*server)->port() > 0);
    } else {
        CHECK_THAT(server.error().message, Contains("IPv6"));
    }
}

// --- source lines and the symbolizer's caches ----------------------------------------------

TEST_CASE("frame_json adds file, line and the inline chain only when known", "[http][api]") {
    Frame f = frame(0x555500001373, "leak_nodes", 0x13, "/usr/bin/appd", 0x1373, "35f7");
    f.file = "/src/app/nodes.c";
    f.line = 32;
    f.inlined = {{"grab", "/src/app/nodes.c", 20}, {"make_node", "/src/app/nodes.h", 25}};
    CHECK(frame_json(f) ==
          nlohmann::json{
              {"address", "0x555500001373"},
              {"symbol", "leak_nodes"},
              {"offset", 0x13},
              {"module", "/usr/bin/appd"},
              {"module_offset", "0x1373"},
              {"build_id", "35f7"},
              {"file", "/src/app/nodes.c"},
              {"line", 32},
              {"inlined",
               nlohmann::json::array(
                   {{{"function", "grab"}, {"file", "/src/app/nodes.c"}, {"line", 20}},
                    {{"function", "make_node"}, {"file", "/src/app/nodes.h"}, {"line", 25}}})}});
    // Unresolved: module, offset and build-id to symbolize elsewhere, nothing else.
    Frame bare = frame(0x7f0000001234, "", 0, "/usr/lib/libx.so", 0x1234, "abcd");
    auto j = frame_json(bare);
    CHECK(j["module"] == "/usr/lib/libx.so");
    CHECK(j["module_offset"] == "0x1234");
    CHECK(j["build_id"] == "abcd");
    CHECK_FALSE(j.contains("file"));
    CHECK_FALSE(j.contains("line"));
    CHECK_FALSE(j.contains("inlined"));
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
