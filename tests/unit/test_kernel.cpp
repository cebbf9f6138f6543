// KernelAggregator (aggregate/kernel.cpp) on plain data: what the kmem maps would hold, and
// symbols by address.
#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <set>

#include "aggregate/kernel.h"

using namespace leakwatch;

namespace {

struct FakeKernel : KernelSource {
    std::vector<KernelTotals> totals;
    std::map<uint64_t, std::vector<uint64_t>> stacks;
    std::vector<KernelTotals> removed;
    std::vector<KernelTotals> kernel_totals() override { return totals; }
    std::optional<KernelStack> kernel_stack(uint64_t id) override {
        auto it = stacks.find(id);
        if (it == stacks.end()) return std::nullopt;
        return KernelStack{it->second, 0};
    }
    void remove_kernel_totals(const std::vector<KernelTotals>& keys) override {
        removed.insert(removed.end(), keys.begin(), keys.end());
    }
    LostCounters lost() override { return {}; }
    std::vector<MapUsage> usage(uint64_t, uint64_t) override { return {}; }
};

// Addresses 0x1000 * n are function n of this table (return addresses are looked up - 1).
const std::vector<std::string> kNames = {
    "",
    "bpf_prog_0123456789abcdef_kmalloc",
    "__kmalloc_noprof",
    "alloc_pipe_info",
    "do_pipe2",
    "__alloc_pages_noprof",
    "anon_pipe_write",
    "allocate_slab",
    "___slab_alloc",
    "kmem_cache_alloc_noprof",
    "__alloc_skb",
    "net_rx_action",
    "handle_softirqs",
    "do_syscall_64",
};
uint64_t at(const std::string& name) {
    for (size_t i = 0; i < kNames.size(); i++)
        if (kNames[i] == name) return 0x1000 * i + 0x10;
    FAIL("no such function " << name);
    return 0;
}
Frame resolve(uint64_t addr) {
    Frame f;
    f.address = addr;
    size_t i = addr / 0x1000;
    if (i > 0 && i < kNames.size()) {
        f.symbol = kNames[i];
        f.offset = addr % 0x1000;
        f.module = "[kernel]";
    } else {
        f.module = "[unknown]";
    }
    return f;
}
// Names addresses with resolve(); `refresh` as the test sets it.
struct TableNamer : KernelNamer {
    std::function<Frame(uint64_t)> table = resolve;
    uint64_t version = 1;
    std::vector<uint64_t> asked;
    Frame name(uint64_t address, uint32_t) override {
        asked.push_back(address);
        return table(address);
    }
    uint64_t refresh() override { return version; }
};

std::vector<uint64_t> stack_of(std::initializer_list<const char*> names) {
    std::vector<uint64_t> out;
    for (const char* n : names) out.push_back(at(n));
    return out;
}

}  // namespace

TEST_CASE("kernel totals per kind, stack and process", "[kernel]") {
    FakeKernel src;
    src.stacks[1] = stack_of({"bpf_prog_0123456789abcdef_kmalloc", "__kmalloc_noprof",
                              "alloc_pipe_info", "do_pipe2", "do_syscall_64"});
    src.stacks[2] = stack_of({"__alloc_pages_noprof", "anon_pipe_write", "do_syscall_64"});
    src.totals = {
        {100, 0, 5000, 1, 1024, 4},  // kmalloc, pid 100
        {200, 0, 6000, 1, 512, 2},   // kmalloc, same stack, pid 200
        {100, 2, 5000, 2, 8192, 2},  // page, pid 100
    };
    std::set<uint32_t> alive = {100, 200};
    TableNamer namer;
    KernelAggregator agg(src, namer, [&](uint32_t pid, uint64_t) -> std::optional<ProcessIdentity> {
        if (!alive.count(pid)) return std::nullopt;
        return ProcessIdentity{"p" + std::to_string(pid), pid == 100 ? "nginx.service" : ""};
    });
    KernelView v = agg.sample();
    CHECK(v.bytes[0] == 1536);
    CHECK(v.count[0] == 6);
    CHECK(v.bytes[2] == 8192);
    CHECK(v.bytes[1] == 0);
    REQUIRE(v.stacks.size() == 2);
    CHECK(v.stacks[0].site == "anon_pipe_write");
    CHECK(v.stacks[0].bytes == 8192);
    CHECK(v.stacks[1].site == "alloc_pipe_info");
    CHECK(v.stacks[1].bytes == 1536);  // both processes together
    CHECK(v.stacks[1].count == 6);
    REQUIRE(v.processes.size() == 2);
    CHECK(v.processes[0].pid == 100);
    CHECK(v.processes[0].comm == "p100");
    CHECK(v.processes[0].unit == "nginx.service");
    CHECK(v.processes[1].unit.empty());
    CHECK(v.processes[0].bytes == 1024 + 8192);
    CHECK(v.processes[1].pid == 200);
    CHECK(v.processes[1].bytes == 512);
}

