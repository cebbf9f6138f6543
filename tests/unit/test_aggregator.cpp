// Aggregator tests (aggregate/aggregator.cpp): a plain-data AllocationSource feeds
// kernel-shaped totals, stacks and live allocations; a resolver over a small table of fake
// functions stands in for the tracker and its Symbolizer.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "aggregate/aggregator.h"
#include "aggregate/source.h"

using namespace leakwatch;
using namespace std::chrono_literals;

namespace {

// What the BPF maps would hold, as plain data; counts the calls the aggregator makes.
struct FakeSource : AllocationSource {
    std::vector<std::pair<uint32_t, ProcTotals>> totals;
    std::vector<StackTotals> stacks;
    std::map<std::pair<uint32_t, uint64_t>, RawStack> raw;
    std::vector<LiveAllocation> live;
    LostCounters lost_counters{};
    std::vector<MapUsage> map_usage;

    int stack_calls = 0;
    std::vector<std::set<uint32_t>> live_requests;

    std::vector<std::pair<uint32_t, ProcTotals>> process_totals() override { return totals; }
    std::vector<StackTotals> stack_totals() override { return stacks; }
    std::optional<RawStack> stack(uint32_t tgid, uint64_t id) override {
        stack_calls++;
        auto it = raw.find({tgid, id});
        if (it == raw.end()) return std::nullopt;
        return it->second;
    }
    std::vector<LiveAllocation> live_allocations(const std::set<uint32_t>& tgids) override {
        live_requests.push_back(tgids);
        std::vector<LiveAllocation> out;
        for (const auto& a : live)
            if (tgids.contains(a.tgid)) out.push_back(a);
        return out;
    }
    LostCounters lost() override { return lost_counters; }
    std::vector<MapUsage> usage() override { return map_usage; }

    std::vector<GrowthPage> pages;
    std::vector<std::pair<uint32_t, uint64_t>> forgotten;
    std::vector<GrowthPage> growth_pages() override { return pages; }
    void forget_growth_pages(const std::vector<std::pair<uint32_t, uint64_t>>& p) override {
        forgotten.insert(forgotten.end(), p.begin(), p.end());
    }
};

// The kernel's accounting: memory per pid, and the pages each still holds.
struct FakeMemory : MemoryReader {
    std::map<int, ProcMemory> memory_of;
    std::map<int, std::set<uint64_t>> held;
    Result<ProcMemory> memory(int pid) override {
        auto it = memory_of.find(pid);
        if (it == memory_of.end()) return fail("no such process");
        return it->second;
    }
    Result<std::vector<bool>> pages_held(int pid, const std::vector<uint64_t>& pages) override {
        if (!held.count(pid)) return fail("no such process");
        std::vector<bool> out;
        for (uint64_t p : pages) out.push_back(held[pid].count(p) > 0);
        return out;
    }
};
FakeMemory no_memory;

// Functions laid out in one module mapped at `base`; unknown addresses come back the way the
// Symbolizer returns them (module "[unknown]", module_offset = address).
struct FakeFunction {
    uint64_t start, end;
    std::string symbol;
};

struct FakeResolver : FrameResolver {
    uint64_t base = 0x400000;
    std::string module = "/usr/bin/fixture";
    std::string build_id = "abcdef0123456789";
    std::vector<FakeFunction> functions;
    std::vector<std::pair<uint32_t, uint64_t>> calls;
    std::map<uint32_t, uint64_t> jit;  // perf map generation per pid

    uint64_t jit_generation(uint32_t pid) override { return jit[pid]; }
    Frame resolve(uint32_t pid, uint64_t address) override {
        calls.emplace_back(pid, address);
        Frame f;
        f.address = address;
        for (const auto& fn : functions) {
            if (address < fn.start || address >= fn.end) continue;
            f.symbol = fn.symbol;
            f.offset = address - fn.start;
            f.module = module;
            f.module_offset = address - base;
            f.build_id = build_id;
            return f;
        }
        f.module = "[unknown]";
        f.module_offset = address;
        return f;
    }
};

ProcessMeta meta(uint32_t pid, std::string watch = "app", std::string comm = "app",
                 Duration min_age = Duration(0), std::string prefix = "") {
    ProcessMeta m;
    m.pid = pid;
    m.watch = std::move(watch);
    m.comm = std::move(comm);
    m.min_age = min_age;
    m.symbol_prefix = std::move(prefix);
    return m;
}

const ProcessView* find_process(const Snapshot& snap, uint32_t pid) {
    for (const auto& p : snap.processes)
        if (p.pid == pid) return &p;
    return nullptr;
}

std::vector<uint64_t> stack_ids(const ProcessView& p) {
    std::vector<uint64_t> ids;
    for (const auto& s : p.stacks) ids.push_back(s.id);
    return ids;
}

std::vector<std::string> symbols_of(const StackView& s) {
    std::vector<std::string> out;
    for (const auto& f : *s.frames) out.push_back(f.symbol);
    return out;
}

// A fixed layout: the allocator at 0x1000.., the program's functions at 0x401000...
FakeResolver layout() {
    FakeResolver r;
    r.functions = {
        {0x1000, 0x1100, "malloc"},
        {0x1100, 0x1200, "je_malloc"},
        {0x1200, 0x1300, "operator new(unsigned long)"},
        {0x1300, 0x1400, "calloc"},
        {0x401000, 0x401100, "leak_fn"},
        {0x401100, 0x401200, "main"},
        {0x401200, 0x401300, "std::allocator<int>::allocate(unsigned long)"},
        {0x401300, 0x401400, "Foo::bar"},
        {0x401400, 0x401500, "other_fn"},
    };
    return r;
}

}  // namespace

