#include "bpf/probes.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "bpf/map_walk.h"
#include "bpf/pidns.h"
#include "leakwatch.h"
#include "leakwatch.skel.h"

namespace leakwatch {

static_assert(kLostReasonNames.size() == LW_LOST_MAX, "lost reasons out of sync with leakwatch.h");

const std::vector<AllocatorFunction>& allocator_functions() {
    static const std::vector<AllocatorFunction> functions = {
        {"malloc", true, LW_MALLOC},
        {"calloc", true, LW_CALLOC},
        {"realloc", true, LW_REALLOC},
        {"reallocarray", true, LW_REALLOCARRAY},
        {"posix_memalign", true, LW_POSIX_MEMALIGN},
        {"aligned_alloc", true, LW_ALIGNED_ALLOC},
        {"memalign", true, LW_MEMALIGN},
        {"valloc", true, LW_VALLOC},
        {"pvalloc", true, LW_PVALLOC},
        {"mmap", true, LW_MMAP},
        {"mremap", true, LW_MREMAP},
        {"free", false, LW_FREE},
        {"munmap", false, LW_MUNMAP},
    };
    return functions;
}

namespace {

int libbpf_log(enum libbpf_print_level level, const char* fmt, va_list args) {
    char buf[1024];
    int n = vsnprintf(buf, sizeof(buf), fmt, args);
    while (n > 0 && n < static_cast<int>(sizeof(buf)) && buf[n - 1] == '\n') buf[--n] = '\0';
    switch (level) {
        case LIBBPF_WARN:
            spdlog::warn("libbpf: {}", buf);
            break;
        case LIBBPF_INFO:
            spdlog::debug("libbpf: {}", buf);
            break;
        default:
            spdlog::trace("libbpf: {}", buf);
            break;
    }
    return 0;
}

bpf_program* entry_program(leakwatch_bpf* skel, const std::string& name) {
    auto* p = &skel->progs;
    if (name == "malloc") return p->malloc_enter;
    if (name == "calloc") return p->calloc_enter;
    if (name == "realloc") return p->realloc_enter;
    if (name == "reallocarray") return p->reallocarray_enter;
    if (name == "posix_memalign") return p->posix_memalign_enter;
    if (name == "aligned_alloc") return p->aligned_alloc_enter;
    if (name == "memalign") return p->memalign_enter;
    if (name == "valloc") return p->valloc_enter;
    if (name == "pvalloc") return p->pvalloc_enter;
    if (name == "mmap") return p->mmap_enter;
    if (name == "mremap") return p->mremap_enter;
    if (name == "free") return p->free_enter;
    if (name == "munmap") return p->munmap_enter;
    return nullptr;
}

const AllocatorFunction* function_named(const std::string& name) {
    for (const auto& f : allocator_functions())
        if (name == f.name) return &f;
    return nullptr;
}

// BPF_TRACE_UPROBE_MULTI and its link_create attributes, from the 6.6 UAPI: Debian's libbpf and
// kernel headers predate them.
constexpr uint32_t kTraceUprobeMulti = 48;
constexpr uint32_t kUprobeMultiReturn = 1;
struct LinkCreateUprobeMulti {
    uint32_t prog_fd;
    uint32_t target_fd;
    uint32_t attach_type;
    uint32_t flags;
    uint64_t path;
    uint64_t offsets;
    uint64_t ref_ctr_offsets;
    uint64_t cookies;
    uint32_t cnt;
    uint32_t multi_flags;
    uint32_t pid;
};

int link_uprobe_multi(int prog_fd, const std::string& path, const std::vector<uint64_t>& offsets,
                      const std::vector<uint64_t>& cookies, bool returns, pid_t pid) {
    union {
        LinkCreateUprobeMulti attr;
        unsigned char bytes[128];
    } u{};
    u.attr.prog_fd = static_cast<uint32_t>(prog_fd);
    u.attr.attach_type = kTraceUprobeMulti;
    u.attr.path = reinterpret_cast<uint64_t>(path.c_str());
    u.attr.offsets = reinterpret_cast<uint64_t>(offsets.data());
    u.attr.cookies = reinterpret_cast<uint64_t>(cookies.data());
    u.attr.cnt = static_cast<uint32_t>(offsets.size());
    u.attr.multi_flags = returns ? kUprobeMultiReturn : 0;
    u.attr.pid = static_cast<uint32_t>(pid);
    return static_cast<int>(syscall(__NR_bpf, 28 /* BPF_LINK_CREATE */, &u, sizeof(u)));
}

template <class K>
void delete_keys(int fd, const std::vector<K>& keys) {
    for (const auto& k : keys) bpf_map_delete_elem(fd, &k);
}

}  // namespace

Attachment::~Attachment() {
    for (auto* link : links_) bpf_link__destroy(link);
    for (int fd : fds_) close(fd);
}

Result<std::unique_ptr<Probes>> Probes::load(const Limits& limits, ProbeMode mode) {
    libbpf_set_print(libbpf_log);
    std::unique_ptr<Probes> probes(new Probes());
    probes->limits_ = limits;
    probes->ncpus_ = libbpf_num_possible_cpus();
    if (probes->ncpus_ <= 0) return fail_errno("counting possible CPUs", probes->ncpus_);

    auto* skel = leakwatch_bpf__open();
    if (!skel) return fail_errno("opening the BPF object", errno);
    probes->skel_ = skel;
    skel->rodata->page_size = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    if (auto ns = own_pid_namespace()) {
        skel->rodata->pidns_dev = ns->dev;
        skel->rodata->pidns_ino = ns->ino;
        spdlog::info("running in a pid namespace (inode {}): BPF reports its pids", ns->ino);
    }

    struct Sizing {
        bpf_map* map;
        uint32_t entries;
    } sizes[] = {
        {skel->maps.watched, limits.processes},     {skel->maps.procs, limits.processes},
        {skel->maps.live, limits.live_allocations}, {skel->maps.stack_totals, limits.stack_totals},
        {skel->maps.stacks, limits.stacks},         {skel->maps.inflight, limits.threads},
        {skel->maps.freeing, limits.threads},
    };
    for (const auto& s : sizes) {
        if (int err = bpf_map__set_max_entries(s.map, s.entries))
            return fail_errno(std::string("sizing BPF map ") + bpf_map__name(s.map), err);
    }
    // Multi-uprobe links where the kernel has them (its BTF knows their link type).
    bool kernel_multi = false;
    if (btf* vmlinux = btf__load_vmlinux_btf()) {
        kernel_multi =
            btf__find_by_name_kind(vmlinux, "bpf_uprobe_multi_link", BTF_KIND_STRUCT) >= 0;
        btf__free(vmlinux);
    }
    if (mode == ProbeMode::kMulti && !kernel_multi)
        return fail("multi-uprobe links were asked for, but this kernel has none (6.6+)");
    probes->multi_ = mode != ProbeMode::kClassic && kernel_multi;
    auto* p = &skel->progs;
    for (bpf_program* classic :
         {p->malloc_enter, p->calloc_enter, p->realloc_enter, p->reallocarray_enter,
          p->posix_memalign_enter, p->aligned_alloc_enter, p->memalign_enter, p->valloc_enter,
          p->pvalloc_enter, p->mmap_enter, p->mremap_enter, p->free_enter, p->munmap_enter,
          p->alloc_return})
        bpf_program__set_autoload(classic, !probes->multi_);
    for (bpf_program* multi : {p->multi_entry, p->multi_return}) {
        bpf_program__set_autoload(multi, probes->multi_);
        bpf_program__set_expected_attach_type(multi,
                                              static_cast<bpf_attach_type>(kTraceUprobeMulti));
    }

    if (int err = leakwatch_bpf__load(skel))
        return fail_errno(
            "loading the BPF programs (is this root with CAP_BPF and CAP_PERFMON, "
            "on a kernel with BTF?)",
            err);

    for (bpf_program* prog :
         {skel->progs.handle_exec, skel->progs.handle_fork, skel->progs.handle_exit}) {
        bpf_link* link = bpf_program__attach(prog);
        if (!link) return fail_errno(std::string("attaching ") + bpf_program__name(prog), errno);
        probes->event_links_.push_back(link);
    }
    probes->ring_ = ring_buffer__new(bpf_map__fd(skel->maps.events), &Probes::on_ring_event,
                                     probes.get(), nullptr);
    if (!probes->ring_) return fail_errno("creating the event ring buffer", errno);
    return probes;
}

Probes::~Probes() {
    if (ring_) ring_buffer__free(ring_);
    for (auto* link : event_links_) bpf_link__destroy(link);
    if (skel_) leakwatch_bpf__destroy(skel_);
}

Result<std::unique_ptr<Attachment>> Probes::attach(pid_t pid, const ProbeTarget& target) {
    std::unique_ptr<Attachment> att(new Attachment());
    const std::string where = " in " + target.path + " for pid " + std::to_string(pid);
    if (multi_) {
        std::vector<uint64_t> offsets, kinds, ret_offsets, ret_kinds;
        for (const auto& [name, offset] : target.offsets) {
            const AllocatorFunction* f = function_named(name);
            if (!f) return fail("no BPF program for allocator function " + name);
            offsets.push_back(offset);
            kinds.push_back(f->kind);
            if (!f->has_return) continue;
            ret_offsets.push_back(offset);
            ret_kinds.push_back(f->kind);
        }
        int fd = link_uprobe_multi(bpf_program__fd(skel_->progs.multi_entry), target.path, offsets,
                                   kinds, false, pid);
        if (fd < 0) return fail_errno("multi-uprobe on the allocator entries" + where, errno);
        att->fds_.push_back(fd);
        fd = link_uprobe_multi(bpf_program__fd(skel_->progs.multi_return), target.path, ret_offsets,
                               ret_kinds, true, pid);
        if (fd < 0) return fail_errno("multi-uprobe on the allocator returns" + where, errno);
        att->fds_.push_back(fd);
        return att;
    }
    for (const auto& [name, offset] : target.offsets) {
        bpf_program* entry = entry_program(skel_, name);
        const AllocatorFunction* f = function_named(name);
        if (!entry || !f) return fail("no BPF program for allocator function " + name);
        LIBBPF_OPTS(bpf_uprobe_opts, entry_opts, .retprobe = false);
        bpf_link* link =
            bpf_program__attach_uprobe_opts(entry, pid, target.path.c_str(), offset, &entry_opts);
        if (!link) return fail_errno("uprobe on " + name + where, errno);
        att->links_.push_back(link);
        if (!f->has_return) continue;
        LIBBPF_OPTS(bpf_uprobe_opts, ret_opts, .retprobe = true);
        link = bpf_program__attach_uprobe_opts(skel_->progs.alloc_return, pid, target.path.c_str(),
                                               offset, &ret_opts);
        if (!link) return fail_errno("uretprobe on " + name + where, errno);
        att->links_.push_back(link);
    }
    return att;
}

Result<void> Probes::watch(uint32_t tgid, uint64_t min_size, uint64_t max_size) {
    lw_proc_totals zero{};
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.procs), &tgid, &zero, BPF_ANY))
        return fail_errno("adding pid " + std::to_string(tgid) +
                              " to the process map "
                              "(limits.processes reached?)",
                          errno);
    lw_proc_cfg cfg{min_size, max_size};
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.watched), &tgid, &cfg, BPF_ANY))
        return fail_errno("adding pid " + std::to_string(tgid) + " to the watched map", errno);
    return {};
}

