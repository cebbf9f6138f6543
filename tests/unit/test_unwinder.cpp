// The CFI unwinder (unwind/unwinder.cpp): rules applied step by step, rules read from the real
// libc, this process's own stack against glibc's backtrace(), and rules of JIT code from its
// instructions.
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <span>
#include <vector>

#include "proc/proc.h"
#include "symbols/symbolizer.h"
#include "unwind/unwinder.h"

using leakwatch::CfiFile;
using leakwatch::find_mapping;
using leakwatch::MapEntry;
using leakwatch::ProcReader;
using leakwatch::Symbolizer;
using leakwatch::SymbolizerOptions;
using leakwatch::unwind;
using leakwatch::Unwinder;
using leakwatch::UnwindRule;
using leakwatch::UnwindStart;

TEST_CASE("unwind applies each frame's rule and stops where a rule or the copy ends", "[unwind]") {
    // Frame A (CFA = sp + 24, rbp saved at CFA - 16), frame B (CFA = rbp + 16, rbp saved at
    // CFA - 16), then C, the outermost frame.
    const uint64_t sp = 0x7000;
    std::vector<uint64_t> words(64, 0);
    auto put = [&](uint64_t addr, uint64_t v) { words[(addr - sp) / 8] = v; };
    put(sp + 8, 0x7100);   // A's saved rbp: B's frame base
    put(sp + 16, 0x2000);  // A's return address, into B
    put(0x7100, 0);        // B's saved rbp
    put(0x7108, 0x3000);   // B's return address, into C
    std::map<uint64_t, UnwindRule> rules = {
        {0x1000, {UnwindRule::kCfaSp, 24, -16, true}},
        {0x2000, {UnwindRule::kCfaBp, 16, -16, true}},
        {0x3000, UnwindRule::end()},
    };
    auto rule_for = [&](uint64_t pc) {
        auto it = rules.find(pc);
        return it == rules.end() ? UnwindRule::end() : it->second;
    };
    UnwindStart start;
    start.ip = 0x1000;
    start.sp = sp;
    start.bp = 0x5555;
    start.stack =
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(words.data()), words.size() * 8);
    auto steps = unwind(start, rule_for, 64);
    REQUIRE(steps.size() == 3);
    CHECK(steps[0].pc == 0x1000);
    CHECK(steps[1].pc == 0x2000);
    CHECK(steps[2].pc == 0x3000);
    CHECK(steps[1].rule == rules[0x2000]);
    CHECK(steps[2].rule.kind == UnwindRule::kEnd);

    // A copy that ends before B's return address: B's rule is known, the walk stops there.
    start.stack = start.stack.first(0x100);
    steps = unwind(start, rule_for, 64);
    REQUIRE(steps.size() == 2);
    CHECK(steps[1].pc == 0x2000);
    // At most max_frames.
    start.stack =
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(words.data()), words.size() * 8);
    CHECK(unwind(start, rule_for, 1).size() == 1);
}

TEST_CASE("CFI rules from the real libc: a function's entry is CFA = rsp + 8", "[unwind]") {
    void* handle = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    REQUIRE(handle != nullptr);
    auto malloc_addr = reinterpret_cast<uint64_t>(dlsym(handle, "malloc"));
    Dl_info info{};
    REQUIRE(dladdr(reinterpret_cast<void*>(malloc_addr), &info) != 0);
    auto cfi = CfiFile::open(info.dli_fname);
    REQUIRE(cfi.has_value());
    uint64_t vaddr = malloc_addr - reinterpret_cast<uint64_t>(info.dli_fbase);
    // Before the first push the return address is at rsp and rbp is the caller's.
    auto rule = (*cfi)->rule_at(vaddr);
    REQUIRE(rule.has_value());
    CHECK(*rule == UnwindRule{UnwindRule::kCfaSp, 8, 0, false});
    CHECK_FALSE((*cfi)->rule_at(0).has_value());  // no code there
    dlclose(handle);
}

namespace {

struct OwnStack {
    UnwindStart start;
    std::vector<uint8_t> copy;
};

// Takes a snapshot of its caller's frame, as the BPF side does: the caller's return address
// into it, its stack pointer and rbp, and the stack above, up to the end of the stack mapping.
__attribute__((noinline, optimize("no-omit-frame-pointer"))) void snapshot_caller(OwnStack& out,
                                                                                  uint64_t top) {
    auto* fp = static_cast<uint64_t*>(__builtin_frame_address(0));
    out.start.ip = reinterpret_cast<uint64_t>(__builtin_return_address(0));
    out.start.sp = reinterpret_cast<uint64_t>(fp) + 16;  // the caller's sp after our return
    out.start.bp = fp[0];
    size_t n = std::min<uint64_t>(top - out.start.sp, 256 * 1024);
    out.copy.assign(reinterpret_cast<const uint8_t*>(out.start.sp),
                    reinterpret_cast<const uint8_t*>(out.start.sp) + n);
}

}  // namespace

