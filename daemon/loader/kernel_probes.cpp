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

// The kept link of a tracepoint's backup program: its name's, and this.
constexpr const char* kBackupSuffix = "_backup";

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
    constexpr uint32_t kSlab = 1u << LW_K_KMALLOC | 1u << LW_K_KMEM_CACHE;
// A tracepoint, its first program and its backup (the same name with _backup: bpf/kmem.bpf.c).
#define LW_WANT(tp, kinds) \
    { #tp, skel->progs.tp, skel->progs.tp##_backup, kinds }
    struct Want {
        const char* tracepoint;
        bpf_program* prog;
        bpf_program* backup;
        uint32_t kinds;
    } wants[] = {
        LW_WANT(kmalloc, 1u << LW_K_KMALLOC),
        LW_WANT(kmalloc_node, 1u << LW_K_KMALLOC),
        LW_WANT(kmem_cache_alloc, 1u << LW_K_KMEM_CACHE),
        LW_WANT(kmem_cache_alloc_node, 1u << LW_K_KMEM_CACHE),
        LW_WANT(kfree, kSlab),
        LW_WANT(kmem_cache_free, kSlab),
        LW_WANT(mm_page_alloc, 1u << LW_K_PAGE),
        LW_WANT(mm_page_free, 1u << LW_K_PAGE),
        LW_WANT(mm_page_free_batched, 1u << LW_K_PAGE),
        LW_WANT(percpu_alloc_percpu, 1u << LW_K_PERCPU),
        LW_WANT(percpu_free_percpu, 1u << LW_K_PERCPU),
    };
#undef LW_WANT
    uint32_t enabled = 0;
    for (size_t i = 0; i < k.size(); i++)
        if (k[i]) enabled |= 1u << i;
    // A tracepoint exists when the kernel's BTF has its btf_trace_<name> typedef.
    btf* vmlinux = btf__load_vmlinux_btf();
    if (!vmlinux) return fail(kernel_btf_problem().value_or("reading the kernel's BTF failed"));
    for (auto& w : wants) {
        std::string type = std::string("btf_trace_") + w.tracepoint;
        bool exists = btf__find_by_name_kind(vmlinux, type.c_str(), BTF_KIND_TYPEDEF) >= 0;
        bool want = (w.kinds & enabled) != 0;
        if (want && !exists)
            spdlog::debug("kernel: tracepoint {} does not exist on this kernel", w.tracepoint);
        bpf_program__set_autoload(w.prog, want && exists);
        bpf_program__set_autoload(w.backup, want && exists);
        if (want && exists)
            probes->tracepoints_.push_back({w.tracepoint, w.prog, w.backup, w.kinds});
    }
    // Not allocations: they count module loads and unloads (KernelStack::modules), attached
    // whatever is traced, so that every stack records the count.
    bpf_program* module_progs[] = {skel->progs.module_load, skel->progs.module_free};
    bool modules_exist = true;
    for (const char* name : {"btf_trace_module_load", "btf_trace_module_free"})
        modules_exist =
            modules_exist && btf__find_by_name_kind(vmlinux, name, BTF_KIND_TYPEDEF) >= 0;
    for (auto* prog : module_progs) bpf_program__set_autoload(prog, modules_exist);
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
    if (modules_exist) {
        for (auto* prog : module_progs) {
            bpf_link* link = bpf_program__attach(prog);
            if (!link)
                return fail_errno(std::string("attaching tracepoint ") + bpf_program__name(prog),
                                  errno);
            probes->module_links_.push_back(link);
        }
    }
    probes->modules_counted_ = modules_exist;
    // A kernel without loadable modules (no /proc/modules) has nothing to count.
    if (!modules_exist && ::access("/proc/modules", F_OK) == 0)
        spdlog::info(
            "kernel: this kernel has no module_load/module_free tracepoints: frames in modules "
            "are named from the symbols as last read, whichever module held the address then");
    if (config.tracking == WatchRule::Tracking::kFull) {
        KernelTargets all;
        for (size_t i = 0; i < k.size(); i++) all.kinds[i] = k[i];
        if (auto ok = probes->set_targets(all); !ok) return std::unexpected(ok.error());
    }
    probes->keep_attached();  // and the previous run's links, attached for its targets, go
    return probes;
}

