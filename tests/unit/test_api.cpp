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

TEST_CASE("leaks_json pages the suspected series, fastest growing first", "[http][api]") {
    auto snap = make_snapshot();
    // Five suspects: app (process), app's three stacks, svc's stack.
    auto suspect = [](Growth& g, double rate) {
        g.followed = true;
        g.suspected = true;
        g.rate = rate;
        g.flagged_since = 100;
    };
    suspect(snap.processes[0].growth, 50);
    suspect(snap.processes[0].stacks[0].growth, 40);
    suspect(snap.processes[0].stacks[1].growth, 30);
    suspect(snap.processes[0].stacks[2].growth, 20);
    suspect(snap.processes[1].stacks[0].growth, 10);
    auto all = leaks_json(snap, 160);
    CHECK(all["total"] == 5);
    CHECK(all["leaks"].size() == 5);
    CHECK(all["next_offset"].is_null());
    CHECK(all["leaks"][0]["scope"] == "process");
    CHECK(all["leaks"][0]["stack_id"] == "");
    CHECK(all["leaks"][0]["flagged_for_seconds"] == 60.0);
    CHECK(all["leaks"][4]["pid"] == "4242");

    auto first = leaks_json(snap, 160, LeaksPage{0, 2});
    CHECK(first["total"] == 5);
    REQUIRE(first["leaks"].size() == 2);
    CHECK(first["leaks"][0] == all["leaks"][0]);
    CHECK(first["leaks"][1] == all["leaks"][1]);
    CHECK(first["next_offset"] == 2);
    auto second = leaks_json(snap, 160, LeaksPage{2, 2});
    REQUIRE(second["leaks"].size() == 2);
    CHECK(second["leaks"][0] == all["leaks"][2]);
    CHECK(second["leaks"][0]["stack_id"] == hex16(kStackB));
    CHECK(second["next_offset"] == 4);
    auto last = leaks_json(snap, 160, LeaksPage{4, 2});
    REQUIRE(last["leaks"].size() == 1);
    CHECK(last["next_offset"].is_null());
    CHECK(leaks_json(snap, 160, LeaksPage{9, 2})["leaks"].empty());
}

TEST_CASE("kernel frames carry no raw address unless expose_kernel_addresses", "[http][api]") {
    auto snap = make_snapshot();
    KernelView k;
    k.bytes[0] = 4096;
    KernelStackView s;
    s.id = 0x1234;
    s.bytes = 4096;
    s.count = 1;
    s.site = "alloc_pipe_info";
    auto frames = std::make_shared<std::vector<Frame>>();
    frames->push_back(frame(0xffffffff8162fdd0, "__kmalloc_noprof", 0, "[kernel]", 0, ""));
    frames->push_back(frame(0xffffffff816c9260, "alloc_pipe_info", 0x10, "[kernel]", 0x10, ""));
    s.frames = frames;
    s.growth.followed = s.growth.suspected = true;
    s.growth.rate = 1;
    k.stacks.push_back(s);
    snap.kernel = k;

    auto hidden = kernel_json(snap, 10);
    REQUIRE(hidden.has_value());
    const auto& f = (*hidden)["stacks"][0]["frames"][1];
    CHECK_FALSE(f.contains("address"));
    CHECK(f["symbol"] == "alloc_pipe_info");
    CHECK(f["offset"] == 0x10);
    CHECK(f["module"] == "[kernel]");
    CHECK_FALSE(hidden->dump().find("ffffffff8") != std::string::npos);
    auto shown = kernel_json(snap, 10, true);
    CHECK((*shown)["stacks"][0]["frames"][1]["address"] == "0xffffffff816c9260");

    auto leaks = leaks_json(snap, 10);
    REQUIRE(leaks["leaks"].size() == 1);
    CHECK(leaks["leaks"][0]["watch"] == "kernel");
    CHECK_FALSE(leaks["leaks"][0]["frames"][0].contains("address"));
    CHECK(
        leaks_json(snap, 10, LeaksPage{0, 100, true})["leaks"][0]["frames"][0].contains("address"));
    // User-space frames keep theirs (their ASLR is the process's, not the kernel's).
    auto stacks = stacks_json(snap, 100, 1);
    CHECK((*stacks)["stacks"][0]["frames"][0].contains("address"));
}
