// What the HTTP tests share (test_metrics.cpp, test_api.cpp, test_server.cpp): a snapshot
// with known numbers, a parser of the Prometheus text format and promtool to check it, and a
// tiny blocking HTTP/1.0 client.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "aggregate/aggregator.h"
#include "http/state.h"

namespace http_support {

using leakwatch::DaemonStatus;
using leakwatch::Frame;
using leakwatch::Snapshot;
using Labels = std::map<std::string, std::string>;

// --- the Prometheus text format (what the tests need of it) --------------------------------

struct Sample {
    std::string name;
    Labels labels;
    double value = 0;
};

struct Exposition {
    std::vector<Sample> samples;
    std::map<std::string, std::string> types;  // family -> gauge/counter/...
    std::map<std::string, std::string> helps;

    std::vector<Sample> named(const std::string& name) const;
    // The one sample of that name with exactly these labels (fails the test otherwise).
    const Sample& one(const std::string& name, const Labels& labels) const;
};

Exposition parse_exposition(const std::string& text);
std::set<std::string> label_names(const Sample& s);

struct PromtoolResult {
    int exit_code = -1;
    std::vector<std::string> lines;
};
// `promtool check metrics` on the text (fails the test when promtool is missing).
PromtoolResult promtool_check_metrics(const std::string& text);

// --- a snapshot with known numbers ---------------------------------------------------------

Frame frame(uint64_t address, std::string symbol, uint64_t offset, std::string module,
            uint64_t module_offset, std::string build_id);

constexpr uint64_t kStackA = 0xdeadbeef00c0ffeeull;
constexpr uint64_t kStackB = 0x2ull;
constexpr uint64_t kStackC = 0x00000000000abcdeull;
constexpr uint64_t kStackD = 0x7777ull;
inline const char* const kLibc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
inline const char* const kLibcBuildId = "4a9e0d9c2f3b1e5d7c6a8b9f0e1d2c3b4a5f6e7d";

Snapshot make_snapshot();
DaemonStatus make_status();
std::string hex16(uint64_t v);
Labels process_labels(const std::string& watch, uint32_t pid, const std::string& comm,
                      const std::string& unit = "");
Labels stack_labels(const std::string& watch, uint32_t pid, const std::string& comm, uint64_t id,
                    const std::string& site, const std::string& unit = "");

// --- a blocking HTTP/1.0 client ------------------------------------------------------------

struct HttpResponse {
    int status = 0;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
};

// `headers`: more request header lines, each ending in \r\n.
HttpResponse http_get(int port, const std::string& target, const std::string& headers = "");
nlohmann::json json_body(const HttpResponse& r);

}  // namespace http_support
