// Completing a BPF unwind snapshot (unwind/snapshots.cpp) against a fake of the maps it writes.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "leakwatch.h"
#include "proc/proc.h"
#include "symbols/symbolizer.h"
#include "unwind/snapshots.h"
#include "unwind/unwinder.h"

using namespace leakwatch;

namespace {

struct FakeMaps : SnapshotMaps {
    std::set<uint32_t> watched;
    std::map<std::pair<uint32_t, uint64_t>, lw_unwind_rule> rules;
    std::map<std::pair<uint32_t, uint64_t>, lw_stack> stacks;
    std::vector<std::pair<uint32_t, uint64_t>> done;

    bool watching(uint32_t tgid) const override { return watched.contains(tgid); }
    void set_unwind_rule(uint32_t tgid, uint64_t pc, const lw_unwind_rule& rule) override {
        rules[{tgid, pc}] = rule;
    }
    void set_stack(uint32_t tgid, uint64_t id, const lw_stack& stack) override {
        stacks[{tgid, id}] = stack;
    }
    void snapshot_done(uint32_t tgid, uint64_t key) override { done.emplace_back(tgid, key); }
};

// A snapshot of this process whose missing frame is at an address nothing maps: the walk
// ends there, at once.
std::unique_ptr<lw_snapshot> snapshot(uint32_t frames_so_far) {
    auto s = std::make_unique<lw_snapshot>();
    s->tgid = static_cast<uint32_t>(getpid());
    s->id = 0xabc;
    s->key = 0x5eed;
    s->ip = 0x10;
    s->frames.nr = frames_so_far;
    s->frames.flags = LW_STACK_PARTIAL;
    for (uint32_t i = 0; i < frames_so_far; i++) s->frames.ips[i] = 0x1000 + i;
    return s;
}

}  // namespace

TEST_CASE("a snapshot of a process no longer watched writes nothing back", "[unwind]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    Unwinder unwinder(proc, symbolizer);
    FakeMaps maps;
    complete_snapshot(maps, unwinder, *snapshot(3));
    CHECK(maps.rules.empty());
    CHECK(maps.stacks.empty());
    CHECK(maps.done.empty());
}

TEST_CASE("a completed snapshot stores its rules and whole stack, then clears its mark",
          "[unwind]") {
    ProcReader proc;
    Symbolizer symbolizer(proc);
    Unwinder unwinder(proc, symbolizer);
    FakeMaps maps;
    const uint32_t tgid = static_cast<uint32_t>(getpid());
    maps.watched = {tgid};
    // Deeper than the BPF walk goes: cut to its depth, so that the same stack walked in one go
    // later has the same frames.
    complete_snapshot(maps, unwinder, *snapshot(LW_DWARF_FRAMES + 5));

    REQUIRE(maps.rules.contains({tgid, 0x10}));
    CHECK(maps.rules[{tgid, 0x10}].kind == LW_UW_END);
    REQUIRE(maps.stacks.contains({tgid, 0xabc}));
    const lw_stack& stack = maps.stacks[{tgid, 0xabc}];
    CHECK(stack.nr == LW_DWARF_FRAMES);
    CHECK(stack.flags == 0);  // no longer partial
    CHECK(stack.ips[0] == 0x1000);
    CHECK(maps.done == std::vector<std::pair<uint32_t, uint64_t>>{{tgid, 0x5eed}});
    CHECK(unwinder.stats().snapshots == 1);
}
