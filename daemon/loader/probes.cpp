#include "loader/probes.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <tuple>

#include "leakwatch.h"
#include "leakwatch.skel.h"
#include "loader/btf_check.h"
#include "loader/map_walk.h"
#include "loader/pidns.h"
#include "sampling.h"
#include "stackhash.h"

namespace leakwatch {

const char* probe_mode_name(ProbeMode mode) {
    switch (mode) {
        case ProbeMode::kAuto:
            return "auto";
        case ProbeMode::kSession:
            return "session";
        case ProbeMode::kMulti:
            return "multi";
        case ProbeMode::kClassic:
            return "classic";
    }
    return "?";
}

namespace {

// libbpf's messages, one log line per line of text (a verifier log is one message of many
// lines, often far longer than a fixed buffer).
int libbpf_log(enum libbpf_print_level level, const char* fmt, va_list args) {
    va_list copy;
    va_copy(copy, args);
    int n = vsnprintf(nullptr, 0, fmt, copy);
    va_end(copy);
    if (n <= 0) return 0;
    std::string text(static_cast<size_t>(n) + 1, '\0');
    vsnprintf(text.data(), text.size(), fmt, args);
    text.resize(static_cast<size_t>(n));
    size_t start = 0;
    while (start < text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        std::string_view line(text.data() + start, end - start);
        start = end + 1;
        if (line.empty()) continue;
        switch (level) {
            case LIBBPF_WARN:
                spdlog::warn("libbpf: {}", line);
                break;
            case LIBBPF_INFO:
                spdlog::debug("libbpf: {}", line);
                break;
            default:
                spdlog::trace("libbpf: {}", line);
                break;
        }
    }
    return 0;
}

bpf_program* entry_program(leakwatch_bpf* skel, uint32_t kind) {
    auto* p = &skel->progs;
    switch (kind) {
        case LW_MALLOC:
            return p->malloc_enter;
        case LW_CALLOC:
            return p->calloc_enter;
        case LW_REALLOC:
            return p->realloc_enter;
        case LW_REALLOCARRAY:
            return p->reallocarray_enter;
        case LW_POSIX_MEMALIGN:
            return p->posix_memalign_enter;
        case LW_ALIGNED_ALLOC:
            return p->aligned_alloc_enter;
        case LW_MEMALIGN:
            return p->memalign_enter;
        case LW_VALLOC:
            return p->valloc_enter;
        case LW_PVALLOC:
            return p->pvalloc_enter;
        case LW_MMAP:
            return p->mmap_enter;
        case LW_MREMAP:
            return p->mremap_enter;
        case LW_FREE:
            return p->free_enter;
        case LW_MUNMAP:
            return p->munmap_enter;
    }
    return nullptr;
}

const AllocatorFunction* function_named(const std::string& name) {
    for (const auto& f : allocator_functions())
        if (name == f.name) return &f;
    return nullptr;
}

// BPF_TRACE_UPROBE_MULTI and its link_create attributes, from the 6.6 UAPI, and
// BPF_TRACE_UPROBE_SESSION (6.13): Debian's libbpf and kernel headers predate them.
constexpr uint32_t kTraceUprobeMulti = 48;
constexpr uint32_t kTraceUprobeSession = 57;
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
                      const std::vector<uint64_t>& cookies, bool returns, pid_t pid,
                      uint32_t attach_type = kTraceUprobeMulti) {
    union {
        LinkCreateUprobeMulti attr;
        unsigned char bytes[128];
    } u{};
    u.attr.prog_fd = static_cast<uint32_t>(prog_fd);
    u.attr.attach_type = attach_type;
    u.attr.path = reinterpret_cast<uint64_t>(path.c_str());
    u.attr.offsets = reinterpret_cast<uint64_t>(offsets.data());
    u.attr.cookies = reinterpret_cast<uint64_t>(cookies.data());
    u.attr.cnt = static_cast<uint32_t>(offsets.size());
    u.attr.multi_flags = returns ? kUprobeMultiReturn : 0;
    u.attr.pid = static_cast<uint32_t>(pid);
    return static_cast<int>(syscall(__NR_bpf, 28 /* BPF_LINK_CREATE */, &u, sizeof(u)));
}

// Whether the running kernel's BTF names an attach type (its enum bpf_attach_type).
bool kernel_has_attach_type(const btf* vmlinux, const char* name) {
    int id = btf__find_by_name_kind(vmlinux, "bpf_attach_type", BTF_KIND_ENUM);
    if (id < 0) return false;
    const btf_type* t = btf__type_by_id(vmlinux, static_cast<uint32_t>(id));
    const struct btf_enum* e = btf_enum(t);
    for (uint16_t i = 0; i < btf_vlen(t); ++i, ++e) {
        const char* n = btf__name_by_offset(vmlinux, e->name_off);
        if (n && std::strcmp(n, name) == 0) return true;
    }
    return false;
}

// A process's entry in `watched` or `watch_tier`.
lw_proc_cfg proc_cfg(const Recording& r) {
    lw_proc_cfg cfg{};
    cfg.min_size = r.min_size;
    cfg.max_size = r.max_size;
    cfg.sample_mean = r.sample_bytes;
    cfg.lib_lo = r.lib_lo;
    cfg.lib_hi = r.lib_hi;
    if (r.sample_bytes || r.min_size > 0 || r.max_size != UINT64_MAX) cfg.flags |= LW_CFG_PARTIAL;
    if (r.dwarf_unwind) cfg.flags |= LW_CFG_DWARF;
    auto add_ranges = [&](const std::vector<std::pair<uint64_t, uint64_t>>& ranges, uint32_t kind) {
        for (const auto& [lo, hi] : ranges) {
            if (cfg.nranges >= LW_MAX_RANGES) break;
            cfg.ranges[cfg.nranges++] = lw_code_range{lo, hi, kind, 0};
        }
    };
    add_ranges(r.rules_code, LW_RANGE_RULES);
    add_ranges(r.frame_pointer_code, LW_RANGE_FP);
    if (const PythonLayout* py = r.python; py && r.python_key_address && r.python_max_frames) {
        cfg.py.key_addr = r.python_key_address;
        cfg.py.tsd_off = 0x310;  // glibc x86-64: struct pthread's specific_1stblock
        cfg.py.thread_id_off = py->thread_id_off;
        cfg.py.frame_off = py->frame_off;
        cfg.py.cframe_off = py->cframe_off;
        cfg.py.code_off = py->code_off;
        cfg.py.back_off = py->back_off;
        cfg.py.instr_off = py->instr_off;
        cfg.py.entry_off = py->entry_off;
        cfg.py.instr = py->instr == PythonLayout::Instr::kPointer ? LW_PY_INSTR_PTR : LW_PY_LASTI;
        cfg.py.group = static_cast<__u8>(py->group);
        cfg.py.max_frames =
            static_cast<__u16>(std::min<uint32_t>(r.python_max_frames, LW_PY_MAX_FRAMES));
    }
    return cfg;
}

template <class K>
void delete_keys(int fd, const std::vector<K>& keys) {
    for (const auto& k : keys) bpf_map_delete_elem(fd, &k);
}

// Maps that hold nothing between two runs of a program: not kept. Every other map of the object
// is kept across restarts (keep.h), maps added later included.
const std::set<std::string> kScratchMaps = {"stack_scratch"};

class UprobeAttachment : public Attachment {
  public:
    ~UprobeAttachment() override {
        // Closed first, then unpinned: the pin then drops the last reference, and the kernel
        // releases the uprobes (a grace period each) in its own worker rather than here.
        for (auto* link : bpf_links) bpf_link__destroy(link);
        for (int fd : fds) close(fd);
        for (const auto& name : kept_as) kept->forget(name);
    }
    size_t links() const override { return bpf_links.size() + fds.size(); }
    std::vector<int> link_fds() const {
        std::vector<int> out = fds;
        for (auto* link : bpf_links) out.push_back(bpf_link__fd(link));
        return out;
    }
    // Pins its links as "links/<tag>_<i>-<n>"; all or none.
    void keep(const std::shared_ptr<KeptSet>& set, const std::string& tag) {
        auto all = link_fds();
        for (size_t i = 0; i < all.size(); i++) {
            std::string rel = fmt::format("links/{}_{}-{}", tag, i, all.size());
            if (auto ok = set->keep(rel, all[i]); !ok) {
                static std::atomic<bool> logged{false};  // attaches run on several threads
                if (!logged.exchange(true))
                    spdlog::warn(
                        "{}; the probes of such processes end with leakwatchd, which attaches "
                        "them anew (and drops their records) when it starts again",
                        ok.error().message);
                for (const auto& name : kept_as) set->forget(name);
                kept_as.clear();
                return;
            }
            kept = set;
            kept_as.push_back(rel);
        }
    }
    std::vector<bpf_link*> bpf_links;
    std::vector<int> fds;  // multi-uprobe and session-uprobe links; links kept by another run
    std::shared_ptr<KeptSet> kept;
    std::vector<std::string> kept_as;
};

// "links/<tag>_<i>-<n>" -> (tag, i, n).
std::optional<std::tuple<std::string, size_t, size_t>> kept_link_name(const std::string& rel) {
    size_t sep = rel.rfind('_'), dash = rel.rfind('-');
    if (!rel.starts_with("links/") || sep == std::string::npos || dash == std::string::npos ||
        dash < sep)
        return std::nullopt;
    try {
        return std::make_tuple(rel.substr(6, sep - 6), std::stoul(rel.substr(sep + 1)),
                               std::stoul(rel.substr(dash + 1)));
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

}  // namespace

Result<std::unique_ptr<Probes>> Probes::load(const Limits& limits, ProbeMode mode, Keeper* keeper) {
    libbpf_set_print(libbpf_log);
    std::unique_ptr<Probes> probes(new Probes());
    probes->limits_ = limits;
    probes->ncpus_ = libbpf_num_possible_cpus();
    if (probes->ncpus_ <= 0) return fail_errno("counting possible CPUs", probes->ncpus_);
    if (auto problem = kernel_btf_problem()) return fail(*problem);

    auto* skel = leakwatch_bpf__open();
    if (!skel) return fail_errno("opening the BPF object", errno);
    probes->skel_ = skel;
    skel->rodata->page_size = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    lw_fill_exp_table(skel->rodata->exp_neg);  // sampling probabilities
    // Each process's share of the stack maps (at least one entry each).
    auto share = [&](uint32_t entries) {
        return std::max<uint32_t>(
            1, static_cast<uint32_t>(uint64_t(entries) * limits.process_share / 100));
    };
    skel->rodata->process_stacks_max = share(limits.stacks);
    skel->rodata->process_totals_max = share(limits.stack_totals);
    if (auto ns = own_pid_namespace()) {
        skel->rodata->pidns_dev = ns->dev;
        skel->rodata->pidns_ino = ns->ino;
        spdlog::info("running in a pid namespace (inode {}): BPF reports its pids", ns->ino);
    }

    // Threads' records: task storage where the kernel has it (5.11+), else a hash map by
    // thread id of limits.threads entries (the BPF side reads which from rodata).
    const bool task_storage =
        libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, nullptr) == 1 &&
        libbpf_probe_bpf_helper(BPF_PROG_TYPE_KPROBE, BPF_FUNC_get_current_task_btf, nullptr) == 1;
    skel->rodata->task_storage = task_storage;
    bpf_map__set_autocreate(skel->maps.threads, task_storage);
    if (!task_storage)
        spdlog::info(
            "this kernel has no task storage for BPF: threads' allocator calls are "
            "kept in a map of limits.threads ({}) entries",
            limits.threads);
    struct Sizing {
        bpf_map* map;
        uint32_t entries;
    } sizes[] = {
        {skel->maps.watched, limits.processes},
        {skel->maps.procs, limits.processes},
        {skel->maps.live, limits.live_allocations},
        {skel->maps.stack_totals, limits.stack_totals},
        {skel->maps.stacks, limits.stacks},
        {skel->maps.watch_tier, limits.processes},
        {skel->maps.thread_records, task_storage ? 1 : limits.threads},
        {skel->maps.growth_pages, limits.growth_pages},
    };
    for (const auto& s : sizes) {
        if (int err = bpf_map__set_max_entries(s.map, s.entries))
            return fail_errno(std::string("sizing BPF map ") + bpf_map__name(s.map), err);
    }
    // The newest attachment the kernel has (its BTF knows the link type / attach type).
    bool kernel_multi = false, kernel_session = false;
    if (btf* vmlinux = btf__load_vmlinux_btf()) {
        kernel_multi =
            btf__find_by_name_kind(vmlinux, "bpf_uprobe_multi_link", BTF_KIND_STRUCT) >= 0;
        kernel_session =
            kernel_multi && kernel_has_attach_type(vmlinux, "BPF_TRACE_UPROBE_SESSION");
        btf__free(vmlinux);
    }
    if (mode == ProbeMode::kMulti && !kernel_multi)
        return fail("multi-uprobe links were asked for, but this kernel has none (6.6+)");
    if (mode == ProbeMode::kSession && !kernel_session)
        return fail("session uprobes were asked for, but this kernel has none (6.13+)");
    if (mode == ProbeMode::kAuto)
        mode = kernel_session ? ProbeMode::kSession
               : kernel_multi ? ProbeMode::kMulti
                              : ProbeMode::kClassic;
    probes->mode_ = mode;
    auto* p = &skel->progs;
    for (bpf_program* classic :
         {p->malloc_enter, p->calloc_enter, p->realloc_enter, p->reallocarray_enter,
          p->posix_memalign_enter, p->aligned_alloc_enter, p->memalign_enter, p->valloc_enter,
          p->pvalloc_enter, p->mmap_enter, p->mremap_enter, p->free_enter, p->munmap_enter,
          p->alloc_return})
        bpf_program__set_autoload(classic, mode == ProbeMode::kClassic);
    for (bpf_program* multi : {p->multi_entry, p->multi_return}) {
        bpf_program__set_autoload(multi, mode == ProbeMode::kMulti);
        bpf_program__set_expected_attach_type(multi,
                                              static_cast<bpf_attach_type>(kTraceUprobeMulti));
    }
    bpf_program__set_autoload(p->session_probe, mode == ProbeMode::kSession);
#if defined(__x86_64__)
    // The watch tier's page-fault program needs the user page-fault tracepoint (x86's).
    bool fault_tracepoint = false;
    if (btf* vmlinux = btf__load_vmlinux_btf()) {
        fault_tracepoint =
            btf__find_by_name_kind(vmlinux, "btf_trace_page_fault_user", BTF_KIND_TYPEDEF) >= 0;
        btf__free(vmlinux);
    }
    bpf_program__set_autoload(p->watch_fault, fault_tracepoint);
#endif
    bpf_program__set_expected_attach_type(p->session_probe,
                                          static_cast<bpf_attach_type>(kTraceUprobeSession));

    if (keeper) {
        probes->kept_ = keeper->set("user", state_layout(skel->obj, kScratchMaps));
        if (auto ok = reuse_kept_maps(*probes->kept_, skel->obj, kScratchMaps); !ok)
            return std::unexpected(ok.error());
    }
    if (int err = leakwatch_bpf__load(skel))
        return fail_errno(
            "loading the BPF programs (is this root with CAP_BPF and CAP_PERFMON, "
            "on a kernel with BTF?)",
            err);
    if (probes->kept_) {
        if (auto ok = keep_maps(*probes->kept_, skel->obj, kScratchMaps); !ok)
            return std::unexpected(ok.error());
        probes->take_kept_links();
    }

    std::vector<std::pair<std::string, int>> events;
    for (bpf_program* prog :
         {skel->progs.handle_exec, skel->progs.handle_fork, skel->progs.handle_exit}) {
        bpf_link* link = bpf_program__attach(prog);
        if (!link) return fail_errno(std::string("attaching ") + bpf_program__name(prog), errno);
        probes->event_links_.push_back(link);
        events.emplace_back(bpf_program__name(prog), bpf_link__fd(link));
    }
    keep_links(probes->kept_.get(), events);
    probes->ring_ = ring_buffer__new(bpf_map__fd(skel->maps.events), &Probes::on_ring_event,
                                     probes.get(), nullptr);
    if (!probes->ring_) return fail_errno("creating the event ring buffer", errno);
    probes->snapshot_ring_ = ring_buffer__new(bpf_map__fd(skel->maps.snapshots),
                                              &Probes::on_snapshot, probes.get(), nullptr);
    if (!probes->snapshot_ring_)
        return fail_errno("creating the unwind snapshot ring buffer", errno);
    return probes;
}

Probes::~Probes() {
    kept_attachments_.clear();
    if (fault_link_) bpf_link__destroy(fault_link_);
    if (ring_) ring_buffer__free(ring_);
    if (snapshot_ring_) ring_buffer__free(snapshot_ring_);
    for (auto* link : event_links_) bpf_link__destroy(link);
    if (skel_) leakwatch_bpf__destroy(skel_);
}

void Probes::take_kept_links() {
    std::map<std::string, std::vector<std::pair<size_t, int>>> by_tag;
    std::map<std::string, size_t> expected;
    for (auto& [rel, fd] : kept_->take_all("links/p_")) {
        auto parsed = kept_link_name(rel);
        if (!parsed) {
            close(fd);
            kept_->forget(rel);
            continue;
        }
        auto& [tag, i, n] = *parsed;
        by_tag[tag].emplace_back(i, fd);
        expected[tag] = n;
    }
    for (auto& [tag, links] : by_tag) {
        auto att = std::make_unique<UprobeAttachment>();
        std::sort(links.begin(), links.end());
        for (auto& [i, fd] : links) att->fds.push_back(fd);
        if (links.size() != expected[tag]) {
            // Not all of its links were kept: its probes are not whole, so it is attached anew.
            spdlog::info("kept probes of {} are incomplete ({} of {} links): not adopted", tag,
                         links.size(), expected[tag]);
            for (auto& [i, fd] : links)
                kept_->forget(fmt::format("links/{}_{}-{}", tag, i, expected[tag]));
            continue;
        }
        att->keep(kept_, tag);  // pinned again (those from the service manager's store were not)
        kept_attachments_.emplace_back(tag, std::move(att));
    }
}

std::vector<std::pair<std::string, std::unique_ptr<Attachment>>> Probes::take_kept() {
    return std::move(kept_attachments_);
}

std::set<uint32_t> Probes::recorded_processes() {
    std::set<uint32_t> out;
    for_each_entry<uint32_t, lw_proc_cfg>(
        bpf_map__fd(skel_->maps.watched),
        [&](uint32_t tgid, const lw_proc_cfg&) { out.insert(tgid); });
    for_each_entry<uint32_t, lw_proc_totals>(
        bpf_map__fd(skel_->maps.procs),
        [&](uint32_t tgid, const lw_proc_totals&) { out.insert(tgid); });
    return out;
}

Result<std::unique_ptr<Attachment>> Probes::attach(pid_t pid, const ProbeTarget& target) {
    auto att = std::make_unique<UprobeAttachment>();
    const std::string where = " in " + target.path + " for pid " + std::to_string(pid);
    if (mode_ == ProbeMode::kSession) {
        // The cookie carries the kind and the probe's address in the process: the program
        // runs at entry with the instruction pointer there, and at return elsewhere.
        std::vector<uint64_t> offsets, kinds;
        for (const auto& [name, offset] : target.offsets) {
            const AllocatorFunction* f = function_named(name);
            if (!f) return fail("no BPF program for allocator function " + name);
            offsets.push_back(offset);
            kinds.push_back(((target.load_bias + offset) << LW_COOKIE_KIND_BITS) | f->kind);
        }
        int fd = link_uprobe_multi(bpf_program__fd(skel_->progs.session_probe), target.path,
                                   offsets, kinds, false, pid, kTraceUprobeSession);
        if (fd < 0) return fail_errno("session uprobe on the allocator functions" + where, errno);
        att->fds.push_back(fd);
        if (kept_ && !target.keep_as.empty()) att->keep(kept_, target.keep_as);
        return att;
    }
    if (mode_ == ProbeMode::kMulti) {
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
        att->fds.push_back(fd);
        fd = link_uprobe_multi(bpf_program__fd(skel_->progs.multi_return), target.path, ret_offsets,
                               ret_kinds, true, pid);
        if (fd < 0) return fail_errno("multi-uprobe on the allocator returns" + where, errno);
        att->fds.push_back(fd);
        if (kept_ && !target.keep_as.empty()) att->keep(kept_, target.keep_as);
        return att;
    }
    for (const auto& [name, offset] : target.offsets) {
        const AllocatorFunction* f = function_named(name);
        bpf_program* entry = f ? entry_program(skel_, f->kind) : nullptr;
        if (!entry) return fail("no BPF program for allocator function " + name);
        LIBBPF_OPTS(bpf_uprobe_opts, entry_opts, .retprobe = false);
        bpf_link* link =
            bpf_program__attach_uprobe_opts(entry, pid, target.path.c_str(), offset, &entry_opts);
        if (!link) return fail_errno("uprobe on " + name + where, errno);
        att->bpf_links.push_back(link);
        if (!f->has_return) continue;
        LIBBPF_OPTS(bpf_uprobe_opts, ret_opts, .retprobe = true);
        link = bpf_program__attach_uprobe_opts(skel_->progs.alloc_return, pid, target.path.c_str(),
                                               offset, &ret_opts);
        if (!link) return fail_errno("uretprobe on " + name + where, errno);
        att->bpf_links.push_back(link);
    }
    if (kept_ && !target.keep_as.empty()) att->keep(kept_, target.keep_as);
    return att;
}

Result<void> Probes::watch(uint32_t tgid, const Recording& r) {
    lw_proc_totals zero{};
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.procs), &tgid, &zero, BPF_ANY))
        return fail_errno("adding pid " + std::to_string(tgid) +
                              " to the process map "
                              "(limits.processes reached?)",
                          errno);
    lw_proc_cfg cfg = proc_cfg(r);
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.watched), &tgid, &cfg, BPF_ANY))
        return fail_errno("adding pid " + std::to_string(tgid) + " to the watched map", errno);
    return {};
}

