// Kernel symbolization from kallsyms text and which kernel frames are allocator internals.
// Fixtures: tests/fixtures/kallsyms/kallsyms.txt holds lines of 6.18's /proc/kallsyms as root
// reads it (plus a made-up module, memory_leak), kallsyms_hidden.txt the same lines as a reader
// without CAP_SYSLOG sees them. Frame names in the stacks below come from stacks captured by a
// raw_tp BPF program and by `perf record -g` on kmem tracepoints of 6.18.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "aggregate/kernel_site.h"
#include "symbols/kallsyms.h"

namespace {

using leakwatch::backs_slab_or_kmalloc;
using leakwatch::Frame;
using leakwatch::is_kernel_allocator_frame;
using leakwatch::Kallsyms;
using leakwatch::kernel_site_of;

std::string fixture_path(const std::string& name) {
    return std::string(LEAKWATCH_FIXTURES) + "/kallsyms/" + name;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

const Kallsyms& fixture() {
    static const Kallsyms k = [] {
        auto parsed = Kallsyms::parse(read_file(fixture_path("kallsyms.txt")));
        if (!parsed) FAIL(parsed.error().message);
        return std::move(*parsed);
    }();
    return k;
}

void check_frame(uint64_t address, const std::string& symbol, uint64_t offset,
                 const std::string& module) {
    INFO("address 0x" << std::hex << address);
    Frame f = fixture().symbolize(address);
    CHECK(f.address == address);
    CHECK(f.symbol == symbol);
    CHECK(f.offset == offset);
    CHECK(f.module == module);
    CHECK(f.module_offset == offset);
    CHECK(f.build_id.empty());
}

void check_unknown(const Kallsyms& k, uint64_t address) {
    INFO("address 0x" << std::hex << address);
    Frame f = k.symbolize(address);
    CHECK(f.address == address);
    CHECK(f.symbol.empty());
    CHECK(f.offset == 0);
    CHECK(f.module == "[unknown]");
    CHECK(f.module_offset == 0);
}

std::vector<Frame> stack(const std::vector<std::string>& symbols) {
    std::vector<Frame> frames;
    uint64_t address = 0xffffffff81000000;
    for (const auto& s : symbols) {
        Frame f;
        f.address = address += 0x100;
        f.symbol = s;
        f.module = s.empty() ? "[unknown]" : "[kernel]";
        frames.push_back(f);
    }
    return frames;
}

}  // namespace

TEST_CASE("kallsyms keeps one text symbol per address, kernel and modules", "[kallsyms]") {
    // 46 lines: 35 addresses with text symbols; aliases, data, per-CPU zero addresses and the
    // _etext/_einittext markers do not count.
    CHECK(fixture().size() == 35);
}

TEST_CASE("kallsyms symbolizes kernel addresses with offsets", "[kallsyms]") {
    check_frame(0xffffffff816c9bf0, "alloc_pipe_info", 0, "[kernel]");
    check_frame(0xffffffff816c9bf0 + 0x2a, "alloc_pipe_info", 0x2a, "[kernel]");
    check_frame(0xffffffff81635e90 + 0x237, "__kmalloc_cache_noprof", 0x237, "[kernel]");
    check_frame(0xffffffff8162fd40 + 0x2b, "__slab_alloc.isra.0", 0x2b, "[kernel]");
    check_frame(0xffffffff81207610 + 1, "abort", 1, "[kernel]");  // weak (W)
    // The byte before a symbol belongs to the one before it.
    check_frame(0xffffffff816c9bf0 - 1, "__pfx_alloc_pipe_info", 0xf, "[kernel]");
    // A __pfx_ symbol without its function after it keeps its whole name.
    check_frame(0xffffffff816c9e20 + 0x100, "__pfx_free_pipe_info", 0x100, "[kernel]");
    check_frame(0xffffffff83783b00 + 0x1000, "start_kernel", 0x1000, "[kernel]");
}

TEST_CASE("kallsyms symbolizes module symbols, sorted from unsorted input", "[kallsyms]") {
    check_frame(0xffffffffc0a01010, "leak_fn", 0, "[memory_leak]");
    check_frame(0xffffffffc0a01010 + 0x42, "leak_fn", 0x42, "[memory_leak]");
    check_frame(0xffffffffc0a01000 + 8, "__pfx_leak_fn", 8, "[memory_leak]");
    // The module's last function ends where its data starts.
    check_frame(0xffffffffc0a03000 - 1, "leak_exit", 0x1eff, "[memory_leak]");
    check_unknown(fixture(), 0xffffffffc0a03000);
    check_unknown(fixture(), 0xffffffffc0a03048);
    check_frame(0xffffffffc0025c8c + 0x30, "bpf_prog_1e312dfcf68d6312_k2", 0x30, "[bpf]");
    check_frame(0xffffffffc0201000 + 0x20, "ftrace_trampoline", 0x20, "[__builtin__ftrace]");
}

TEST_CASE("kallsyms binary search edges", "[kallsyms]") {
    SECTION("exact start of the first symbol picks the kernel's first alias") {
        check_frame(0xffffffff81000000, "srso_alias_untrain_ret", 0, "[kernel]");
    }
    SECTION("below the first symbol") {
        check_unknown(fixture(), 0);
        check_unknown(fixture(), 0x1000);  // zero-address per-CPU symbols are no code
        check_unknown(fixture(), 0xffffffff80ffffff);
    }
    SECTION("exact start of a symbol after a padding symbol") {
        check_frame(0xffffffff816ca5b0, "do_pipe2", 0, "[kernel]");
        check_frame(0xffffffff816ca5b0 - 0x10, "__pfx_do_pipe2", 0, "[kernel]");
    }
    SECTION("a text symbol wins over data at its address") {
        check_frame(0xffffffff83783000, "_sinittext", 0, "[kernel]");
    }
    SECTION("_etext and _einittext end the text before them") {
        check_frame(0xffffffff8220bb07, "__SCT__tp_func_ma_write", 7, "[kernel]");
        check_unknown(fixture(), 0xffffffff8220bb08);
        check_unknown(fixture(), 0xffffffff82300000);
        check_unknown(fixture(), 0xffffffff82400000);  // __start_rodata
        check_unknown(fixture(), 0xffffffff837f8910 + 8);
    }
    SECTION("the last symbol of a module claims a bounded region") {
        // k2 is followed by another module's symbol, far away.
        check_frame(0xffffffffc0025c8c + 0xffff, "bpf_prog_1e312dfcf68d6312_k2", 0xffff, "[bpf]");
        check_unknown(fixture(), 0xffffffffc0025c8c + 0x10000);
        check_unknown(fixture(), 0xffffffffc0201000 + 0x10000);
    }
    SECTION("beyond the end") {
        check_unknown(fixture(), 0xffffffffc0a04000);
        check_unknown(fixture(), UINT64_MAX);
    }
}

TEST_CASE("kallsyms: the very last symbol claims a bounded region", "[kallsyms]") {
    auto k = Kallsyms::parse(
        "ffffffff81000000 T _stext\n"
        "ffffffff81000100 t last_fn\n");
    REQUIRE(k.has_value());
    CHECK(k->size() == 2);
    CHECK(k->symbolize(0xffffffff81000100 + 0x10).symbol == "last_fn");
    CHECK(k->symbolize(0xffffffff81000100 + 0xffff).symbol == "last_fn");
    check_unknown(*k, 0xffffffff81000100 + 0x10000);
    check_unknown(*k, UINT64_MAX);
    // Without a trailing newline and with CRLF line ends, too.
    auto crlf = Kallsyms::parse("ffffffff81000000 T _stext\r\nffffffff81000100 t last_fn");
    REQUIRE(crlf.has_value());
    CHECK(crlf->symbolize(0xffffffff81000101).symbol == "last_fn");
}

TEST_CASE("kallsyms names the line of malformed input", "[kallsyms]") {
    struct Case {
        std::string text, expected;
    };
    const std::vector<Case> cases = {
        {"ffffffff81000000 T _stext\nnothex T foo\n", "line 2: bad address 'nothex'"},
        {"ffffffff81000000 T _stext\n\nffffffff81000010 T\n", "line 3: expected ADDRESS TYPE"},
        {"ffffffff81000000 TT _stext\n", "line 1: bad type 'TT'"},
        {"ffffffff81000000 t foo\t[mod\n", "line 1: bad module '[mod'"},
        {"ffffffff81000000 t foo\t[mod] extra\n", "line 1: too many fields"},
        {"ffffffff81000000 t foo\nfffffffff81000000000 t bar\n", "line 2: bad address"},
        {"0xffffffff81000000 t foo\n", "line 1: bad address"},
    };
    for (const auto& c : cases) {
        INFO(c.text);
        auto k = Kallsyms::parse(c.text);
        REQUIRE_FALSE(k.has_value());
        CHECK_THAT(k.error().message, Catch::Contains(c.expected));
    }
}

TEST_CASE("kallsyms without text symbols is an error", "[kallsyms]") {
    for (std::string text : {"", "\n\n", "ffffffff82400000 D __start_rodata\n"}) {
        auto k = Kallsyms::parse(text);
        REQUIRE_FALSE(k.has_value());
        CHECK_THAT(k.error().message, Catch::Contains("no text symbols"));
    }
}

TEST_CASE("kallsyms with all-zero addresses says they are hidden", "[kallsyms]") {
    auto k = Kallsyms::parse(read_file(fixture_path("kallsyms_hidden.txt")));
    REQUIRE_FALSE(k.has_value());
    CHECK_THAT(k.error().message, Catch::Contains("addresses are zero") &&
                                      Catch::Contains("hides them") && Catch::Contains("root") &&
                                      Catch::Contains("kernel.kptr_restrict"));
}

TEST_CASE("Kallsyms::load names the file in errors", "[kallsyms]") {
    auto hidden = Kallsyms::load(fixture_path("kallsyms_hidden.txt"));
    REQUIRE_FALSE(hidden.has_value());
    CHECK_THAT(hidden.error().message,
               Catch::StartsWith(fixture_path("kallsyms_hidden.txt") + ": all symbol addresses"));
    auto missing = Kallsyms::load(fixture_path("no-such-file"));
    REQUIRE_FALSE(missing.has_value());
    CHECK_THAT(missing.error().message,
               Catch::Contains("no-such-file") && Catch::Contains("No such file or directory"));
    auto ok = Kallsyms::load(fixture_path("kallsyms.txt"));
    REQUIRE(ok.has_value());
    CHECK(ok->size() == 35);
}

TEST_CASE("Kallsyms::load parses the real /proc/kallsyms in well under a second", "[root]") {
    using Clock = std::chrono::steady_clock;
    auto ms = [](Clock::duration d) {
        return std::chrono::duration<double, std::milli>(d).count();
    };
    auto t0 = Clock::now();
    std::ifstream in("/proc/kallsyms");
    if (!in) FAIL("cannot open /proc/kallsyms: this test needs root");
    std::ostringstream buf;
    buf << in.rdbuf();
    std::string text = buf.str();
    auto t1 = Clock::now();
    auto k = Kallsyms::parse(text);
    auto t2 = Clock::now();
    if (!k) FAIL("this test needs root (with kernel.kptr_restrict < 2): " << k.error().message);
    auto loaded = Kallsyms::load();
    auto t3 = Clock::now();
    REQUIRE(loaded.has_value());
    WARN("/proc/kallsyms: " << k->size() << " text symbols; read " << ms(t1 - t0) << " ms, parse "
                            << ms(t2 - t1) << " ms, load (read+parse) " << ms(t3 - t2) << " ms");
    CHECK(ms(t2 - t1) < 500);
    CHECK(ms(t3 - t2) < 1000);
    CHECK(k->size() > 10000);

    // Every function the file names at a unique address symbolizes to itself one byte in, as
    // a plain scan of the text sees it.
    std::istringstream lines(text);
    std::string line;
    size_t checked = 0;
    std::vector<std::pair<uint64_t, std::string>> functions;
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        std::string addr, type, name, module;
        fields >> addr >> type >> name >> module;
        if (type != "T" && type != "t") continue;
        functions.emplace_back(std::stoull(addr, nullptr, 16), name + " " + module);
    }
    std::sort(functions.begin(), functions.end());
    for (size_t i = 1; i + 1 < functions.size(); ++i) {
        const auto& [start, who] = functions[i];
        if (start == functions[i - 1].first || start == functions[i + 1].first) continue;
        if (functions[i + 1].first - start < 2) continue;
        std::string name = who.substr(0, who.find(' '));
        if (name == "_etext" || name == "_einittext" || name.ends_with("_text_end")) continue;
        std::string module = who.substr(who.find(' ') + 1);
        if (module.empty()) module = "[kernel]";
        Frame f = k->symbolize(start + 1);
        if (f.symbol != name || f.offset != 1 || f.module != module) {
            FAIL("0x" << std::hex << start + 1 << ": want " << name << " " << module << ", got "
                      << f.symbol << "+0x" << f.offset << " " << f.module);
        }
        ++checked;
    }
    CHECK(checked > 10000);
}

