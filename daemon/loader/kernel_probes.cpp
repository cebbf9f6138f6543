#include "loader/kernel_probes.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <set>
#include <string>

#include "kmem.skel.h"
#include "leakwatch.h"
#include "loader/btf_check.h"
#include "loader/map_walk.h"
#include "loader/pidns.h"

namespace leakwatch {

namespace {

// Maps that hold nothing between two runs of a program: not kept. Every other map of the object
// is kept across restarts (keep.h), maps added later included.
const std::set<std::string> kScratchMaps = {"kstack_scratch"};

}  // namespace

Result<std::unique_ptr<KernelProbes>> KernelProbes::load(const KernelConfig& config,
                                                         const Limits& limits, Keeper* keeper) {
    std::unique_ptr<KernelProbes> probes(new KernelProbes());
    probes->limits_ = limits;
    probes->ncpus_ = libbpf_num_possible_cpus();
    if (probes->ncpus_ <= 0) return fail_errno("counting possible CPUs", probes->ncpus_);

    auto* skel = kmem_bpf__open();
    if (!skel) return fail_errno("opening the kernel BPF object", errno);
    probes->skel_ = skel;
    skel->rodata->min_size = config.min_size;
    skel->rodata->max_size = config.max_size;
    skel->rodata->page_size = static_cast<uint32_t>(sysconf(_SC_PAGESIZE));
    skel->rodata->nr_cpus = static_cast<uint32_t>(probes->ncpus_);
    skel->rodata->include_movable = config.include_movable_pages;
    if (auto ns = own_pid_namespace()) {
        skel->rodata->pidns_dev = ns->dev;
        skel->rodata->pidns_ino = ns->ino;
    }

    struct Sizing {
        bpf_map* map;
        uint32_t entries;
    } sizes[] = {{skel->maps.klive, limits.kernel_live_allocations},
                 {skel->maps.ktotals, limits.kernel_totals},
                 {skel->maps.kstacks, limits.kernel_stacks}};
    for (const auto& s : sizes) {
        if (int err = bpf_map__set_max_entries(s.map, s.entries))
            return fail_errno(std::string("sizing BPF map ") + bpf_map__name(s.map), err);
    }

    // Which tracepoints belong to which kind; kfree and kmem_cache_free free objects of
    // either slab kind.
    auto& k = config.kinds;
    const bool slab = k[0] || k[1];
    struct Want {
        const char* tracepoint;
        bpf_program* prog;
        bool enabled;
    } wants[] = {
        {"kmalloc", skel->progs.kmalloc, k[0]},
        {"kmalloc_node", skel->progs.kmalloc_node, k[0]},
        {"kmem_cache_alloc", skel->progs.kmem_cache_alloc, k[1]},
        {"kmem_cache_alloc_node", skel->progs.kmem_cache_alloc_node, k[1]},
        {"kfree", skel->progs.kfree, slab},
        {"kmem_cache_free", skel->progs.kmem_cache_free, slab},
        {"mm_page_alloc", skel->progs.mm_page_alloc, k[2]},
        {"mm_page_free", skel->progs.mm_page_free, k[2]},
        {"mm_page_free_batched", skel->progs.mm_page_free_batched, k[2]},
        {"percpu_alloc_percpu", skel->progs.percpu_alloc_percpu, k[3]},
        {"percpu_free_percpu", skel->progs.percpu_free_percpu, k[3]},
    };
    // A tracepoint exists when the kernel's BTF has its btf_trace_<name> typedef.
    btf* vmlinux = btf__load_vmlinux_btf();
    if (!vmlinux) return fail(kernel_btf_problem().value_or("reading the kernel's BTF failed"));
    for (auto& w : wants) {
        std::string type = std::string("btf_trace_") + w.tracepoint;
        bool exists = btf__find_by_name_kind(vmlinux, type.c_str(), BTF_KIND_TYPEDEF) >= 0;
        if (w.enabled && !exists)
            spdlog::debug("kernel: tracepoint {} does not exist on this kernel", w.tracepoint);
        w.enabled = w.enabled && exists;
        bpf_program__set_autoload(w.prog, w.enabled);
    }
    btf__free(vmlinux);

    if (keeper) {
        probes->kept_ = keeper->set("kernel", state_layout(skel->obj, kScratchMaps));
        if (auto ok = reuse_kept_maps(*probes->kept_, skel->obj, kScratchMaps); !ok)
            return std::unexpected(ok.error());
    }
    if (int err = kmem_bpf__load(skel))
        return fail_errno("loading the kernel allocation BPF programs", err);
    if (probes->kept_) {
        if (auto ok = keep_maps(*probes->kept_, skel->obj, kScratchMaps); !ok)
            return std::unexpected(ok.error());
    }
    std::vector<std::pair<std::string, int>> kept_links;
    for (const auto& w : wants) {
        if (!w.enabled) continue;
        bpf_link* link = bpf_program__attach(w.prog);
        if (!link) return fail_errno(std::string("attaching tracepoint ") + w.tracepoint, errno);
        probes->links_.push_back(link);
        probes->attached_.push_back(w.tracepoint);
        kept_links.emplace_back(w.tracepoint, bpf_link__fd(link));
    }
    keep_links(probes->kept_.get(), kept_links);
    return probes;
}

KernelProbes::~KernelProbes() {
    for (auto* link : links_) bpf_link__destroy(link);
    if (skel_) kmem_bpf__destroy(skel_);
}

std::vector<KernelTotals> KernelProbes::kernel_totals() {
    std::vector<KernelTotals> out;
    for_each_entry<lw_ktotals_key, lw_totals>(
        bpf_map__fd(skel_->maps.ktotals), [&](const lw_ktotals_key& k, const lw_totals& t) {
            out.push_back({k.tgid, k.kind, k.start, k.stack, t.bytes, t.count});
        });
    return out;
}

std::optional<std::vector<uint64_t>> KernelProbes::kernel_stack(uint64_t id) {
    lw_kstack s{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.kstacks), &id, &s)) return std::nullopt;
    uint32_t nr = std::min<uint32_t>(s.nr, LW_MAX_STACK_DEPTH);
    return std::vector<uint64_t>(s.ips, s.ips + nr);
}

void KernelProbes::remove_kernel_totals(const std::vector<KernelTotals>& keys) {
    int fd = bpf_map__fd(skel_->maps.ktotals);
    for (const auto& t : keys) {
        lw_ktotals_key k{};
        k.tgid = t.tgid;
        k.kind = t.kind;
        k.start = t.start;
        k.stack = t.stack;
        bpf_map_delete_elem(fd, &k);
    }
}

LostCounters KernelProbes::lost() {
    return read_lost(skel_->maps.klost, ncpus_);
}

std::vector<MapUsage> KernelProbes::usage(uint64_t live_records, uint64_t totals_entries) {
    return {
        {"kernel_live", live_records, limits_.kernel_live_allocations},
        {"kernel_stacks", count_entries(skel_->maps.kstacks), limits_.kernel_stacks},
        {"kernel_totals", totals_entries, limits_.kernel_totals},
    };
}

}  // namespace leakwatch