void Probes::unwatch(uint32_t tgid) {
    bpf_map_delete_elem(bpf_map__fd(skel_->maps.watched), &tgid);
}

bool Probes::samples_faults() const {
#if defined(__x86_64__)
    return bpf_program__fd(skel_->progs.watch_fault) >= 0;
#else
    return false;
#endif
}

Result<void> Probes::watch_memory(uint32_t tgid, const Recording& r, uint64_t fault_sample_bytes) {
    lw_proc_cfg cfg = proc_cfg(r);
    cfg.sample_mean = fault_sample_bytes;
    // Its bit in the filter first: watch_fault looks at the tier only for a tgid whose bit is
    // set, so a fault between the two writes is sampled, not missed.
    set_tier_bit(tgid, true);
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.watch_tier), &tgid, &cfg, BPF_ANY)) {
        int err = errno;
        if (!tier_.contains(tgid)) set_tier_bit(tgid, tier_bit_shared(tgid));
        return fail_errno(
            "adding pid " + std::to_string(tgid) + " to the watch tier (limits.processes reached?)",
            err);
    }
    tier_.insert(tgid);
#if defined(__x86_64__)
    if (!fault_link_ && samples_faults()) {
        fault_link_ = bpf_program__attach(skel_->progs.watch_fault);
        if (!fault_link_) {
            int err = errno;
            return fail_errno("attaching the page-fault program of the watch tier", err);
        }
    }