void Probes::unwatch(uint32_t tgid) {
    bpf_map_delete_elem(bpf_map__fd(skel_->maps.watched), &tgid);
}

void Probes::purge(const std::set<uint32_t>& tgids) {
    if (tgids.empty()) return;
    for (bpf_map* map : {skel_->maps.live, skel_->maps.stack_totals, skel_->maps.stacks}) {
        std::vector<lw_key> doomed;
        int fd = bpf_map__fd(map);
        if (map == skel_->maps.live) {
            for_each_entry<lw_key, lw_alloc>(fd, [&](const lw_key& k, const lw_alloc&) {
                if (tgids.count(k.tgid)) doomed.push_back(k);
            });
        } else if (map == skel_->maps.stacks) {
            for_each_entry<lw_key, lw_stack>(fd, [&](const lw_key& k, const lw_stack&) {
                if (tgids.count(k.tgid)) doomed.push_back(k);
            });
        } else {
            for_each_entry<lw_key, lw_totals>(fd, [&](const lw_key& k, const lw_totals&) {
                if (tgids.count(k.tgid)) doomed.push_back(k);
            });
        }
        delete_keys(fd, doomed);
    }
    for (uint32_t tgid : tgids) {
        bpf_map_delete_elem(bpf_map__fd(skel_->maps.watched), &tgid);
        bpf_map_delete_elem(bpf_map__fd(skel_->maps.procs), &tgid);
    }
}

