// The JSON API (http/api.cpp) of a snapshot with known numbers.
#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "http/api.h"
#include "http_support.h"

using namespace leakwatch;
using namespace http_support;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

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