#endif
    return {};
}

// The filter's word for a tgid, read, changed and written back: only the daemon writes it.
void Probes::set_tier_bit(uint32_t tgid, bool on) {
    uint32_t word = (tgid / 64) % (LW_TIER_FILTER_BITS / 64);
    uint64_t bits = 0;
    int fd = bpf_map__fd(skel_->maps.tier_filter);
    bpf_map_lookup_elem(fd, &word, &bits);
    const uint64_t bit = 1ULL << (tgid % 64);
    const uint64_t next = on ? bits | bit : bits & ~bit;
    if (next != bits) bpf_map_update_elem(fd, &word, &next, BPF_ANY);
}

// Whether another process of the tier has the same bit (pids LW_TIER_FILTER_BITS apart).
bool Probes::tier_bit_shared(uint32_t tgid) const {
    for (uint32_t other : tier_)
        if (other != tgid && other % LW_TIER_FILTER_BITS == tgid % LW_TIER_FILTER_BITS) return true;
    return false;
}

void Probes::unwatch_memory(uint32_t tgid) {
    bpf_map_delete_elem(bpf_map__fd(skel_->maps.watch_tier), &tgid);
    tier_.erase(tgid);
    if (!tier_bit_shared(tgid)) set_tier_bit(tgid, false);
    if (tier_.empty() && fault_link_) {
        bpf_link__destroy(fault_link_);
        fault_link_ = nullptr;
    }
}