TEST_CASE("unwinding this process's own stack agrees with glibc's backtrace()", "[unwind]") {
    // The test binary, Catch2 and libstdc++ are built without frame pointers: only CFI walks
    // through them.
    ProcReader proc;
    auto maps = proc.maps(getpid());
    REQUIRE(maps.has_value());
    uint64_t here = reinterpret_cast<uint64_t>(__builtin_frame_address(0));
    const MapEntry* stack = find_mapping(*maps, here);
    REQUIRE(stack != nullptr);

    OwnStack own;
    void* expected[64];
    // Both from this function, one right after the other: the frames above it are the same.
    snapshot_caller(own, stack->end);
    int n = backtrace(expected, 64);
    own.start.stack = own.copy;

    Symbolizer symbolizer(proc);
    Unwinder unwinder(proc, symbolizer);
    auto steps = unwinder.unwind_snapshot(getpid(), own.start, 64);
    // expected[0] is inside backtrace's caller (this function), like own.start.ip: compare the
    // callers above it.
    REQUIRE(n > 4);
    REQUIRE(steps.size() >= static_cast<size_t>(n) - 1);
    for (int i = 1; i < n; i++) {
        INFO("frame " << i);
        CHECK(steps[static_cast<size_t>(i)].pc == reinterpret_cast<uint64_t>(expected[i]));
    }
    CHECK(unwinder.stats().snapshots == 1);
    CHECK(unwinder.stats().rules >= static_cast<uint64_t>(n) - 1);
}