// --- frame_addresses -----------------------------------------------------------------------

TEST_CASE("frame_addresses inserts the caller after frame 0 when frame 1 differs",
          "[aggregate][frames]") {
    RawStack raw{0x401010, {0x1000, 0x401120, 0x7000}};
    CHECK(frame_addresses(raw) == std::vector<uint64_t>{0x1000, 0x401010, 0x401120, 0x7000});

    RawStack only_entry{0x401010, {0x1000}};
    CHECK(frame_addresses(only_entry) == std::vector<uint64_t>{0x1000, 0x401010});
}

TEST_CASE("frame_addresses does not duplicate a caller the kernel already captured",
          "[aggregate][frames]") {
    RawStack raw{0x401010, {0x1000, 0x401010, 0x401120}};
    CHECK(frame_addresses(raw) == std::vector<uint64_t>{0x1000, 0x401010, 0x401120});
}

TEST_CASE("frame_addresses of empty stacks and caller 0", "[aggregate][frames]") {
    CHECK(frame_addresses(RawStack{}).empty());
    CHECK(frame_addresses(RawStack{0, {0x1000, 0x401120}}) ==
          std::vector<uint64_t>{0x1000, 0x401120});
    CHECK(frame_addresses(RawStack{0, {0x1000}}) == std::vector<uint64_t>{0x1000});
}

// --- Aggregator::sample: totals and stacks -------------------------------------------------

TEST_CASE("sample copies per-process totals of the watched processes, ascending pid",
          "[aggregate][sample]") {
    FakeSource src;
    ProcTotals a{1000, 10, 5000, 50, 4000, 40};
    ProcTotals b{77, 1, 77, 1, 0, 0};
    ProcTotals unwatched{999999, 9, 0, 0, 0, 0};
    src.totals = {{300, b}, {100, a}, {555, unwatched}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(300, "svc", "svcd"), meta(100, "app", "appd"), meta(200)}, 0);

    REQUIRE(snap.processes.size() == 3);
    CHECK(snap.processes[0].pid == 100);
    CHECK(snap.processes[1].pid == 200);
    CHECK(snap.processes[2].pid == 300);
    CHECK(find_process(snap, 555) == nullptr);

    const auto& p = snap.processes[0];
    CHECK(p.watch == "app");
    CHECK(p.comm == "appd");
    CHECK(p.totals.bytes == 1000);
    CHECK(p.totals.count == 10);
    CHECK(p.totals.alloc_bytes == 5000);
    CHECK(p.totals.alloc_count == 50);
    CHECK(p.totals.free_bytes == 4000);
    CHECK(p.totals.free_count == 40);

    // Watched but not (yet) in the kernel's totals: zeros.
    CHECK(snap.processes[1].totals.bytes == 0);
    CHECK(snap.processes[1].totals.alloc_bytes == 0);
    CHECK(snap.processes[1].stacks.empty());

    CHECK(snap.processes[2].watch == "svc");
    CHECK(snap.processes[2].comm == "svcd");
    CHECK(snap.processes[2].totals.bytes == 77);
    CHECK(snap.processes[2].totals.alloc_count == 1);
}

TEST_CASE("sample sorts stacks by bytes descending, ties by id, empty stacks last",
          "[aggregate][sample]") {
    FakeSource src;
    src.totals = {{100, ProcTotals{}}, {200, ProcTotals{}}};
    src.stacks = {
        {100, 5, 100, 1},   {100, 3, 500, 2},
        {100, 9, 100, 4},   {100, 1, 0, 0},        // everything freed: kept, last
        {100, 4, 100, 1},   {200, 2, 1000000, 1},  // another process: not mixed in
        {100, 8, 7000, 70},
    };
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100), meta(200)}, 0);
    const ProcessView* p = find_process(snap, 100);
    REQUIRE(p != nullptr);
    // the empty stack stays: the leak detector follows it (a release is history)
    CHECK(stack_ids(*p) == std::vector<uint64_t>{8, 3, 4, 5, 9, 1});
    CHECK(p->stacks[0].bytes == 7000);
    CHECK(p->stacks[0].count == 70);
    CHECK(p->stacks[1].bytes == 500);
    CHECK(p->stacks[1].count == 2);
    CHECK(p->stacks[4].count == 4);

    const ProcessView* q = find_process(snap, 200);
    REQUIRE(q != nullptr);
    CHECK(stack_ids(*q) == std::vector<uint64_t>{2});
    CHECK(q->stacks[0].bytes == 1000000);
}