void Probes::purge(const std::set<uint32_t>& tgids) {
    if (tgids.empty()) return;
    for (bpf_map* map : {skel_->maps.live, skel_->maps.stack_totals, skel_->maps.stacks,
                         skel_->maps.unwind_rules, skel_->maps.snapshots_sent}) {
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
        } else if (map == skel_->maps.snapshots_sent) {
            for_each_entry<lw_key, uint8_t>(fd, [&](const lw_key& k, const uint8_t&) {
                if (tgids.count(k.tgid)) doomed.push_back(k);
            });
        } else if (map == skel_->maps.unwind_rules) {
            for_each_entry<lw_key, lw_unwind_rule>(fd, [&](const lw_key& k, const lw_unwind_rule&) {
                if (tgids.count(k.tgid)) doomed.push_back(k);
            });
        } else {
            using Totals = lw_stack_totals;
            for_each_entry<lw_key, Totals>(fd, [&](const lw_key& k, const Totals&) {
                if (tgids.count(k.tgid)) doomed.push_back(k);
            });
        }
        delete_keys(fd, doomed);
    }
    std::vector<lw_key> pages;
    for_each_entry<lw_key, lw_growth>(bpf_map__fd(skel_->maps.growth_pages),
                                      [&](const lw_key& k, const lw_growth&) {
                                          if (tgids.count(k.tgid)) pages.push_back(k);
                                      });
    delete_keys(bpf_map__fd(skel_->maps.growth_pages), pages);
    for (uint32_t tgid : tgids) {
        bpf_map_delete_elem(bpf_map__fd(skel_->maps.watched), &tgid);
        bpf_map_delete_elem(bpf_map__fd(skel_->maps.procs), &tgid);
        unwatch_memory(tgid);
    }
}