int Probes::on_ring_event(void* ctx, void* data, size_t size) {
    auto* self = static_cast<Probes*>(ctx);
    if (size < sizeof(lw_event) || !self->handler_) return 0;
    self->handler_(*static_cast<const lw_event*>(data));
    return 0;
}

int Probes::poll_events(int timeout_ms) {
    return ring_buffer__poll(ring_, timeout_ms);
}

std::vector<std::pair<uint32_t, ProcTotals>> Probes::process_totals() {
    std::vector<std::pair<uint32_t, ProcTotals>> out;
    for_each_entry<uint32_t, lw_proc_totals>(
        bpf_map__fd(skel_->maps.procs), [&](uint32_t tgid, const lw_proc_totals& t) {
            out.push_back({tgid, ProcTotals{t.bytes, t.count, t.alloc_bytes, t.alloc_count,
                                            t.free_bytes, t.free_count}});
        });
    return out;
}

std::vector<StackTotals> Probes::stack_totals() {
    std::vector<StackTotals> out;
    for_each_entry<lw_key, lw_totals>(bpf_map__fd(skel_->maps.stack_totals),
                                      [&](const lw_key& k, const lw_totals& t) {
                                          out.push_back({k.tgid, k.id, t.bytes, t.count});
                                      });
    return out;
}