TEST_CASE("sample resolves the same stack id separately per process", "[aggregate][sample]") {
    FakeSource src;
    src.stacks = {{100, 7, 10, 1}, {200, 7, 20, 1}};
    src.raw[{100, 7}] = RawStack{0x401010, {0x1000, 0x401110}};
    src.raw[{200, 7}] = RawStack{0x401410, {0x1000, 0x401110}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100), meta(200)}, 0);
    REQUIRE(find_process(snap, 100)->stacks.size() == 1);
    REQUIRE(find_process(snap, 200)->stacks.size() == 1);
    CHECK(find_process(snap, 100)->stacks[0].site == "leak_fn");
    CHECK(find_process(snap, 200)->stacks[0].site == "other_fn");
    for (const auto& [pid, address] : r.calls) CHECK((pid == 100 || pid == 200));
}

// --- Aggregator::sample: sites and frames --------------------------------------------------

TEST_CASE("sample names each stack's site by its first non-allocator frame",
          "[aggregate][sample][site]") {
    FakeSource src;
    src.stacks = {{100, 1, 400, 4}, {100, 2, 300, 3}, {100, 3, 200, 2}, {100, 4, 100, 1}};
    // malloc -> leak_fn -> main, with the caller inserted by frame_addresses.
    src.raw[{100, 1}] = RawStack{0x401010, {0x1000, 0x401110}};
    // operator new -> std::allocator<int>::allocate -> Foo::bar
    src.raw[{100, 2}] = RawStack{0x401210, {0x1200, 0x401310}};
    // Only allocator frames and addresses nothing knows.
    src.raw[{100, 3}] = RawStack{0x1310, {0x1000}};
    src.raw[{100, 4}] = RawStack{0x9010, {0x1000, 0x9100}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100)}, 0);
    const auto& stacks = snap.processes.at(0).stacks;
    REQUIRE(stacks.size() == 4);

    CHECK(stacks[0].site == "leak_fn");
    CHECK(symbols_of(stacks[0]) == std::vector<std::string>{"malloc", "leak_fn", "main"});

    CHECK(stacks[1].site == "Foo::bar");
    CHECK(symbols_of(stacks[1]) ==
          std::vector<std::string>{"operator new(unsigned long)",
                                   "std::allocator<int>::allocate(unsigned long)", "Foo::bar"});

    CHECK(stacks[2].site == "[unknown]");
    // The first frame without a symbol names the site by module + offset.
    CHECK(stacks[3].site == "[unknown]+0x9010");
}

TEST_CASE("sample treats prefixed allocator symbols as allocator frames",
          "[aggregate][sample][site]") {
    FakeSource src;
    src.stacks = {{100, 1, 64, 1}, {200, 1, 64, 1}};
    src.raw[{100, 1}] = RawStack{0x401010, {0x1100}};
    src.raw[{200, 1}] = RawStack{0x401010, {0x1100}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100, "redis", "redis-server", Duration(0), "je_"), meta(200)}, 0);
    CHECK(find_process(snap, 100)->stacks.at(0).site == "leak_fn");
    CHECK(find_process(snap, 200)->stacks.at(0).site == "je_malloc");
}

TEST_CASE("sample looks up return addresses at address-1 but reports the real address",
          "[aggregate][sample][frames]") {
    FakeSource src;
    src.stacks = {{100, 1, 64, 1}};
    // The caller's return address is leak_fn's last byte + 1, i.e. main's first byte: the
    // call itself is the last instruction of leak_fn.
    src.raw[{100, 1}] = RawStack{0x401100, {0x1000, 0x401150}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100)}, 0);
    REQUIRE(r.calls.size() == 3);
    CHECK(r.calls[0] == std::pair<uint32_t, uint64_t>{100, 0x1000});  // entry: as is
    CHECK(r.calls[1] == std::pair<uint32_t, uint64_t>{100, 0x4010ff});
    CHECK(r.calls[2] == std::pair<uint32_t, uint64_t>{100, 0x40114f});

    const auto& s = snap.processes.at(0).stacks.at(0);
    REQUIRE(s.frames->size() == 3);
    const Frame& entry = (*s.frames)[0];
    CHECK(entry.address == 0x1000);
    CHECK(entry.symbol == "malloc");
    CHECK(entry.offset == 0);

    const Frame& caller = (*s.frames)[1];
    CHECK(caller.address == 0x401100);
    CHECK(caller.symbol == "leak_fn");
    CHECK(caller.offset == 0x100);
    CHECK(caller.module == "/usr/bin/fixture");
    CHECK(caller.module_offset == 0x1100);
    CHECK(caller.build_id == "abcdef0123456789");

    const Frame& outer = (*s.frames)[2];
    CHECK(outer.address == 0x401150);
    CHECK(outer.symbol == "main");
    CHECK(outer.offset == 0x50);
    CHECK(outer.module_offset == 0x1150);
    CHECK(s.site == "leak_fn");
}