void Probes::purge_probes(const std::set<uint32_t>& tgids) {
    if (tgids.empty()) return;
    std::vector<lw_key> live, totals;
    for_each_entry<lw_key, lw_alloc>(bpf_map__fd(skel_->maps.live),
                                     [&](const lw_key& k, const lw_alloc&) {
                                         if (tgids.count(k.tgid)) live.push_back(k);
                                     });
    for_each_entry<lw_key, lw_stack_totals>(bpf_map__fd(skel_->maps.stack_totals),
                                            [&](const lw_key& k, const lw_stack_totals&) {
                                                if (tgids.count(k.tgid)) totals.push_back(k);
                                            });
    delete_keys(bpf_map__fd(skel_->maps.live), live);
    delete_keys(bpf_map__fd(skel_->maps.stack_totals), totals);
    for (uint32_t tgid : tgids) {
        bpf_map_delete_elem(bpf_map__fd(skel_->maps.watched), &tgid);
        bpf_map_delete_elem(bpf_map__fd(skel_->maps.procs), &tgid);
    }
}

namespace {

// What one poll of the event ring buffer may spend handling events. Under an exec storm every
// event may be an attach (milliseconds each, more while the kernel unregisters other probes),
// and one poll handled all the ring held: the main loop stalled for seconds without pinging the
// watchdog, sampling or reloading. What is left stays in the ring for the next poll.
constexpr auto kEventBudget = std::chrono::milliseconds(50);
// Returned by the handler to end a poll (libbpf has consumed that event already).
constexpr int kBudgetSpent = -ECANCELED;

}  // namespace