TEST_CASE("pages that back slab objects are counted once, as the objects", "[kernel]") {
    FakeKernel src;
    src.stacks[1] = stack_of({"__alloc_pages_noprof", "allocate_slab", "___slab_alloc",
                              "kmem_cache_alloc_noprof", "do_pipe2"});
    src.stacks[2] = stack_of({"kmem_cache_alloc_noprof", "do_pipe2"});
    src.totals = {{100, 2, 1, 1, 8192, 1}, {100, 1, 1, 2, 4096, 64}};
    TableNamer namer;
    KernelAggregator agg(src, namer, [](uint32_t, uint64_t) { return ProcessIdentity{"p", ""}; });
    KernelView v = agg.sample();
    CHECK(v.bytes[2] == 0);  // the slab's page
    CHECK(v.backing_bytes == 8192);
    CHECK(v.bytes[1] == 4096);  // its objects
    REQUIRE(v.stacks.size() == 1);
    CHECK(v.stacks[0].site == "do_pipe2");
    REQUIRE(v.processes.size() == 1);
    CHECK(v.processes[0].bytes == 4096);
}

TEST_CASE("allocations made serving an interrupt are charged to no process", "[kernel]") {
    FakeKernel src;
    src.stacks[1] = stack_of(
        {"__kmalloc_noprof", "__alloc_skb", "net_rx_action", "handle_softirqs", "do_syscall_64"});
    src.totals = {{100, 0, 1, 1, 2048, 1}};
    TableNamer namer;
    KernelAggregator agg(src, namer, [](uint32_t, uint64_t) { return ProcessIdentity{"p", ""}; });
    KernelView v = agg.sample();
    CHECK(v.bytes[0] == 2048);
    REQUIRE(v.stacks.size() == 1);
    CHECK(v.stacks[0].site == "__alloc_skb");
    CHECK(v.processes.empty());
}

TEST_CASE("empty totals of processes that are gone are deleted, others kept", "[kernel]") {
    FakeKernel src;
    src.stacks[1] = stack_of({"__kmalloc_noprof", "alloc_pipe_info"});
    src.totals = {
        {100, 0, 5000, 1, 0, 0},   // alive, empty: kept (it may allocate again)
        {300, 0, 7000, 1, 0, 0},   // gone, empty: deleted
        {400, 0, 8000, 1, 64, 1},  // gone, still holding memory: kept, but no process series
        {0, 0, 0, 1, 0, 0},        // no process: never deleted
    };
    TableNamer namer;
    KernelAggregator agg(src, namer, [](uint32_t pid, uint64_t) -> std::optional<ProcessIdentity> {
        if (pid == 100) return ProcessIdentity{"alive", ""};
        return std::nullopt;
    });
    KernelView v = agg.sample();
    CHECK(v.totals_entries == 4);  // every entry read, empty ones too
    CHECK(v.live_records == 1);    // the records they count: the kernel_live map's use
    REQUIRE(src.removed.size() == 1);
    CHECK(src.removed[0].tgid == 300);
    CHECK(src.removed[0].start == 7000);
    CHECK(v.bytes[0] == 64);
    CHECK(v.processes.empty());
    REQUIRE(v.stacks.size() == 1);
    CHECK(v.stacks[0].bytes == 64);
}