Result<void> KernelProbes::set_targets(const KernelTargets& targets) {
    lw_kfilter filter{};
    for (size_t i = 0; i < targets.kinds.size(); i++)
        if (targets.kinds[i]) filter.kinds |= 1u << i;
    for (uint64_t size : targets.sizes) {
        if (filter.nsizes == LW_KFILTER_SIZES) {
            spdlog::warn(
                "kernel: more than {} slab sizes escalated at once; size {} is not "
                "traced",
                LW_KFILTER_SIZES, size);
            break;
        }
        filter.sizes[filter.nsizes++] = size;
    }
    // Attach first, then record: an allocation is never recorded without its free's probe.
    // The backup after the first: a tracepoint runs its programs in the order they came.
    for (auto& t : tracepoints_) {
        if ((t.kinds & filter.kinds) == 0 || t.link) continue;
        t.link = bpf_program__attach(t.prog);
        if (!t.link) return fail_errno(std::string("attaching tracepoint ") + t.name, errno);
        t.backup_link = bpf_program__attach(t.backup);
        if (!t.backup_link)
            return fail_errno(std::string("attaching the backup program of tracepoint ") + t.name,
                              errno);
    }
    uint32_t zero = 0;
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.kfilter), &zero, &filter, BPF_ANY))
        return fail_errno("writing the kernel programs' filter", errno);
    uint32_t served = 0;  // kinds whose frees are still seen
    for (auto& t : tracepoints_) {
        if ((t.kinds & filter.kinds) == 0 && t.link) {
            if (kept_) {
                kept_->forget(std::string("links/ev_") + t.name);
                kept_->forget(std::string("links/ev_") + t.name + kBackupSuffix);
            }
            bpf_link__destroy(t.link);
            t.link = nullptr;
            if (t.backup_link) bpf_link__destroy(t.backup_link);
            t.backup_link = nullptr;
        }
        if (t.link) served |= t.kinds;
    }
    // What was recorded of a kind whose frees are no longer seen would stay forever. (A slab
    // size no longer traced keeps its records: kfree still sees them go.)
    uint32_t dropped = 0;
    for (size_t i = 0; i < targets_.kinds.size(); i++)
        if (targets_.kinds[i] && !(served & (1u << i))) dropped |= 1u << i;
    if (dropped) {
        std::vector<lw_kkey> live;
        for_each_entry<lw_kkey, lw_kalloc>(bpf_map__fd(skel_->maps.klive),
                                           [&](const lw_kkey& key, const lw_kalloc& a) {
                                               if (dropped & (1u << a.kind)) live.push_back(key);
                                           });
        for (const auto& key : live) bpf_map_delete_elem(bpf_map__fd(skel_->maps.klive), &key);
        std::vector<lw_ktotals_key> totals;
        for_each_entry<lw_ktotals_key, lw_totals>(bpf_map__fd(skel_->maps.ktotals),
                                                  [&](const lw_ktotals_key& key, const lw_totals&) {
                                                      if (dropped & (1u << key.kind))
                                                          totals.push_back(key);
                                                  });
        for (const auto& key : totals) bpf_map_delete_elem(bpf_map__fd(skel_->maps.ktotals), &key);
    }
    targets_ = targets;
    refresh_attached();
    keep_attached();
    return {};
}

void KernelProbes::keep_attached() {
    std::vector<std::pair<std::string, int>> links;
    for (const auto& t : tracepoints_) {
        if (t.link) links.emplace_back(t.name, bpf_link__fd(t.link));
        if (t.backup_link)
            links.emplace_back(std::string(t.name) + kBackupSuffix, bpf_link__fd(t.backup_link));
    }
    keep_links(kept_.get(), links);
}

void KernelProbes::refresh_attached() {
    attached_.clear();
    for (const auto& t : tracepoints_)
        if (t.link) attached_.push_back(t.name);
}

KernelProbes::~KernelProbes() {
    for (auto& t : tracepoints_) {
        if (t.link) bpf_link__destroy(t.link);
        if (t.backup_link) bpf_link__destroy(t.backup_link);
    }
    for (auto* link : module_links_) bpf_link__destroy(link);
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
    // Loaded programs keep their count while detached (escalation), so all are summed. An
    // event is lost only when both programs skipped it: the backup's count bounds that.
    auto misses = [](bpf_program* prog) -> uint64_t {
        bpf_prog_info info{};
        uint32_t size = sizeof(info);
        if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &size) != 0) return 0;
        return info.recursion_misses;
    };
    for (const auto& t : tracepoints_) {
        lost[LW_LOST_K_FIRST_MISSED] += misses(t.prog);
        lost[LW_LOST_K_PROGRAM_MISSED] += misses(t.backup);
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