int Probes::on_ring_event(void* ctx, void* data, size_t size) {
    auto* self = static_cast<Probes*>(ctx);
    if (size < sizeof(lw_event) || !self->handler_) return 0;
    auto now = std::chrono::steady_clock::now();
    if (self->events_handled_++ == 0) self->budget_end_ = now + kEventBudget;
    self->handler_(*static_cast<const lw_event*>(data));
    return std::chrono::steady_clock::now() >= self->budget_end_ ? kBudgetSpent : 0;
}

int Probes::on_snapshot(void* ctx, void* data, size_t size) {
    auto* self = static_cast<Probes*>(ctx);
    if (size < sizeof(lw_snapshot) || !self->snapshot_handler_) return 0;
    self->snapshot_handler_(*static_cast<const lw_snapshot*>(data));
    return 0;
}

void Probes::set_unwind_rule(uint32_t tgid, uint64_t pc, const lw_unwind_rule& rule) {
    lw_key key{};
    key.tgid = tgid;
    key.id = pc;
    bpf_map_update_elem(bpf_map__fd(skel_->maps.unwind_rules), &key, &rule, BPF_ANY);
}

void Probes::set_stack(uint32_t tgid, uint64_t id, const lw_stack& stack) {
    lw_key key{};
    key.tgid = tgid;
    key.id = id;
    bpf_map_update_elem(bpf_map__fd(skel_->maps.stacks), &key, &stack, BPF_ANY);
}