// A return address whose symbol is unknown: Frame::offset means "address - symbol start, when
// symbol is known", so the +1 correction for the address-1 lookup must not make it 1.
TEST_CASE("sample keeps offset 0 for return addresses without a symbol",
          "[aggregate][sample][frames]") {
    FakeSource src;
    src.stacks = {{100, 1, 64, 1}};
    src.raw[{100, 1}] = RawStack{0x9010, {0x1000}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100)}, 0);
    const auto& frames = *snap.processes.at(0).stacks.at(0).frames;
    REQUIRE(frames.size() == 2);
    CHECK(frames[1].address == 0x9010);
    CHECK(frames[1].symbol.empty());
    CHECK(frames[1].module_offset == 0x9010);
    CHECK(frames[1].offset == 0);
}

TEST_CASE("sample caches resolved stacks while the process stays attached",
          "[aggregate][sample][cache]") {
    FakeSource src;
    src.stacks = {{100, 1, 64, 1}, {100, 2, 32, 1}, {200, 1, 16, 1}};
    src.raw[{100, 1}] = RawStack{0x401010, {0x1000, 0x401110}};
    src.raw[{100, 2}] = RawStack{0x401310, {0x1200}};
    src.raw[{200, 1}] = RawStack{0x401410, {0x1000}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);
    std::vector<ProcessMeta> procs = {meta(100), meta(200)};

    auto first = agg.sample(procs, 0);
    size_t resolved = r.calls.size();
    int stacks_read = src.stack_calls;
    CHECK(resolved == 3 + 2 + 2);
    CHECK(stacks_read == 3);

    auto second = agg.sample(procs, 0);
    CHECK(r.calls.size() == resolved);
    CHECK(src.stack_calls == stacks_read);
    // Frames are shared between snapshots, not copied.
    CHECK(second.processes[0].stacks[0].frames == first.processes[0].stacks[0].frames);
    CHECK(second.processes[0].stacks[0].site == "leak_fn");

    // pid 100 attached anew (it exec'd): its stacks are resolved again, not pid 200's.
    procs[0].attached_at = 1795717263.3;
    auto third = agg.sample(procs, 0);
    CHECK(r.calls.size() == resolved + 3 + 2);
    CHECK(src.stack_calls == stacks_read + 2);
    for (size_t i = resolved; i < r.calls.size(); i++) CHECK(r.calls[i].first == 100);
    CHECK(third.processes[0].stacks[0].site == "leak_fn");
    CHECK(third.processes[0].stacks[0].frames != first.processes[0].stacks[0].frames);
    agg.sample(procs, 0);
    CHECK(r.calls.size() == resolved + 5);

    // pid 200 detached for a round: what was cached of it goes.
    agg.sample({procs[0]}, 0);
    CHECK(r.calls.size() == resolved + 5);
    agg.sample(procs, 0);
    CHECK(r.calls.size() == resolved + 5 + 2);
    CHECK(r.calls.back().first == 200);
}

// JIT-compiled code named later (the runtime wrote more of its perf map): a stack with an
// unnamed frame in anonymous memory is resolved again when the generation changes.
TEST_CASE("sample resolves stacks with unnamed JIT frames again when the perf map changes",
          "[aggregate][sample][cache]") {
    FakeSource src;
    src.stacks = {{100, 1, 64, 1}, {100, 2, 32, 1}};
    src.raw[{100, 1}] = RawStack{0x7f0000001010, {0x1000}};  // called from JIT code
    src.raw[{100, 2}] = RawStack{0x401010, {0x1000}};
    struct JitResolver : FakeResolver {
        bool named = false;
        Frame resolve(uint32_t pid, uint64_t address) override {
            Frame f = FakeResolver::resolve(pid, address);
            if (address >= 0x7f0000000000) {
                f.module = "[anon]";
                if (named) f.symbol = "LeakDirect.leakBuffer(int)";
            }
            return f;
        }
    } r;
    r.functions = layout().functions;
    Aggregator agg(src, r, no_memory);

    auto first = agg.sample({meta(100)}, 0);
    size_t resolved = r.calls.size();
    agg.sample({meta(100)}, 0);
    CHECK(r.calls.size() == resolved);  // the same generation: cached

    r.named = true;
    r.jit[100] = 1;
    auto later = agg.sample({meta(100)}, 0);
    CHECK(r.calls.size() == resolved + 2);  // only the stack with the JIT frame
    const auto& stacks = later.processes.at(0).stacks;
    CHECK(stacks.at(0).site == "LeakDirect.leakBuffer");
    CHECK(stacks.at(1).site == "leak_fn");
    agg.sample({meta(100)}, 0);
    CHECK(r.calls.size() == resolved + 2);  // named now: cached again
}

