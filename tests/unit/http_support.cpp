#include "http_support.h"

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
#include <memory>
#include <sstream>

namespace http_support {

using Catch::Matchers::StartsWith;
using leakwatch::ProcessView;

// --- a parser for the Prometheus text format (what the tests need of it) ------------------

std::vector<Sample> Exposition::named(const std::string& name) const {
    std::vector<Sample> out;
    for (const auto& s : samples)
        if (s.name == name) out.push_back(s);
    return out;
}

const Sample& Exposition::one(const std::string& name, const Labels& labels) const {
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

namespace {

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

}  // namespace

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
    svc.unit = "svc.service";
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

Labels process_labels(const std::string& watch, uint32_t pid, const std::string& comm,
                      const std::string& unit) {
    return {{"watch", watch}, {"pid", std::to_string(pid)}, {"comm", comm}, {"unit", unit}};
}

Labels stack_labels(const std::string& watch, uint32_t pid, const std::string& comm, uint64_t id,
                    const std::string& site, const std::string& unit) {
    Labels l = process_labels(watch, pid, comm, unit);
    l["stack_id"] = hex16(id);
    l["site"] = site;
    return l;
}

// --- promtool ------------------------------------------------------------------------------

namespace {

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

}  // namespace

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

namespace {

struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0) close(fd);
    }
};

}  // namespace

HttpResponse http_get(int port, const std::string& target, const std::string& headers) {
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

    std::string request = "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n" + headers + "\r\n";
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

}  // namespace http_support
