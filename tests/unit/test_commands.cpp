// client/commands.cpp: what the leakwatch commands print from the API's documents.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "commands.h"

using namespace leakwatch::client;
using Catch::Matchers::Contains;

namespace {

const nlohmann::json kStacks = nlohmann::json::parse(R"({
  "pid": 4242, "watch": "myapp", "comm": "myapp", "outstanding_bytes": 2621440,
  "outstanding_allocations": 40, "allocated_bytes_total": 9437184, "freed_bytes_total": 6815744,
  "leak_suspected": true, "growth_bytes_per_second": 65536.0,
  "stacks": [
    {"stack_id": "6215a51bfb5b9a23", "site": "record_entry", "outstanding_bytes": 2621440,
     "outstanding_allocations": 40, "leak_suspected": true, "growth_bytes_per_second": 65536.0,
     "complete": true,
     "frames": [
       {"address": "0x7fcfe03b3930", "symbol": "malloc", "offset": 0,
        "module": "/usr/lib/x86_64-linux-gnu/libc.so.6", "module_offset": "0x98930"},
       {"address": "0x563075536970", "symbol": "record_entry", "offset": 34,
        "module": "/usr/bin/myapp", "module_offset": "0x1970", "file": "/src/app.c", "line": 12,
        "inlined": [{"function": "grab", "file": "/src/app.c", "line": 5}]},
       {"address": "0x563075536a00", "symbol": "", "offset": 0,
        "module": "/usr/bin/myapp", "module_offset": "0x1a00"}]},
    {"stack_id": "00000000000abcde", "site": "other", "outstanding_bytes": 4096,
     "outstanding_allocations": 1, "complete": false, "frames": []}]})");

}  // namespace

TEST_CASE("format_frame: address, symbol+offset, module, source line, inlined functions",
          "[client]") {
    const auto& frames = kStacks["stacks"][0]["frames"];
    CHECK(format_frame(frames[0], "\t") == "\t0x7fcfe03b3930 malloc+0x0 [libc.so.6]\n");
    CHECK(format_frame(frames[1], "") ==
          "0x563075536970 record_entry+0x22 [myapp] /src/app.c:12\n"
          "  (inlined) grab /src/app.c:5\n");
    CHECK(format_frame(frames[2], "") == "0x563075536a00 myapp+0x1a00 [myapp]\n");
}

TEST_CASE("format_stacks: the process's totals, then each stack with exact bytes", "[client]") {
    std::string out = format_stacks(kStacks);
    CHECK_THAT(out, Contains("myapp (pid 4242, watch myapp): 2621440 bytes outstanding in 40 "
                             "allocations; 9437184 bytes allocated, 6815744 freed; LEAK "
                             "SUSPECTED, growing 65536 B/s\n"));
    CHECK_THAT(out, Contains("2621440 bytes in 40 allocations from stack 6215a51bfb5b9a23 (site "
                             "record_entry), leak suspected, growing 65536 B/s\n"
                             "\t0x7fcfe03b3930 malloc+0x0 [libc.so.6]\n"));
    CHECK_THAT(out, Contains("4096 bytes in 1 allocations from stack 00000000000abcde (site "
                             "other), callers missing\n"));
}

TEST_CASE("format_top: per process, at most `top` stacks, memleak's wording", "[client]") {
    std::string out = format_top({kStacks}, 1, 0);
    CHECK_THAT(out, Contains("Top 1 stacks with outstanding allocations, 1 processes watched:"));
    CHECK_THAT(out, Contains("\t2621440 bytes in 40 allocations from stack 6215a51bfb5b9a23"));
    CHECK_THAT(out, !Contains("00000000000abcde"));
    nlohmann::json idle = kStacks;
    idle["stacks"] = nlohmann::json::array();
    CHECK_THAT(format_top({idle}, 5, 0), Contains("\tno stack holds memory\n"));
}

TEST_CASE("format_leaks: one line per suspect, frames on request", "[client]") {
    CHECK(format_leaks(nlohmann::json::parse(R"({"leaks": []})"), false) == "no leak suspected\n");
    auto doc = nlohmann::json::parse(R"({"leaks": [
      {"scope": "stack", "watch": "myapp", "pid": "4242", "comm": "myapp", "stack_id": "6215",
       "site": "record_entry", "growth_bytes_per_second": 65536.4, "flagged_since": 1.0,
       "flagged_for_seconds": 95.4, "outstanding_bytes": 83886080,
       "frames": [{"address": "0x1", "symbol": "malloc", "offset": 0, "module": "/lib/libc.so.6",
                   "module_offset": "0x1"}]},
      {"scope": "process", "watch": "myapp", "pid": "4242", "comm": "myapp", "stack_id": "",
       "site": "", "growth_bytes_per_second": 70000, "flagged_since": 1.0,
       "flagged_for_seconds": 90, "outstanding_bytes": 90000000, "frames": []}]})");
    std::string brief = format_leaks(doc, false);
    CHECK_THAT(brief, Contains("SCOPE"));
    CHECK_THAT(brief, Contains("stack    myapp            4242     myapp            record_entry"));
    CHECK_THAT(brief, Contains("65536       83886080         95"));
    CHECK_THAT(brief, Contains("process  myapp            4242     myapp            -"));
    CHECK_THAT(brief, !Contains("malloc"));
    CHECK_THAT(format_leaks(doc, true), Contains("\t0x1 malloc+0x0 [libc.so.6]\n"));
}
