// KernelSymbols (symbols/kernel_symbols.cpp): kallsyms read again as modules come and go. The
// kernel's kallsyms is a fixture file that each test rewrites between steps: at start
// (modules_start.txt: the core kernel, virtio_pci and a BPF program), after lw_kleak was loaded
// (modules_loaded.txt), and after it was unloaded and lw_other took its addresses
// (modules_reused.txt). The clock and the kernel's count of module loads and unloads are the
// test's.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "symbols/kernel_symbols.h"

using namespace leakwatch;

namespace {

constexpr uint64_t kKmalloc = 0xffffffff8162fdd0 + 0x20;  // __kmalloc_noprof
constexpr uint64_t kLeakFn = 0xffffffffc0a01000 + 0x24;   // lw_kleak: lwk_leak_kmalloc
constexpr uint64_t kVirtio = 0xffffffffc0200000 + 0x10;   // virtio_pci_probe
constexpr uint64_t kNowhere = 0xffffffffc0f00000;         // no module, ever
constexpr uint64_t kBpfProg = 0xffffffffc0300000 + 0x40;  // [bpf], not a module

struct Kernel {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() /
        ("lw_kallsyms_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::string sys_module;               // none: kallsyms alone
    bool background = false;              // reads on the test's thread
    std::optional<uint32_t> modules = 0;  // the kernel's count of module loads and unloads
    KernelSymbolsOptions::Clock::time_point now{std::chrono::seconds(1000)};
    int reads = 0;

    static int& counter() {
        static int n = 0;
        return n;
    }
    ~Kernel() { std::filesystem::remove(path); }

    void kallsyms(const std::string& fixture) {
        std::filesystem::copy_file(std::string(LEAKWATCH_FIXTURES) + "/kallsyms/" + fixture, path,
                                   std::filesystem::copy_options::overwrite_existing);
    }
    KernelSymbols symbols(const std::string& fixture) {
        kallsyms(fixture);
        auto k = KernelSymbols::load({.path = path,
                                      .sys_module = sys_module,
                                      .min_reread_interval = std::chrono::seconds(10),
                                      .module_generation = [this] { return modules; },
                                      .now = [this] { return now; },
                                      .background = background});
        if (!k) FAIL(k.error().message);
        return std::move(*k);
    }
    void wait(int seconds) { now += std::chrono::seconds(seconds); }
};

void check_named(KernelSymbols& k, uint64_t addr, uint32_t modules, const std::string& symbol,
                 const std::string& module) {
    INFO("address 0x" << std::hex << addr << std::dec << ", stored at count " << modules);
    Frame f = k.symbolize(addr, modules);
    CHECK(f.symbol == symbol);
    CHECK(f.module == module);
    CHECK(f.address == addr);
}

void check_unnamed(KernelSymbols& k, uint64_t addr, uint32_t modules) {
    check_named(k, addr, modules, "", "[unknown]");
}

}  // namespace

TEST_CASE("a module loaded after start is named once the symbols are read again",
          "[kernel_symbols]") {
    Kernel kernel;
    KernelSymbols k = kernel.symbols("modules_start.txt");
    CHECK(k.version() == 1);
    check_named(k, kKmalloc, 0, "__kmalloc_noprof", "[kernel]");
    check_named(k, kVirtio, 0, "virtio_pci_probe", "[virtio_pci]");

    // lw_kleak is loaded (the count goes to 1) and allocates.
    kernel.kallsyms("modules_loaded.txt");
    kernel.modules = 1;
    kernel.wait(30);
    check_unnamed(k, kLeakFn, 1);
    CHECK(k.refresh() == 2);  // read again at once: the last read is 30 s old
    check_named(k, kLeakFn, 1, "lwk_leak_kmalloc", "[lw_kleak]");
    CHECK(k.symbolize(kLeakFn, 1).offset == 0x24);
    // Nothing new unnamed: no read however long it has been.
    kernel.wait(60);
    check_named(k, kKmalloc, 1, "__kmalloc_noprof", "[kernel]");
    CHECK(k.refresh() == 2);
}

TEST_CASE("symbols are read again at most once per interval", "[kernel_symbols]") {
    Kernel kernel;
    KernelSymbols k = kernel.symbols("modules_start.txt");
    kernel.kallsyms("modules_loaded.txt");
    kernel.modules = 1;
    kernel.wait(3);  // 3 s after start: too early
    check_unnamed(k, kLeakFn, 1);
    CHECK(k.refresh() == 1);
    kernel.wait(6);
    CHECK(k.refresh() == 1);
    check_unnamed(k, kLeakFn, 1);  // still unnamed, still waiting
    kernel.wait(1);                // 10 s after the read at start
    CHECK(k.refresh() == 2);
    check_named(k, kLeakFn, 1, "lwk_leak_kmalloc", "[lw_kleak]");

    // Another unnamed address right after that read waits for the interval again.
    kernel.wait(1);
    check_unnamed(k, kNowhere, 1);
    CHECK(k.refresh() == 2);
    kernel.wait(9);
    CHECK(k.refresh() == 3);
}

TEST_CASE("an address a later read could not name does not make more reads", "[kernel_symbols]") {
    Kernel kernel;
    KernelSymbols k = kernel.symbols("modules_start.txt");
    kernel.wait(10);
    check_unnamed(k, kNowhere, 0);  // first met: a newer read may name it
    CHECK(k.refresh() == 2);
    check_unnamed(k, kNowhere, 0);  // the newer read could not either
    kernel.wait(100);
    CHECK(k.refresh() == 2);
    // A new unnamed address still does.
    check_unnamed(k, kNowhere + 0x100, 0);
    CHECK(k.refresh() == 3);
}

TEST_CASE("a module's addresses are never named after the module that reused them",
          "[kernel_symbols]") {
    Kernel kernel;
    KernelSymbols k = kernel.symbols("modules_start.txt");
    // lw_kleak is loaded (count 1) and read.
    kernel.kallsyms("modules_loaded.txt");
    kernel.modules = 1;
    kernel.wait(10);
    check_unnamed(k, kLeakFn, 1);
    CHECK(k.refresh() == 2);
    check_named(k, kLeakFn, 1, "lwk_leak_kmalloc", "[lw_kleak]");

    // lw_kleak is unloaded (2) and lw_other loaded at its addresses (3). A stack lw_kleak stored
    // at count 1 and first named only now, from the symbols read while lw_kleak was loaded,
    // still gets lw_kleak's names.
    kernel.kallsyms("modules_reused.txt");
    kernel.modules = 3;
    check_named(k, kLeakFn, 1, "lwk_leak_kmalloc", "[lw_kleak]");
    // A stack stored at count 3 must not be named from those symbols: lw_kleak is gone.
    check_unnamed(k, kLeakFn, 3);
    CHECK(k.refresh() == 2);  // due, but within the interval
    kernel.wait(10);
    CHECK(k.refresh() == 3);
    check_named(k, 0xffffffffc0a01000 + 0x24, 3, "other_probe", "[lw_other]");
    // A stack lw_kleak stored at count 1 and seen first now: its address is lw_other's in the
    // symbols read now, but lw_other was loaded after the stack was stored. Not named, and no
    // reread is due for it.
    check_unnamed(k, kLeakFn, 1);
    kernel.wait(60);
    CHECK(k.refresh() == 3);
    // Modules loaded before the stack and still there keep being named.
    check_named(k, kVirtio, 1, "virtio_pci_probe", "[virtio_pci]");
}

TEST_CASE("without a count of module changes, modules are named from the last read",
          "[kernel_symbols]") {
    Kernel kernel;
    kernel.modules = std::nullopt;  // a kernel without module tracepoints
    KernelSymbols k = kernel.symbols("modules_loaded.txt");
    check_named(k, kLeakFn, 0, "lwk_leak_kmalloc", "[lw_kleak]");
    kernel.kallsyms("modules_reused.txt");
    kernel.wait(10);
    check_named(k, kLeakFn, 0, "lwk_leak_kmalloc", "[lw_kleak]");  // nothing says it is gone
    check_unnamed(k, 0xffffffffc0b00000 + 0x8, 0);  // lw_other's second function: unknown here
    CHECK(k.refresh() == 2);
    check_named(k, 0xffffffffc0b00000 + 0x8, 0, "other_work", "[lw_other]");
}

TEST_CASE(
    "kernel code is named at once, other code of newer stacks after a reread; stacks from "
    "before a restart as the table says",
    "[kernel_symbols]") {
    Kernel kernel;
    KernelSymbols k = kernel.symbols("modules_start.txt");
    check_named(k, kBpfProg, 0, "bpf_prog_0123456789abcdef_kmalloc", "[bpf]");
    // Modules changed since the read: the core kernel is named, everything else waits for a
    // newer read (modules and BPF programs share addresses).
    kernel.modules = 5;
    check_named(k, kKmalloc, 5, "__kmalloc_noprof", "[kernel]");
    check_unnamed(k, kBpfProg, 5);
    check_unnamed(k, kVirtio, 5);
    // A count above the kernel's is from an earlier BPF object (the count restarted with this
    // one): what the stack's addresses were is unknown, so they are named as the table says.
    check_named(k, kVirtio, 9, "virtio_pci_probe", "[virtio_pci]");
}

TEST_CASE("a module's last function ends where its next section starts", "[kernel_symbols]") {
    // lw_kleak's init code (its .init.text, after lwk_tick) is freed once it has run and leaves
    // kallsyms; an allocation its init made keeps a return address there.
    constexpr uint64_t kInitCode = 0xffffffffc0a03000 + 0x30;
    Kernel kernel;
    KernelSymbols without = kernel.symbols("modules_loaded.txt");
    check_named(without, kInitCode, 0, "lwk_tick", "[lw_kleak]");  // 64 KiB past its start
    kernel.sys_module = std::string(LEAKWATCH_FIXTURES) + "/kallsyms/sys_module";
    KernelSymbols with = kernel.symbols("modules_loaded.txt");
    check_unnamed(with, kInitCode, 0);
    check_named(with, 0xffffffffc0a01100 + 0x40, 0, "lwk_tick", "[lw_kleak]");
}

TEST_CASE("symbols are read again in the background, and installed once read", "[kernel_symbols]") {
    Kernel kernel;
    kernel.background = true;
    KernelSymbols k = kernel.symbols("modules_start.txt");
    kernel.kallsyms("modules_loaded.txt");
    kernel.modules = 1;
    kernel.wait(10);
    check_unnamed(k, kLeakFn, 1);
    CHECK(k.refresh() == 1);  // started, not done: the caller goes on with what it has
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (k.refresh() == 1 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(k.version() == 2);
    check_named(k, kLeakFn, 1, "lwk_leak_kmalloc", "[lw_kleak]");
}