TEST_CASE("a snapshot of a process whose maps do not read is given up on, not waited for",
          "[unwind]") {
    // A fixture /proc tree whose maps file is a FIFO nobody writes: opening it blocks, as a read
    // of a process's maps does while the process holds up its memory map's lock.
    char tmpl[] = "/tmp/lw-unwind-maps-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string root = tmpl;
    const std::string maps = root + "/300/maps";
    REQUIRE(::mkdir((root + "/300").c_str(), 0700) == 0);
    REQUIRE(::mkfifo(maps.c_str(), 0600) == 0);
    ProcReader proc(root);
    Symbolizer symbolizer(proc, SymbolizerOptions{.wait = std::chrono::milliseconds(20)});
    Unwinder unwinder(proc, symbolizer);
    uint8_t stack[64] = {};
    UnwindStart start{.ip = 0x401000, .sp = 0x7ffe0000, .bp = 0, .stack = stack};
    CHECK(unwinder.unwind_snapshot(300, start, 8).empty());
    CHECK(unwinder.stats().snapshots == 1);
    // The loader thread waiting on the FIFO goes.
    int fd = ::open(maps.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    ::close(fd);
    std::filesystem::remove_all(root);
}

TEST_CASE("rules of JIT code from its instructions", "[unwind]") {
    using leakwatch::rule_from_code;
    // CPython 3.12's perf trampoline: endbr64; sub $8,%rsp; call *%rcx | add $8,%rsp; ret
    const std::vector<uint8_t> trampoline = {0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x08,
                                             0xff, 0xd1, 0x48, 0x83, 0xc4, 0x08, 0xc3};
    auto rule = rule_from_code(trampoline, 10);
    REQUIRE(rule.has_value());
    CHECK(*rule == UnwindRule{UnwindRule::kCfaSp, 16, 0, false});
    // A frame pointer: push %rbp; mov %rsp,%rbp; sub $0x20,%rsp; call *%rax
    const std::vector<uint8_t> framed = {0x55, 0x48, 0x89, 0xe5, 0x48,
                                         0x83, 0xec, 0x20, 0xff, 0xd0};
    rule = rule_from_code(framed, framed.size());
    REQUIRE(rule.has_value());
    CHECK(*rule == UnwindRule::frame_pointer());
    // push %rbx; push %rbp; mov %rsp,%rbp; call *%rax: CFA = rbp + 24, rbp saved at CFA - 24
    const std::vector<uint8_t> framed2 = {0x53, 0x55, 0x48, 0x89, 0xe5, 0xff, 0xd0};
    rule = rule_from_code(framed2, framed2.size());
    REQUIRE(rule.has_value());
    CHECK(*rule == UnwindRule{UnwindRule::kCfaBp, 24, -24, true});
    // push %rbx; push %rbp; sub $8,%rsp; call *%rax: rbp saved at CFA - 24
    const std::vector<uint8_t> pushes = {0x53, 0x55, 0x48, 0x83, 0xec, 0x08, 0xff, 0xd0};
    rule = rule_from_code(pushes, pushes.size());
    REQUIRE(rule.has_value());
    CHECK(*rule == UnwindRule{UnwindRule::kCfaSp, 32, -24, true});
    // Not a straight line to the return address: a jump, a pop, or ra inside an instruction.
    CHECK_FALSE(rule_from_code(std::vector<uint8_t>{0xeb, 0x00, 0xff, 0xd1}, 4).has_value());
    CHECK_FALSE(rule_from_code(std::vector<uint8_t>{0x5d, 0xff, 0xd1}, 3).has_value());
    CHECK_FALSE(rule_from_code(trampoline, 9).has_value());
    CHECK_FALSE(rule_from_code(trampoline, 0).has_value());
}

TEST_CASE("HotSpot compiled methods: the frame their prologue builds", "[unwind]") {
    using leakwatch::is_hotspot_method;
    using leakwatch::rule_from_hotspot_prologue;
    // JDK 17's native wrapper of Unsafe.allocateMemory0, as read from a running JVM: the inline
    // cache check (je over a jmp to the miss handler), a stack bang, push %rbp; mov %rsp,%rbp;
    // sub $0x40,%rsp
    const std::vector<uint8_t> wrapper = {
        0x44, 0x8b, 0x56, 0x08, 0x49, 0xbb, 0x00, 0x00, 0x00, 0x93, 0xe6, 0x7f,
        0x00, 0x00, 0x4d, 0x03, 0xd3, 0x49, 0x3b, 0xc2, 0x0f, 0x84, 0x06, 0x00,
        0x00, 0x00, 0xe9, 0x41, 0x35, 0xa6, 0xff, 0x90, 0x89, 0x84, 0x24, 0x00,
        0xc0, 0xfe, 0xff, 0x55, 0x48, 0x8b, 0xec, 0x48, 0x83, 0xec, 0x40, 0x48};
    auto rule = rule_from_hotspot_prologue(wrapper, 0x60);
    REQUIRE(rule.has_value());
    CHECK(*rule == UnwindRule{UnwindRule::kCfaSp, 16 + 0x40, -16, true});
    // C2's LeakHot.fillCache: stack bang, push %rbp, sub $0xb0,%rsp (no frame pointer)
    const std::vector<uint8_t> c2 = {0x89, 0x84, 0x24, 0x00, 0xc0, 0xfe, 0xff, 0x55,
                                     0x48, 0x81, 0xec, 0xb0, 0x00, 0x00, 0x00, 0x48};
    rule = rule_from_hotspot_prologue(c2, 0x200);
    REQUIRE(rule.has_value());
    CHECK(*rule == UnwindRule{UnwindRule::kCfaSp, 16 + 0xb0, -16, true});
    // The same method made not entrant: a jmp patched over the bang's first five bytes
    const std::vector<uint8_t> patched = {0xe9, 0x1b, 0x1a, 0x37, 0x07, 0xfe, 0xff, 0x55,
                                          0x48, 0x81, 0xec, 0xa0, 0x00, 0x00, 0x00};
    rule = rule_from_hotspot_prologue(patched, 0x100);
    REQUIRE(rule.has_value());
    CHECK(*rule == UnwindRule{UnwindRule::kCfaSp, 16 + 0xa0, -16, true});
    // C1: push %rbp; sub $0x30,%rsp
    const std::vector<uint8_t> c1 = {0x89, 0x84, 0x24, 0x00, 0xc0, 0xfe,
                                     0xff, 0x55, 0x48, 0x83, 0xec, 0x30};
    rule = rule_from_hotspot_prologue(c1, 0x40);
    REQUIRE(rule.has_value());
    CHECK(*rule == UnwindRule{UnwindRule::kCfaSp, 16 + 0x30, -16, true});
    // A return address inside the prologue, or no frame of that shape: no rule
    CHECK_FALSE(rule_from_hotspot_prologue(c1, 8).has_value());
    CHECK_FALSE(rule_from_hotspot_prologue(std::vector<uint8_t>{0x55, 0x48, 0x89, 0xe5, 0xc3}, 0x40)
                    .has_value());
    CHECK_FALSE(rule_from_hotspot_prologue(std::vector<uint8_t>{0x55, 0x48, 0x83, 0xec, 0xf0},
                                           0x40)
                    .has_value());  // a negative size

    CHECK(is_hotspot_method("void LeakHot.fillCache(int, int)"));
    CHECK(is_hotspot_method("long jdk.internal.misc.Unsafe.allocateMemory0(long)"));
    CHECK(is_hotspot_method("java.nio.ByteBuffer java.nio.ByteBuffer.allocateDirect(int)"));
    CHECK_FALSE(is_hotspot_method("Interpreter"));
    CHECK_FALSE(is_hotspot_method("StubRoutines (1)"));
    CHECK_FALSE(is_hotspot_method("I2C/C2I adapters"));
    CHECK_FALSE(is_hotspot_method("py::leak_buffers:/tmp/leak.py"));
}