TEST_CASE("is_kernel_allocator_frame: allocator internals of 5.10 to 6.18", "[kernel_site]") {
    const std::vector<std::string> positives = {
        // 6.18 (this machine's /proc/kallsyms)
        "__kmalloc_noprof", "__kmalloc_cache_noprof", "__kmalloc_node_noprof",
        "__kmalloc_cache_node_noprof", "__kmalloc_node_track_caller_noprof",
        "__kmalloc_large_noprof", "__kmalloc_large_node_noprof", "___kmalloc_large_node",
        "kmalloc_trace_noprof", "kmalloc_nolock_noprof", "kmalloc_array_noprof.constprop.0",
        "kzalloc_noprof.constprop.0", "__kvmalloc_node_noprof", "krealloc_node_align_noprof",
        "kvrealloc_node_align_noprof", "kmemdup_noprof", "kmemdup_nul", "kstrdup", "kstrdup_const",
        "kstrndup", "kmem_cache_alloc_noprof", "kmem_cache_alloc_lru_noprof",
        "kmem_cache_alloc_node_noprof", "kmem_cache_alloc_bulk_noprof", "__kmem_cache_alloc_bulk",
        "___slab_alloc", "___slab_alloc.constprop.0", "__slab_alloc.isra.0", "allocate_slab",
        "alloc_slab_obj_exts", "__memcg_slab_post_alloc_hook", "__alloc_pages_noprof",
        "__alloc_frozen_pages_noprof", "alloc_frozen_pages_noprof", "alloc_pages_mpol",
        "alloc_pages_mpol_noprof", "alloc_pages_noprof", "alloc_pages_bulk_noprof",
        "alloc_pages_exact_noprof", "__alloc_pages_slowpath.constprop.0", "get_page_from_freelist",
        "get_free_pages_noprof", "get_zeroed_page_noprof", "folio_alloc_noprof",
        "folio_alloc_mpol_noprof", "__folio_alloc_noprof", "vma_alloc_folio_noprof",
        "post_alloc_hook", "rmqueue_bulk", "pcpu_alloc_noprof", "pcpu_alloc_noprof.cold",
        "__vmalloc_node_range_noprof", "__vmalloc_area_node", "vmalloc_noprof", "vzalloc_noprof",
        "__traceiter_kmalloc", "__traceiter_mm_page_alloc", "__bpf_trace_kmalloc", "bpf_trace_run6",
        "bpf_trace_run10", "trace_event_raw_event_kmalloc", "trace_call_bpf", "perf_trace_kmalloc",
        "perf_trace_run_bpf_submit", "bpf_prog_1e312dfcf68d6312_k1", "bpf_prog_6deef7357e7b4530",
        // 5.10 and 6.1
        "kmalloc_order_trace", "kmalloc_order", "kmem_cache_alloc_trace",
        "kmem_cache_alloc_node_trace", "__kmalloc_track_caller", "__kmalloc_node_track_caller",
        "__kmalloc", "__kmalloc_node", "kmalloc_large_node", "__do_kmalloc_node",
        "__kmem_cache_alloc_node", "kmem_cache_alloc", "kmem_cache_alloc_lru", "kvmalloc_node",
        "__alloc_pages_nodemask", "__alloc_pages", "alloc_pages_current", "alloc_pages_vma",
        "__get_free_pages", "get_zeroed_page", "new_slab", "alloc_slab_page", "slab_alloc_node",
        "__alloc_percpu", "__alloc_percpu_gfp", "__alloc_reserved_percpu", "pcpu_alloc",
        "vma_alloc_folio", "kmalloc_trace", "slab_pre_alloc_hook.constprop.0",
        "slab_post_alloc_hook", "prep_new_page", "rmqueue", "__slab_alloc.part.0.cold", "krealloc",
        "kvzalloc", "kcalloc", "kstrdup.llvm.1234567"};
    for (const auto& name : positives) {
        INFO(name);
        CHECK(is_kernel_allocator_frame(name));
    }
    const std::vector<std::string> negatives = {"",
                                                "pipe_write",
                                                "anon_pipe_write",
                                                "alloc_file_pseudo",
                                                "__do_sys_pipe2",
                                                "do_pipe2",
                                                "alloc_pipe_info",
                                                "create_pipe_files",
                                                "eventfd_ctx_fileget",
                                                "eventfd_ctx_fdget",
                                                "__x64_sys_eventfd2",
                                                "do_eventfd",
                                                "kfree",
                                                "kmem_cache_free",
                                                "kmem_cache_create",
                                                "__kmem_cache_alias",
                                                "__kmem_cache_create_args",
                                                "alloc_empty_file",
                                                "folio_alloc_buffers",
                                                "folio_alloc_swap",
                                                "__filemap_get_folio",
                                                "alloc_bprm",
                                                "seq_read_iter",
                                                "do_anonymous_page",
                                                "pte_alloc_one",
                                                "__pte_alloc",
                                                "pgd_alloc",
                                                "mm_init",
                                                "copy_process",
                                                "lsm_blob_alloc",
                                                "alloc_fdtable",
                                                "bpf_prog_alloc",
                                                "bpf_prog_load",
                                                "bpf_prog_pack_alloc.cold",
                                                "bpf_raw_tp_link_attach",
                                                "do_syscall_64",
                                                "entry_SYSCALL_64_after_hwframe",
                                                "noprof",
                                                ".constprop.0",
                                                "free_pages",
                                                "mempool_alloc_noprof"};
    for (const auto& name : negatives) {
        INFO(name);
        CHECK_FALSE(is_kernel_allocator_frame(name));
    }
}