TEST_CASE("sample gives stack id 0 the site [unknown] and no frames", "[aggregate][sample]") {
    FakeSource src;
    src.stacks = {{100, 0, 4096, 3}, {100, 42, 10, 1}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100)}, 0);
    const auto& stacks = snap.processes.at(0).stacks;
    REQUIRE(stacks.size() == 2);
    CHECK(stacks[0].id == 0);
    CHECK(stacks[0].bytes == 4096);
    CHECK(stacks[0].site == "[unknown]");
    REQUIRE(stacks[0].frames != nullptr);
    CHECK(stacks[0].frames->empty());
    // A stack id the stack map no longer holds: also [unknown], no frames.
    CHECK(stacks[1].id == 42);
    CHECK(stacks[1].site == "[unknown]");
    REQUIRE(stacks[1].frames != nullptr);
    CHECK(stacks[1].frames->empty());
    CHECK(r.calls.empty());
    CHECK(src.stack_calls == 1);  // id 0 is not looked up
}

// A stack the map did not hold (it was full) is resolved once the map stores it.
TEST_CASE("sample resolves a stack that appears in the stack map after a miss",
          "[aggregate][sample][cache]") {
    FakeSource src;
    src.stacks = {{100, 1, 64, 1}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto first = agg.sample({meta(100)}, 0);
    CHECK(first.processes.at(0).stacks.at(0).site == "[unknown]");

    src.raw[{100, 1}] = RawStack{0x401010, {0x1000}};
    auto second = agg.sample({meta(100)}, 0);
    CHECK(second.processes.at(0).stacks.at(0).site == "leak_fn");
    CHECK(second.processes.at(0).stacks.at(0).frames->size() == 2);
}

// --- Aggregator::sample: min_age -----------------------------------------------------------

TEST_CASE("sample counts only allocations older than min_age for processes that set it",
          "[aggregate][sample][min_age]") {
    constexpr uint64_t kSec = 1000000000ull;
    const uint64_t now = 1000 * kSec;
    FakeSource src;
    src.totals = {{100, ProcTotals{999999, 999, 50000, 500, 40000, 400}},
                  {200, ProcTotals{3000, 3, 3000, 3, 0, 0}}};
    src.stacks = {{100, 1, 999000, 900},
                  {100, 2, 999, 99},
                  {100, 4, 5, 5},  // only in the kernel totals: not old enough
                  {200, 1, 2000, 2},
                  {200, 2, 1000, 1}};
    src.live = {
        {100, 0xa000, 100, now - 60 * kSec, 1},  // old
        {100, 0xa100, 300, now - 11 * kSec, 1},  // old
        {100, 0xa200, 5000, now - 1 * kSec, 1},  // young
        {100, 0xb000, 700, now - 5 * kSec, 2},   // young
        {100, 0xc000, 50, now - 20 * kSec, 3},   // old, stack 3 not in the kernel's totals
        {100, 0xc100, 50, now - 30 * kSec, 3},   // old
        {200, 0xd000, 8, now - 60 * kSec, 1},    // process without min_age: ignored
    };
    src.raw[{100, 1}] = RawStack{0x401010, {0x1000}};
    src.raw[{100, 3}] = RawStack{0x401310, {0x1200}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100, "app", "app", 10s), meta(200)}, now);

    REQUIRE(src.live_requests.size() == 1);
    CHECK(src.live_requests[0] == std::set<uint32_t>{100});

    const ProcessView* aged = find_process(snap, 100);
    REQUIRE(aged != nullptr);
    CHECK(aged->totals.bytes == 500);
    CHECK(aged->totals.count == 4);
    // Cumulative counters still come from the kernel.
    CHECK(aged->totals.alloc_bytes == 50000);
    CHECK(aged->totals.free_bytes == 40000);
    REQUIRE(stack_ids(*aged) == std::vector<uint64_t>{1, 3});
    CHECK(aged->stacks[0].bytes == 400);
    CHECK(aged->stacks[0].count == 2);
    CHECK(aged->stacks[0].site == "leak_fn");
    CHECK(aged->stacks[1].bytes == 100);
    CHECK(aged->stacks[1].count == 2);
    CHECK(aged->stacks[1].site == "Foo::bar");

    const ProcessView* plain = find_process(snap, 200);
    REQUIRE(plain != nullptr);
    CHECK(plain->totals.bytes == 3000);
    CHECK(plain->totals.count == 3);
    CHECK(stack_ids(*plain) == std::vector<uint64_t>{1, 2});
    CHECK(plain->stacks[0].bytes == 2000);
}

