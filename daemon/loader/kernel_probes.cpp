#include "loader/kernel_probes.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "kmem.skel.h"
#include "leakwatch.h"
#include "loader/btf_check.h"
#include "loader/map_walk.h"
#include "loader/pidns.h"

namespace leakwatch {

Result<std::unique_ptr<KernelProbes>> KernelProbes::load(const KernelConfig& config,
                                                         const Limits& limits) {
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
        // Not allocations: they count module loads and unloads (KernelStack::modules).
        {"module_load", skel->progs.module_load, true},
        {"module_free", skel->progs.module_free, true},
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

    if (int err = kmem_bpf__load(skel))
        return fail_errno("loading the kernel allocation BPF programs", err);
    int modules_attached = 0;
    for (const auto& w : wants) {
        if (!w.enabled) continue;
        bpf_link* link = bpf_program__attach(w.prog);
        if (!link) return fail_errno(std::string("attaching tracepoint ") + w.tracepoint, errno);
        probes->links_.push_back(link);
        probes->programs_.push_back(w.prog);
        if (w.prog == skel->progs.module_load || w.prog == skel->progs.module_free)
            modules_attached++;
        else
            probes->attached_.push_back(w.tracepoint);
    }
    probes->modules_counted_ = modules_attached == 2;
    // A kernel without loadable modules (no /proc/modules) has nothing to count.
    if (!probes->modules_counted_ && ::access("/proc/modules", F_OK) == 0)
        spdlog::info(
            "kernel: this kernel has no module_load/module_free tracepoints: frames in modules "
            "are named from the symbols as last read, whichever module held the address then");
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

std::optional<KernelStack> KernelProbes::kernel_stack(uint64_t id) {
    lw_kstack s{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.kstacks), &id, &s)) return std::nullopt;
    uint32_t nr = std::min<uint32_t>(s.nr, LW_MAX_STACK_DEPTH);
    return KernelStack{std::vector<uint64_t>(s.ips, s.ips + nr), s.modules};
}

std::optional<uint32_t> KernelProbes::module_generation() const {
    if (!modules_counted_) return std::nullopt;
    // The object's .bss, mapped into the daemon: the BPF programs add to it atomically.
    return __atomic_load_n(&skel_->bss->module_generation, __ATOMIC_RELAXED);
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
    LostCounters lost = read_lost(skel_->maps.klost, ncpus_);
    // Runs the kernel skipped: the program was already running on that CPU (5.12+ counts them).
    for (auto* prog : programs_) {
        bpf_prog_info info{};
        uint32_t size = sizeof(info);
        if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &size) == 0)
            lost[LW_LOST_K_PROGRAM_MISSED] += info.recursion_misses;
    }
    return lost;
}

std::vector<MapUsage> KernelProbes::usage(uint64_t live_records, uint64_t totals_entries) {
    return {
        {"kernel_live", live_records, limits_.kernel_live_allocations},
        {"kernel_stacks", count_entries(skel_->maps.kstacks), limits_.kernel_stacks},
        {"kernel_totals", totals_entries, limits_.kernel_totals},
    };
}

}  // namespace leakwatch