TEST_CASE("kernel_site_of is the first frame outside the allocator", "[kernel_site]") {
    CHECK(kernel_site_of(stack({"__kmalloc_cache_noprof", "alloc_pipe_info", "create_pipe_files",
                                "__do_pipe_flags", "do_pipe2", "__x64_sys_pipe2", "do_syscall_64",
                                "entry_SYSCALL_64_after_hwframe"})) == "alloc_pipe_info");
    CHECK(kernel_site_of(
              stack({"__alloc_pages_noprof", "alloc_pages_mpol_noprof", "alloc_pages_noprof",
                     "pipe_write", "vfs_write", "ksys_write", "do_syscall_64"})) == "pipe_write");
    // As a raw_tp BPF program captures them on 6.18: the program and bpf_trace_runN on top.
    CHECK(kernel_site_of(
              stack({"bpf_prog_1e312dfcf68d6312_k1", "bpf_trace_run6", "__kvmalloc_node_noprof",
                     "alloc_fdtable", "dup_fd", "copy_process"})) == "alloc_fdtable");
    CHECK(kernel_site_of(
              stack({"bpf_prog_1e312dfcf68d6312_k2", "bpf_trace_run4",
                     "__alloc_frozen_pages_noprof", "alloc_pages_mpol", "vma_alloc_folio_noprof",
                     "do_anonymous_page", "__handle_mm_fault"})) == "do_anonymous_page");
    CHECK(kernel_site_of(stack({"bpf_prog_1e312dfcf68d6312_k2", "bpf_trace_run4",
                                "__alloc_frozen_pages_noprof", "alloc_pages_mpol",
                                "alloc_pages_noprof", "get_free_pages_noprof", "tlb_next_batch",
                                "__tlb_remove_folio_pages"})) == "tlb_next_batch");
    CHECK(kernel_site_of(stack({"bpf_prog_1e312dfcf68d6312_k3", "bpf_trace_run10",
                                "pcpu_alloc_noprof", "__percpu_counter_init_many", "mm_init",
                                "copy_process"})) == "__percpu_counter_init_many");
    // memcg's vector for a new slab is charged to whoever needed the slab.
    CHECK(kernel_site_of(stack({"__kmalloc_node_noprof", "alloc_slab_obj_exts", "allocate_slab",
                                "___slab_alloc", "__slab_alloc.isra.0", "kmem_cache_alloc_noprof",
                                "alloc_empty_file", "path_openat"})) == "alloc_empty_file");
    // 5.10: perf tracepoint plumbing and old names.
    CHECK(kernel_site_of(stack({"perf_trace_kmem_alloc", "kmem_cache_alloc_trace",
                                "eventfd_file_create", "__x64_sys_eventfd2"})) ==
          "eventfd_file_create");
    CHECK(kernel_site_of(stack({"kmalloc_order_trace", "__kmalloc_track_caller", "kmemdup",
                                "do_sys_thing.isra.0"})) == "do_sys_thing.isra.0");
}