TEST_CASE("sample with min_age and only young allocations reports nothing outstanding",
          "[aggregate][sample][min_age]") {
    constexpr uint64_t kSec = 1000000000ull;
    const uint64_t now = 500 * kSec;
    FakeSource src;
    src.totals = {{100, ProcTotals{640, 10, 640, 10, 0, 0}}};
    src.stacks = {{100, 1, 640, 10}};
    for (uint64_t i = 0; i < 10; i++) src.live.push_back({100, 0xa000 + i, 64, now - i * kSec, 1});
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100, "app", "app", 2min)}, now);
    CHECK(snap.processes.at(0).totals.bytes == 0);
    CHECK(snap.processes.at(0).totals.count == 0);
    CHECK(snap.processes.at(0).stacks.empty());

    // Two minutes later all of them are old enough.
    auto later = agg.sample({meta(100, "app", "app", 2min)}, now + 120 * kSec + 1);
    CHECK(later.processes.at(0).totals.bytes == 640);
    CHECK(later.processes.at(0).totals.count == 10);
}

TEST_CASE("sample without min_age does not walk live allocations", "[aggregate][sample][min_age]") {
    FakeSource src;
    src.totals = {{100, ProcTotals{64, 1, 64, 1, 0, 0}}};
    src.live = {{100, 0xa000, 1 << 20, 0, 1}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);
    auto snap = agg.sample({meta(100)}, 1ull << 50);
    CHECK(src.live_requests.empty());
    CHECK(snap.processes.at(0).totals.bytes == 64);
}

// --- Aggregator::sample: self metrics ------------------------------------------------------