void Probes::snapshot_done(uint32_t tgid, uint64_t mark) {
    lw_key key{};
    key.tgid = tgid;
    key.id = mark;
    bpf_map_delete_elem(bpf_map__fd(skel_->maps.snapshots_sent), &key);
}

bool Probes::watching(uint32_t tgid) const {
    lw_proc_cfg cfg{};
    return bpf_map_lookup_elem(bpf_map__fd(skel_->maps.watched), &tgid, &cfg) == 0 ||
           bpf_map_lookup_elem(bpf_map__fd(skel_->maps.watch_tier), &tgid, &cfg) == 0;
}

std::vector<GrowthPage> Probes::growth_pages() {
    std::vector<GrowthPage> out;
    for_each_entry<lw_key, lw_growth>(bpf_map__fd(skel_->maps.growth_pages),
                                      [&](const lw_key& k, const lw_growth& g) {
                                          out.push_back({k.tgid, k.id, g.stack, g.ts_ns});
                                      });
    return out;
}

void Probes::forget_growth_pages(const std::vector<std::pair<uint32_t, uint64_t>>& pages) {
    int fd = bpf_map__fd(skel_->maps.growth_pages);
    for (const auto& [tgid, page] : pages) {
        lw_key key{};
        key.tgid = tgid;
        key.id = page;
        bpf_map_delete_elem(fd, &key);
    }
}