TEST_CASE("kernel_site_of: unsymbolized and degenerate stacks", "[kernel_site]") {
    // A program loaded after kallsyms was read has no symbol; it is above the allocator.
    CHECK(kernel_site_of(stack({"", "bpf_trace_run6", "__kmalloc_noprof", "lsm_blob_alloc",
                                "security_prepare_creds"})) == "lsm_blob_alloc");
    // So is plumbing a future kernel may rename.
    CHECK(kernel_site_of(stack({"bpf_prog_1e312dfcf68d6312_k1", "bpf_tp_dispatch_renamed",
                                "__kmalloc_noprof", "load_elf_phdrs"})) == "load_elf_phdrs");
    CHECK(kernel_site_of(stack({"some_new_plumbing", "__kmalloc_noprof", "load_elf_phdrs"})) ==
          "load_elf_phdrs");
    // A caller without a symbol (a module loaded later) gives no kernel address away.
    CHECK(kernel_site_of(stack({"__kmalloc_noprof", "", "do_syscall_64"})) == "[unknown]");
    CHECK(kernel_site_of(stack({"__kmalloc_noprof", "kmalloc_trace"})) == "[unknown]");
    CHECK(kernel_site_of({}) == "[unknown]");
    CHECK(kernel_site_of(stack({""})) == "[unknown]");
    // Without an allocator function proper, plumbing is skipped; without any, the first frame
    // is the site.
    CHECK(kernel_site_of(stack({"bpf_prog_1e312dfcf68d6312_k1", "bpf_trace_run2", "alloc_bprm"})) ==
          "alloc_bprm");
    CHECK(kernel_site_of(stack({"alloc_bprm", "do_execveat_common.isra.0"})) == "alloc_bprm");
}