std::optional<RawStack> Probes::stack(uint32_t tgid, uint64_t id) {
    lw_key key{};
    key.tgid = tgid;
    key.id = id;
    lw_stack s{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.stacks), &key, &s)) return std::nullopt;
    RawStack out;
    out.caller = s.caller;
    uint32_t nr = std::min<uint32_t>(s.nr, LW_MAX_STACK_DEPTH);
    out.ips.assign(s.ips, s.ips + nr);
    return out;
}

std::vector<LiveAllocation> Probes::live_allocations(const std::set<uint32_t>& tgids) {
    std::vector<LiveAllocation> out;
    if (tgids.empty()) return out;
    for_each_entry<lw_key, lw_alloc>(
        bpf_map__fd(skel_->maps.live), [&](const lw_key& k, const lw_alloc& a) {
            if (tgids.count(k.tgid))
                out.push_back({k.tgid, k.id, a.size, a.ts_ns, a.counted ? a.stack : 0});
        });
    return out;
}

LostCounters Probes::lost() {
    LostCounters out{};
    std::vector<uint64_t> percpu(static_cast<size_t>(ncpus_));
    int fd = bpf_map__fd(skel_->maps.lost);
    for (uint32_t i = 0; i < LW_LOST_MAX; i++) {
        if (bpf_map_lookup_elem(fd, &i, percpu.data())) continue;
        for (uint64_t v : percpu) out[i] += v;
    }
    return out;
}

std::vector<MapUsage> Probes::usage() {
    // The live map is too large to walk every interval; every counted record is in its
    // process's count, so the sum of those is its size (less records of uncounted stacks).
    uint64_t live = 0;
    for (const auto& [tgid, t] : process_totals()) live += static_cast<uint64_t>(t.count);
    return {
        {"live", live, limits_.live_allocations},
        {"stacks", count_entries(skel_->maps.stacks), limits_.stacks},
        {"stack_totals", count_entries(skel_->maps.stack_totals), limits_.stack_totals},
        {"processes", count_entries(skel_->maps.watched), limits_.processes},
        {"inflight", count_entries(skel_->maps.inflight), limits_.threads},
    };
}

}  // namespace leakwatch
