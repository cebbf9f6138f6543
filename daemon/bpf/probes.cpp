#include "bpf/probes.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "bpf/map_walk.h"
#include "leakwatch.h"
#include "leakwatch.skel.h"

namespace leakwatch {

static_assert(kLostReasonNames.size() == LW_LOST_MAX, "lost reasons out of sync with leakwatch.h");

const std::vector<AllocatorFunction>& allocator_functions() {
    static const std::vector<AllocatorFunction> functions = {
        {"malloc", true},       {"calloc", true},         {"realloc", true},
        {"reallocarray", true}, {"posix_memalign", true}, {"aligned_alloc", true},
        {"memalign", true},     {"valloc", true},         {"pvalloc", true},
        {"mmap", true},         {"mremap", true},         {"free", false},
        {"munmap", false},
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

bool has_return(const std::string& name) {
    for (const auto& f : allocator_functions())
        if (name == f.name) return f.has_return;
    return false;
}

template <class K>
void delete_keys(int fd, const std::vector<K>& keys) {
    for (const auto& k : keys) bpf_map_delete_elem(fd, &k);
}

}  // namespace

Attachment::~Attachment() {
    for (auto* link : links_) bpf_link__destroy(link);
}

Result<std::unique_ptr<Probes>> Probes::load(const Limits& limits) {
    libbpf_set_print(libbpf_log);
    std::unique_ptr<Probes> probes(new Probes());
    probes->limits_ = limits;
    probes->ncpus_ = libbpf_num_possible_cpus();
    if (probes->ncpus_ <= 0) return fail_errno("counting possible CPUs", probes->ncpus_);

    auto* skel = leakwatch_bpf__open();
    if (!skel) return fail_errno("opening the BPF object", errno);
    probes->skel_ = skel;
    skel->rodata->page_size = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));

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
    for (const auto& [name, offset] : target.offsets) {
        bpf_program* entry = entry_program(skel_, name);
        if (!entry) return fail("no BPF program for allocator function " + name);
        LIBBPF_OPTS(bpf_uprobe_opts, entry_opts, .retprobe = false);
        bpf_link* link =
            bpf_program__attach_uprobe_opts(entry, pid, target.path.c_str(), offset, &entry_opts);
        if (!link)
            return fail_errno(
                "uprobe on " + name + " in " + target.path + " for pid " + std::to_string(pid),
                errno);
        att->links_.push_back(link);
        if (!has_return(name)) continue;
        LIBBPF_OPTS(bpf_uprobe_opts, ret_opts, .retprobe = true);
        link = bpf_program__attach_uprobe_opts(skel_->progs.alloc_return, pid, target.path.c_str(),
                                               offset, &ret_opts);
        if (!link)
            return fail_errno(
                "uretprobe on " + name + " in " + target.path + " for pid " + std::to_string(pid),
                errno);
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
