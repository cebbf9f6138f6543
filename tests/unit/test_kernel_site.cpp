// Which kernel frames are allocator internals, and a kernel stack's site
// (aggregate/kernel_site.cpp). Frame names in the stacks below come from stacks captured by a
// raw_tp BPF program and by `perf record -g` on kmem tracepoints of 6.18.
#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "aggregate/kernel_site.h"

namespace {

using leakwatch::backs_slab_or_kmalloc;
using leakwatch::Frame;
using leakwatch::is_kernel_allocator_frame;
using leakwatch::kernel_site_of;

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