TEST_CASE("sample copies lost counters and map usage through", "[aggregate][sample]") {
    FakeSource src;
    for (size_t i = 0; i < src.lost_counters.size(); i++) src.lost_counters[i] = 1000 + i;
    src.map_usage = {{"live", 123, 65536}, {"stacks", 45, 16384}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto before = std::chrono::system_clock::now();
    auto snap = agg.sample({}, 0);
    auto after = std::chrono::system_clock::now();

    CHECK(snap.processes.empty());
    CHECK(snap.lost == src.lost_counters);
    REQUIRE(snap.usage.size() == 2);
    CHECK(snap.usage[0].map == "live");
    CHECK(snap.usage[0].entries == 123);
    CHECK(snap.usage[0].capacity == 65536);
    CHECK(snap.usage[1].map == "stacks");
    CHECK(snap.usage[1].entries == 45);
    CHECK(snap.usage[1].capacity == 16384);
    CHECK(snap.taken >= before);
    CHECK(snap.taken <= after);
}

TEST_CASE("sample carries each stack's allocations since attach, and its allocator frames",
          "[aggregate][sample][alloc]") {
    constexpr uint64_t kSec = 1000000000ull;
    const uint64_t now = 1000 * kSec;
    FakeSource src;
    src.stacks = {{100, 1, 400, 4, 4000, 40},
                  {100, 2, 0, 0, 900, 9},    // holds nothing now, allocated before
                  {100, 5, 100, 1, 100, 1},  // the same frames as stack 1, completed later
                  {200, 1, 64, 1, 640, 10},
                  {200, 3, 0, 0, 50, 5}};  // min_age: no live allocation is old enough
    src.raw[{100, 1}] = RawStack{0x401010, {0x1000}};
    src.raw[{100, 2}] = RawStack{0x401210, {0x1200, 0x401310}};
    src.raw[{100, 5}] = RawStack{0x401010, {0x1000}, /*content_id=*/1};
    src.raw[{200, 1}] = RawStack{0x401010, {0x1000}};
    src.raw[{200, 3}] = RawStack{0x401410, {0x1000}};
    src.live = {{200, 0xa000, 64, now - 60 * kSec, 1}};
    FakeResolver r = layout();
    Aggregator agg(src, r, no_memory);

    auto snap = agg.sample({meta(100), meta(200, "app", "app", 10s)}, now);
    const ProcessView* p = find_process(snap, 100);
    REQUIRE(p);
    REQUIRE(stack_ids(*p) == std::vector<uint64_t>{1, 2});
    CHECK(p->stacks[0].bytes == 500);
    CHECK(p->stacks[0].alloc_bytes == 4100);
    CHECK(p->stacks[0].alloc_count == 41);
    CHECK(p->stacks[0].allocator_frames == 1);  // malloc
    CHECK(p->stacks[1].alloc_bytes == 900);
    CHECK(p->stacks[1].allocator_frames == 2);  // operator new, std::allocator<int>::allocate

    // min_age filters what is held, not what was allocated.
    const ProcessView* aged = find_process(snap, 200);
    REQUIRE(aged);
    REQUIRE(stack_ids(*aged) == std::vector<uint64_t>{1, 3});
    CHECK(aged->stacks[0].bytes == 64);
    CHECK(aged->stacks[0].alloc_bytes == 640);
    CHECK(aged->stacks[1].bytes == 0);
    CHECK(aged->stacks[1].alloc_bytes == 50);
    CHECK(aged->stacks[1].alloc_count == 5);
}

// --- Aggregator::sample: the watch tier ----------------------------------------------------

TEST_CASE("the watch tier: memory from the kernel, and stacks of the sampled pages still held",
          "[aggregate][sample][watch]") {
    FakeSource src;
    FakeResolver r = layout();
    r.functions.push_back({0x1400, 0x1500, "__memset_avx2_unaligned_erms"});
    // Two touching stacks: inside malloc (its header) under leak_fn, and memset under Foo::bar.
    src.raw[{100, 7}] = RawStack{0, {0x1010, 0x401010, 0x401110}};
    src.raw[{100, 8}] = RawStack{0, {0x1410, 0x401310, 0x401110}};
    src.pages = {{100, 0x10000, 7, 1}, {100, 0x11000, 7, 2},
                 {100, 0x12000, 7, 3}, {100, 0x20000, 8, 4},
                 {100, 0x21000, 8, 5}, {300, 0x9000, 7, 6}};  // a process no longer watched
    FakeMemory mem;
    mem.memory_of[100] = ProcMemory{8 << 20, 1 << 20, 64 << 20};
    mem.held[100] = {0x10000, 0x11000, 0x12000, 0x20000};  // 0x21000 was released
    Aggregator agg(src, r, mem);
    ProcessMeta m = meta(100);
    m.tracking = TrackingState::kWatch;
    m.fault_sample_bytes = 512 * 1024;
    auto snap = agg.sample({m}, 0);

    const ProcessView* p = find_process(snap, 100);
    REQUIRE(p);
    CHECK(p->memory_known);
    CHECK(p->memory.anon == 8u << 20);
    // Its series is the kernel's accounting: anonymous memory, resident and swapped out.
    CHECK(p->series_bytes() == (9 << 20));
    REQUIRE(p->growth_stacks.size() == 2);
    CHECK(p->growth_stacks[0].site == "leak_fn");
    CHECK(p->growth_stacks[0].bytes == 3 * 512 * 1024);
    CHECK(p->growth_stacks[0].count == 3);
    // A first touch inside memset belongs to the function that called it.
    CHECK(p->growth_stacks[1].site == "Foo::bar");
    CHECK(p->growth_stacks[1].bytes == 512 * 1024);
    // The released page, and the pages of a process no longer watched, are forgotten.
    std::set<std::pair<uint32_t, uint64_t>> forgotten(src.forgotten.begin(), src.forgotten.end());
    CHECK(forgotten == std::set<std::pair<uint32_t, uint64_t>>{{100, 0x21000}, {300, 0x9000}});
}

TEST_CASE("a sampled page stands for at least a page; probed processes keep their series",
          "[aggregate][sample][watch]") {
    FakeSource src;
    FakeResolver r = layout();
    src.raw[{100, 7}] = RawStack{0, {0x1010, 0x401010}};
    src.pages = {{100, 0x10000, 7, 1}};
    src.totals = {{100, ProcTotals{4096, 4, 4096, 4, 0, 0}}};
    FakeMemory mem;
    mem.memory_of[100] = ProcMemory{1 << 20, 0, 2 << 20};
    mem.held[100] = {0x10000};
    Aggregator agg(src, r, mem);
    ProcessMeta m = meta(100);
    m.tracking = TrackingState::kWatch;
    m.fault_sample_bytes = 1;  // every page sampled
    auto snap = agg.sample({m}, 0);
    REQUIRE(snap.processes.at(0).growth_stacks.size() == 1);
    CHECK(snap.processes.at(0).growth_stacks[0].bytes == sysconf(_SC_PAGESIZE));

    m.tracking = TrackingState::kFull;
    snap = agg.sample({m}, 0);
    CHECK(snap.processes.at(0).series_bytes() == 4096);
    m.tracking = TrackingState::kEscalated;
    snap = agg.sample({m}, 0);
    CHECK(snap.processes.at(0).series_bytes() == 1 << 20);
}

// --- Python frames ---------------------------------------------------------------------------

namespace {

// Names code objects by address, with the instruction index + 1 as the line.
struct PythonResolver : FakeResolver {
    std::map<uint64_t, std::string> code;
    Frame resolve_python(uint32_t pid, uint64_t address, uint32_t instruction) override {
        Frame f = FrameResolver::resolve_python(pid, address, instruction);
        f.symbol = code[address];
        f.line = instruction;
        return f;
    }
};

}  // namespace

TEST_CASE("sample puts each group of Python frames in place of its evaluation frame",
          "[aggregate][sample][python]") {
    PythonResolver r;
    r.functions = {{0x1000, 0x1100, "malloc"},
                   {0x401000, 0x401100, "PyByteArray_Resize"},
                   {0x401100, 0x401200, "_PyEval_EvalFrameDefault"},
                   {0x401200, 0x401300, "builtin_sorted"},
                   {0x401300, 0x401400, "Py_RunMain"},
                   {0x401400, 0x401500, "py::trampoline:/srv/app.py"}};
    r.code = {{0x7000, "inner"}, {0x7100, "Klass.key"}, {0x7200, "outer"}};
    FakeSource src;
    src.stacks = {{100, 1, 400, 4}};
    // malloc <- PyByteArray_Resize <- eval <- trampoline <- sorted <- eval <- Py_RunMain; the
    // Python frames in two groups: [inner, Klass.key] and [outer].
    RawStack raw{0x401010, {0x1000, 0x401010, 0x401110, 0x401410, 0x401210, 0x401110, 0x401310}};
    // The first group ends at its last frame's bit (3.11), the second at a shim (3.12+: 1).
    raw.python = {0x7000 | (5ull << 48), 0x7100 | (2ull << 48) | 1, 0x7200 | (9ull << 48), 1};
    src.raw[{100, 1}] = raw;
    Aggregator agg(src, r, no_memory);
    auto snap = agg.sample({meta(100)}, 0);
    const auto& stack = snap.processes.at(0).stacks.at(0);
    CHECK(symbols_of(stack) == std::vector<std::string>{"malloc", "PyByteArray_Resize", "inner",
                                                        "Klass.key", "builtin_sorted", "outer",
                                                        "Py_RunMain"});
    CHECK(stack.site == "inner");
    CHECK(stack.frames->at(2).module == "[python]");
    CHECK(stack.frames->at(2).line == 5);
    CHECK(stack.frames->at(5).line == 9);
}

TEST_CASE("a Python frame whose code object is still being read is named in a later sample",
          "[aggregate][sample][python]") {
    // The code object is read on the loader: pending the first time, named the next.
    struct Pending : PythonResolver {
        int asked = 0;
        Frame resolve_python(uint32_t pid, uint64_t address, uint32_t instruction) override {
            if (asked++ == 0) {
                Frame f = FrameResolver::resolve_python(pid, address, instruction);
                f.pending = true;
                return f;
            }
            return PythonResolver::resolve_python(pid, address, instruction);
        }
    } r;
    r.functions = {{0x1000, 0x1100, "malloc"},
                   {0x401000, 0x401100, "PyByteArray_Resize"},
                   {0x401100, 0x401200, "_PyEval_EvalFrameDefault"}};
    r.code = {{0x7000, "leaky"}};
    FakeSource src;
    src.stacks = {{100, 1, 400, 4}};
    RawStack raw{0x401010, {0x1000, 0x401010, 0x401110}};
    raw.python = {0x7000 | (3ull << 48) | 1};
    src.raw[{100, 1}] = raw;
    Aggregator agg(src, r, no_memory);
    auto first = agg.sample({meta(100)}, 0);
    CHECK(first.processes.at(0).stacks.at(0).frames->at(2).symbol.empty());
    auto second = agg.sample({meta(100)}, 0);
    CHECK(symbols_of(second.processes.at(0).stacks.at(0)) ==
          std::vector<std::string>{"malloc", "PyByteArray_Resize", "leaky"});
    CHECK(second.processes.at(0).stacks.at(0).site == "leaky");
}

TEST_CASE("Python groups without an evaluation frame go after the native frames",
          "[aggregate][python]") {
    auto named = [](const std::string& s) {
        Frame f;
        f.symbol = s;
        return f;
    };
    std::vector<Frame> frames = {named("malloc"), named("worker")};
    std::vector<std::vector<Frame>> groups = {{named("a")}, {named("b")}};
    CHECK(interleave_python(frames, groups).empty());
    REQUIRE(frames.size() == 4);
    CHECK(frames[2].symbol == "a");
    CHECK(frames[3].symbol == "b");
}