TEST_CASE("a reused pid is a different process", "[kernel]") {
    FakeKernel src;
    src.stacks[1] = stack_of({"__kmalloc_noprof", "alloc_pipe_info"});
    src.totals = {{100, 0, 5000, 1, 64, 1}, {100, 0, 9000, 1, 128, 2}};
    TableNamer namer;
    KernelAggregator agg(
        src, namer, [](uint32_t, uint64_t start) -> std::optional<ProcessIdentity> {
            if (start == 9000) return ProcessIdentity{"new", ""};
            return std::nullopt;  // the pid now belongs to the process that started at 9000
        });
    KernelView v = agg.sample();
    REQUIRE(v.processes.size() == 1);
    CHECK(v.processes[0].comm == "new");
    CHECK(v.processes[0].bytes == 128);
}

TEST_CASE("in_interrupt knows x86 and arm64 interrupt entries", "[kernel]") {
    auto frames = [](std::initializer_list<const char*> names) {
        std::vector<Frame> out;
        for (const char* n : names) out.push_back(Frame{0, n, 0, "[kernel]", 0, "", "", 0, {}});
        return out;
    };
    CHECK(in_interrupt(frames({"__kmalloc_noprof", "handle_softirqs", "irq_exit_rcu"})));
    CHECK(in_interrupt(frames({"__kmalloc_noprof", "asm_sysvec_apic_timer_interrupt"})));
    CHECK(in_interrupt(frames({"__kmalloc_noprof", "__do_softirq.cold"})));
    CHECK(in_interrupt(frames({"kmalloc", "gic_handle_irq", "el1_interrupt"})));
    CHECK_FALSE(in_interrupt(frames({"__kmalloc_noprof", "alloc_pipe_info", "do_syscall_64"})));
}

TEST_CASE("unnamed frames are named again when the namer can name more; named ones are kept",
          "[kernel]") {
    FakeKernel src;
    // Stack 1 is named at once; stack 2's caller (0x20010) is in a module the namer does not
    // know yet.
    src.stacks[1] = stack_of({"__kmalloc_noprof", "alloc_pipe_info", "do_syscall_64"});
    src.stacks[2] = {at("__kmalloc_noprof"), 0x20010, at("do_syscall_64")};
    src.totals = {{0, 0, 0, 1, 1024, 1}, {0, 0, 0, 2, 2048, 2}};
    TableNamer namer;
    KernelAggregator agg(src, namer, [](uint32_t, uint64_t) { return ProcessIdentity{"p", ""}; });

    auto stack = [](const KernelView& v, uint64_t id) {
        for (const auto& s : v.stacks)
            if (s.id == id) return s;
        FAIL("no stack " << id);
        return KernelStackView{};
    };
    KernelView v = agg.sample();
    CHECK(stack(v, 1).site == "alloc_pipe_info");
    CHECK(stack(v, 2).site == "[unknown]");
    auto published = stack(v, 2).frames;

    // The module's symbols are read (a new version); in the same table, stack 1's caller now
    // names another function, as if its address had been reused.
    namer.table = [](uint64_t addr) {
        Frame f = resolve(addr);
        if (addr / 0x1000 == 0x20) {
            f.symbol = "leak_fn";
            f.offset = addr % 0x1000;
            f.module = "[lw_kleak]";
        }
        if (addr / 0x1000 == 3) f.symbol = "other_fn";
        return f;
    };
    namer.version = 2;
    namer.asked.clear();
    v = agg.sample();
    CHECK(stack(v, 2).site == "leak_fn");          // named in the same sample as the new version
    CHECK(stack(v, 1).site == "alloc_pipe_info");  // named frames are never looked up again
    // Only stack 2's unnamed frame was asked for again.
    REQUIRE(namer.asked.size() == 1);
    CHECK(namer.asked[0] == 0x20010 - 1);
    auto frames = stack(v, 2).frames;
    REQUIRE(frames->size() == 3);
    CHECK((*frames)[1].symbol == "leak_fn");
    CHECK((*frames)[1].module == "[lw_kleak]");
    CHECK((*frames)[1].offset == 0x10);  // the return address's offset, not the call's
    CHECK((*frames)[1].address == 0x20010);
    // What a published snapshot holds is not changed under it.
    CHECK((*published)[1].symbol.empty());

    // Without a new version nothing is asked again.
    namer.asked.clear();
    agg.sample();
    CHECK(namer.asked.empty());
}