TEST_CASE("backs_slab_or_kmalloc: pages under slab or large kmalloc", "[kernel_site]") {
    // 6.18, captured: a new slab for kmem_cache_alloc, and one filled in bulk for the maple tree.
    CHECK(backs_slab_or_kmalloc(
        stack({"bpf_prog_1e312dfcf68d6312_k2", "bpf_trace_run4", "__alloc_frozen_pages_noprof",
               "alloc_pages_mpol", "allocate_slab", "___slab_alloc", "__slab_alloc.isra.0",
               "kmem_cache_alloc_noprof", "alloc_empty_file"})));
    CHECK(backs_slab_or_kmalloc(
        stack({"__alloc_frozen_pages_noprof", "alloc_pages_mpol", "allocate_slab", "___slab_alloc",
               "__kmem_cache_alloc_bulk", "kmem_cache_prefill_sheaf", "mas_preallocate",
               "__mmap_region"})));
    CHECK(backs_slab_or_kmalloc(
        stack({"__alloc_frozen_pages_noprof", "alloc_pages_mpol", "alloc_pages_noprof",
               "___kmalloc_large_node", "__kmalloc_large_node_noprof", "some_driver_probe"})));
    CHECK(backs_slab_or_kmalloc(
        stack({"__alloc_pages_noprof", "__kmalloc_large_noprof", "seq_buf_alloc"})));
    CHECK(backs_slab_or_kmalloc(
        stack({"__alloc_pages_noprof", "alloc_slab_page.constprop.0", "new_slab"})));
    // 5.10 and 6.1
    CHECK(backs_slab_or_kmalloc(
        stack({"__alloc_pages_nodemask", "alloc_pages_current", "kmalloc_order",
               "kmalloc_order_trace", "__kmalloc", "xt_alloc_table_info"})));
    CHECK(backs_slab_or_kmalloc(
        stack({"__alloc_pages", "kmalloc_large_node", "__kmalloc_node", "bpf_map_area_alloc"})));
    CHECK(backs_slab_or_kmalloc(
        stack({"__alloc_pages_nodemask", "kmem_getpages", "cache_grow_begin", "fallback_alloc"})));

    CHECK_FALSE(backs_slab_or_kmalloc(
        stack({"bpf_prog_1e312dfcf68d6312_k2", "bpf_trace_run4", "__alloc_frozen_pages_noprof",
               "alloc_pages_mpol", "alloc_pages_noprof", "anon_pipe_write", "vfs_write"})));
    CHECK_FALSE(backs_slab_or_kmalloc(
        stack({"__alloc_frozen_pages_noprof", "alloc_pages_mpol", "vma_alloc_folio_noprof",
               "do_wp_page", "__handle_mm_fault"})));
    CHECK_FALSE(backs_slab_or_kmalloc(stack({"__alloc_frozen_pages_noprof", "alloc_pages_mpol",
                                             "folio_alloc_noprof", "__filemap_get_folio"})));
    CHECK_FALSE(
        backs_slab_or_kmalloc(stack({"__alloc_pages", "__vmalloc_area_node", "__vmalloc_node_range",
                                     "__kvmalloc_node_noprof", "alloc_fdtable"})));
    CHECK_FALSE(backs_slab_or_kmalloc(stack({"pcpu_alloc_noprof", "mm_init"})));
    CHECK_FALSE(backs_slab_or_kmalloc({}));
    CHECK_FALSE(backs_slab_or_kmalloc(stack({"", ""})));
}