int Probes::poll_snapshots(int timeout_ms) {
    return ring_buffer__poll(snapshot_ring_, timeout_ms);
}

int Probes::poll_events(int timeout_ms) {
    events_handled_ = 0;
    int n = ring_buffer__poll(ring_, timeout_ms);
    return n == kBudgetSpent ? static_cast<int>(events_handled_) : n;
}

std::vector<std::pair<uint32_t, ProcTotals>> Probes::process_totals() {
    std::vector<std::pair<uint32_t, ProcTotals>> out;
    for_each_entry<uint32_t, lw_proc_totals>(
        bpf_map__fd(skel_->maps.procs), [&](uint32_t tgid, const lw_proc_totals& t) {
            auto bytes = static_cast<int64_t>(t.alloc_bytes - t.free_bytes - t.dropped_bytes);
            auto count = static_cast<int64_t>(t.alloc_count - t.free_count - t.dropped_count);
            out.push_back({tgid, ProcTotals{bytes, count, t.alloc_bytes, t.alloc_count,
                                            t.free_bytes, t.free_count}});
        });
    return out;
}

std::vector<StackTotals> Probes::stack_totals() {
    std::vector<StackTotals> out;
    for_each_entry<lw_key, lw_stack_totals>(
        bpf_map__fd(skel_->maps.stack_totals), [&](const lw_key& k, const lw_stack_totals& t) {
            out.push_back({k.tgid, k.id, t.bytes, t.count, t.alloc_bytes, t.alloc_count});
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
    // The id the BPF side gives these frames: the same for a snapshot's stack once completed
    // (stored under the snapshot's id) and for the walks after it.
    uint32_t py_nr = std::min<uint32_t>(s.py_nr, LW_PY_MAX_FRAMES);
    out.python.assign(s.py, s.py + py_nr);
    out.content_id =
        python_hash(stack_hash(mix64(s.caller ^ 0x9e3779b97f4a7c15ULL), s.ips, nr), s.py, py_nr);
    out.partial = s.flags & LW_STACK_PARTIAL;
    out.truncated = s.flags & LW_STACK_TRUNCATED;
    out.pending = s.flags & LW_STACK_PENDING;
    return out;
}

std::vector<LiveAllocation> Probes::live_allocations(const std::set<uint32_t>& tgids) {
    std::vector<LiveAllocation> out;
    if (tgids.empty()) return out;
    for_each_entry<lw_key, lw_alloc>(
        bpf_map__fd(skel_->maps.live), [&](const lw_key& k, const lw_alloc& a) {
            if (tgids.count(k.tgid))
                out.push_back({k.tgid, k.id, a.bytes, a.ts_ns, a.counted ? a.stack : 0});
        });
    return out;
}

LostCounters Probes::lost() {
    return read_lost(skel_->maps.lost, ncpus_);
}

std::vector<MapUsage> Probes::usage() {
    // The live map is too large to walk every interval; every process counts its records
    // (with sampling, fewer than the allocations they stand for).
    uint64_t live = 0;
    for_each_entry<uint32_t, lw_proc_totals>(bpf_map__fd(skel_->maps.procs),
                                             [&](uint32_t, const lw_proc_totals& t) {
                                                 if (t.records > 0)
                                                     live += static_cast<uint64_t>(t.records);
                                             });
    return {
        {"live", live, limits_.live_allocations},
        // Batched: a key-by-key walk of these two was most of the daemon's CPU with 10,000
        // stacks (docs/performance.md, "The daemon at scale").
        {"stacks", count_batched<lw_key, lw_stack>(skel_->maps.stacks), limits_.stacks},
        {"stack_totals", count_batched<lw_key, lw_stack_totals>(skel_->maps.stack_totals),
         limits_.stack_totals},
        {"processes", count_entries(skel_->maps.watched), limits_.processes},
        {"unwind_rules", count_batched<lw_key, lw_unwind_rule>(skel_->maps.unwind_rules),
         bpf_map__max_entries(skel_->maps.unwind_rules)},
        {"watch_tier", tier_.size(), limits_.processes},
        {"growth_pages", count_batched<lw_key, lw_growth>(skel_->maps.growth_pages),
         limits_.growth_pages},
    };
}

}  // namespace leakwatch
