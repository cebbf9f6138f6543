#include "tracker/tracker.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <expected>
#include <thread>

#include "config/reload.h"
#include "leakwatch.h"
#include "tracker/placement.h"
#include "util/clock.h"

namespace leakwatch {

namespace {

// ld.so maps the C library a few hundred microseconds after exec; a process caught at its
// exec event is retried this often until its allocator is mapped.
constexpr std::chrono::milliseconds kRetryEvery{5};
constexpr int kMaxAttempts = 400;  // 2 s
// A process attached this long ago is looked at again (Tracker::recheck_).
constexpr auto kRecheckAfter = std::chrono::seconds(1);
// A process whose files are still being read (on the loader) is looked at this often.
constexpr std::chrono::milliseconds kLoadingRetryEvery{50};
// A process whose allocator's file is too slow to read (Tracker::retry_slow) is tried again
// after kSlowRetryFirst, doubling up to kSlowRetryMax, kSlowRetries times (13.5 min in all).
constexpr std::chrono::seconds kSlowRetryFirst{1};
constexpr std::chrono::seconds kSlowRetryMax{300};
constexpr int kSlowRetries = 10;
constexpr std::chrono::seconds slow_retry_delay(int retry) {
    return std::min(kSlowRetryMax, kSlowRetryFirst * (int64_t{1} << std::min(retry, 20)));
}
constexpr std::chrono::seconds slow_retry_total() {
    std::chrono::seconds total{0};
    for (int i = 0; i < kSlowRetries; i++) total += slow_retry_delay(i);
    return total;
}
static_assert(slow_retry_total() == std::chrono::seconds(811));
// Now, in whole microseconds: the times kept tags carry (attached_at, escalated_at), which the
// next run's series keys must match.
double unix_microseconds() {
    return std::floor(unix_seconds() * 1e6) / 1e6;
}

// How long a process counted as missed is remembered, so that its later events do not count it
// again (Tracker::missed_).
constexpr auto kMissedRemembered = std::chrono::seconds(5);

}  // namespace

Tracker::Tracker(Attacher& attacher, const ProcReader& proc, Symbolizer& symbolizer,
                 std::vector<WatchRule> rules, Escalation escalation)
    : attacher_(attacher),
      proc_(proc),
      symbolizer_(symbolizer),
      rules_(std::move(rules)),
      escalation_(escalation),
      self_(getpid()),
      cmdlines_(proc, symbolizer.proc_reads(),
                [&symbolizer](const std::string& key) { return symbolizer.wait_for(key); }) {}

namespace {

// How far before a symbol its function's unwind tables may start for the symbol to be checked
// against them (decoded from there): prologues, not whole functions.
constexpr uint64_t kMaxDecodedBefore = 4096;

// The probe plan for `mapping` of `pid`, from the file it maps (see ProbePlan). Reads files:
// runs on the loader.
Tracker::ProbePlan make_plan(const ProcReader& proc, int pid, const MapEntry& mapping,
                             const std::string& prefix, const Symbolizer::Parser& parse,
                             uint64_t max_bytes, const ProcGate& gate) {
    Tracker::ProbePlan plan;
    auto file = open_mapped(proc, pid, mapping, max_bytes, gate);
    if (!file) {
        plan.error = file.error().message;
        return plan;
    }
    auto elf = parse(*file);
    if (!elf) {
        plan.error = elf.error().message;
        return plan;
    }
    // Where the file's functions start, by its unwind tables: a symbol that is not at a
    // function's start must be an instruction boundary of the code from there.
    auto cfi = CfiFile::open(*file);
    std::set<uint64_t> seen;  // aliases (mmap/mmap64) share an address: probe it once
    for (const auto& fn : allocator_functions()) {
        auto vaddr = (*elf)->function_address(prefix + fn.name);
        if (!vaddr) continue;
        auto off = (*elf)->file_offset_of_vaddr(*vaddr);
        if (!off || !seen.insert(*off).second) continue;
        if (auto start = cfi ? (*cfi)->function_start(*vaddr) : std::nullopt;
            start && *start != *vaddr && *vaddr - *start < kMaxDecodedBefore) {
            auto start_off = (*elf)->file_offset_of_vaddr(*start);
            auto code = start_off ? read_at(*file, *start_off, *vaddr - *start + 16)
                                  : Result<std::string>(std::unexpected(Error{"outside the file"}));
            auto bytes = code ? std::span<const uint8_t>(
                                    reinterpret_cast<const uint8_t*>(code->data()), code->size())
                              : std::span<const uint8_t>();
            if (!instruction_boundary(bytes, *vaddr - *start)) {
                plan.refused.push_back(fmt::format(
                    "{}{} at {:#x} is not where an instruction starts in the code of its "
                    "function (from {:#x}, by the file's unwind tables): not probed at all",
                    prefix, fn.name, *vaddr, *start));
                continue;
            }
        }
        Placement where = place_probe_in_file(*file, *off, fn.arguments, fn.kind == LW_FREE);
        plan.probes.push_back({fn.name, *off + where.skip, where});
    }
    plan.file = std::make_shared<OpenFile>(std::move(*file));
    return plan;
}

// What the unwind tables of a mapped file are cached by: its path, identity and offset.
std::string code_key(const MapEntry& m) {
    return m.path + '|' + std::to_string(m.dev_major) + ':' + std::to_string(m.dev_minor) + ':' +
           std::to_string(m.inode) + '@' + std::to_string(m.offset);
}

// The unwind tables of the executable file mappings of a process not known yet (unwind: auto),
// into `cache`. Runs on the loader.
void read_frame_pointer_files(const ProcReader& proc, int pid, const std::vector<MapEntry>& code,
                              uint64_t max_bytes, const ProcGate& gate,
                              Tracker::FramePointerFiles& cache) {
    for (const MapEntry& m : code) {
        const std::string key = code_key(m);
        {
            std::lock_guard lock(cache.mu);
            if (cache.files.peek(key)) continue;
        }
        Tracker::FramePointerFile fresh;
        if (auto file = open_mapped(proc, pid, m, max_bytes, gate)) {
            if (auto cfi = CfiFile::open(*file)) {
                if (auto vaddr = (*cfi)->vaddr_of_file_offset(m.offset)) {
                    fresh.use = (*cfi)->frame_pointer_use();
                    fresh.vaddr = *vaddr;
                    fresh.readable = true;
                    spdlog::debug(
                        "{}: {} of {} functions keep a frame pointer; {} walked by the frame "
                        "pointer",
                        m.path, fresh.use.with_frame_pointer, fresh.use.functions,
                        fresh.use.walkable(LW_MAX_RANGES / 2) ? "frames" : "no frame");
                }
            }
        }
        std::lock_guard lock(cache.mu);
        cache.files.put(key, std::move(fresh));
    }
}

// The executable file mappings of a process, the program's first: its own code is where the
// callers that name a leak are.
std::vector<MapEntry> code_mappings(const std::vector<MapEntry>& maps, const std::string& exe) {
    std::vector<MapEntry> code;
    for (const auto& m : maps)
        if (m.executable() && !m.path.empty() && m.path.front() == '/')
            code.insert(m.path == exe ? code.begin() : code.end(), m);
    return code;
}

}  // namespace

std::optional<Tracker::ProbePlan> Tracker::probe_plan(const ProcessInfo& info,
                                                      const WatchRule& rule,
                                                      const std::vector<MapEntry>& maps,
                                                      const MapEntry& mapping) {
    const pid_t pid = info.pid;
    const std::string key = "probe:" + std::to_string(pid) + ':' + std::to_string(info.start_time) +
                            ':' + std::to_string(mapping.start) + ':' +
                            std::to_string(mapping.inode) + ':' + rule.allocator.symbol_prefix;
    auto& slot = plans_[pid];
    if (!slot || slot->key != key) {
        slot = std::make_shared<PlanSlot>();
        slot->key = key;
    }
    auto take = [&]() -> std::optional<ProbePlan> {
        // Held here: erasing the map's entry may drop the last other owner, and the slot's
        // mutex must outlive its lock.
        const std::shared_ptr<PlanSlot> held = slot;
        std::optional<ProbePlan> plan;
        {
            std::lock_guard lock(held->mu);
            if (!held->plan) return std::nullopt;
            plan = std::move(*held->plan);
        }
        plans_.erase(pid);
        return plan;
    };
    if (auto plan = take()) return plan;
    auto wait = symbolizer_.wait_for(key);
    if (!wait) {
        // The slot stays: a read that ends after all leaves its plan there for the next try,
        // and one that never ends (a file that never answers) is not started again.
        ProbePlan slow;
        slow.error = mapping.path + ": too slow to read";
        slow.slow = true;
        return slow;
    }
    std::vector<MapEntry> code;
#if defined(__x86_64__)
    if (rule.unwind == WatchRule::Unwind::kAuto) code = code_mappings(maps, info.exe);
#else
    (void)maps;
#endif
    auto load = [slot, proc = proc_, pid, mapping, prefix = rule.allocator.symbol_prefix,
                 parse = symbolizer_.parser(), max_bytes = symbolizer_.max_file_bytes(),
                 code = std::move(code), fp = frame_pointer_files_,
                 gate = symbolizer_.proc_gate()] {
        ProbePlan plan = make_plan(proc, pid, mapping, prefix, parse, max_bytes, gate);
        if (plan.error.empty()) read_frame_pointer_files(proc, pid, code, max_bytes, gate, *fp);
        std::lock_guard lock(slot->mu);
        slot->plan = std::move(plan);
    };
    if (symbolizer_.loader().run(key, std::move(load), *wait) == BoundedLoader::Outcome::kWaiting)
        return std::nullopt;
    return take();
}

void Tracker::log_failure(const ProcessInfo& info, const std::string& message) {
    // A process that exited meanwhile is counted (attach_dropped), not logged: an exec storm
    // logged thousands of these a minute.
    const bool gone = !proc_.start_time(info.pid);
    spdlog::log(gone ? spdlog::level::debug : spdlog::level::warn, "pid {} ({}): {}", info.pid,
                info.comm, message);
}

Recording Tracker::stack_recording(const ProcessInfo& info, const WatchRule& rule,
                                   const std::vector<MapEntry>& maps) {
    Recording recording;
#if defined(__x86_64__)
    recording.dwarf_unwind = rule.unwind != WatchRule::Unwind::kFramePointer;
    if (rule.unwind == WatchRule::Unwind::kAuto)
        add_frame_pointer_code(info.pid, maps, info.exe, recording);
    // Its layout is the PythonNamer entry's, which lives while the process is watched.
    if (auto py = python_runtime(info, maps)) {
        recording.python = &*py->layout;
        recording.python_key_address = py->key_address;
        recording.python_max_frames = python_max_frames_;
    }
#else
    (void)info, (void)rule, (void)maps;
#endif
    return recording;
}

void Tracker::watch_jvm(pid_t pid, const WatchRule& rule, const std::vector<MapEntry>& maps) {
    for (const auto& m : maps) {
        if (m.path.ends_with("/libjvm.so")) {
            symbolizer_.watch_jvm(static_cast<int>(pid), rule.jvm_attach);
            return;
        }
    }
}

std::shared_ptr<const PythonRuntime> Tracker::python_runtime(const ProcessInfo& info,
                                                             const std::vector<MapEntry>& maps,
                                                             bool* pending) {
    return python_.runtime(info.pid, info.start_time, maps, info.exe, pending);
}

bool Tracker::python_loading(const ProcessInfo& info, const std::vector<MapEntry>& maps) {
    // The attach waits for its interpreter's files as for its allocator's: a file too slow to
    // read is refused, and the process watched without Python frames.
    bool pending = false;
    python_runtime(info, maps, &pending);
    return pending;
}

Frame Tracker::resolve_python(uint32_t pid, uint64_t code, uint32_t instruction) {
    return python_.resolve(pid, code, instruction);
}

Tracker::Outcome Tracker::try_attach(const ProcessInfo& info, const WatchRule& rule,
                                     bool log_not_yet) {
    const pid_t pid = info.pid;
    // Read on the loader: a process can hold up the read of its maps (symbols/process_maps.h).
    // The attach waits for maps read now (tried again later while the read goes on); one
    // whose read takes longer than `slow` is retried as one whose allocator's file does
    // (retry_slow).
    auto maps = symbolizer_.process_maps().read(pid);
    // Busy (reads of its user's processes held up): asked again later, as one still loading.
    if (!maps.fresh) return maps.refused && !maps.busy ? Outcome::kSlow : Outcome::kLoading;
    if (!maps.maps) {
        spdlog::debug("pid {}: {}", pid, maps.error);
        return Outcome::kFailed;  // gone
    }
    if (purge_.count(static_cast<uint32_t>(pid))) flush_purges();
    const double attached_at = unix_microseconds();
    Tracked t{info, rule, nullptr, *maps.maps, Clock::now(), attached_at};
    if (rule.tracking == WatchRule::Tracking::kEscalate) {
        if (python_loading(info, t.maps)) return Outcome::kLoading;
        // The watch tier: no uprobe, nothing to wait for.
        Recording stacks = stack_recording(info, rule, t.maps);
        if (auto ok = attacher_.watch_memory(static_cast<uint32_t>(pid), stacks,
                                             escalation_.watch_sample_bytes);
            !ok) {
            spdlog::warn("pid {} ({}): {}", pid, info.comm, ok.error().message);
            return Outcome::kFailed;
        }
        t.state = TrackingState::kWatch;
        t.fault_sample_bytes = escalation_.watch_sample_bytes;
        spdlog::info(
            "watching pid {} ({}) for rule '{}': its memory, and a page fault in {} "
            "bytes it touches first (no uprobes until it is suspected of leaking)",
            pid, info.comm, rule.name, escalation_.watch_sample_bytes);
        watch_jvm(pid, rule, t.maps);
        tracked_[pid] = std::move(t);
        recheck_.emplace_back(pid, Clock::now() + kRecheckAfter);
        return Outcome::kAttached;
    }
    double escalated_at = 0;
    Outcome o =
        attach_probes(info, rule, t.maps, t.attached_at, log_not_yet, t.attachment, escalated_at);
    if (o != Outcome::kAttached) return o;
    t.state = rule.tracking == WatchRule::Tracking::kSampled ? TrackingState::kSampled
                                                             : TrackingState::kFull;
    watch_jvm(pid, rule, t.maps);
    tracked_[pid] = std::move(t);
    recheck_.emplace_back(pid, Clock::now() + kRecheckAfter);
    return Outcome::kAttached;
}

std::expected<std::optional<AttachQueue::Done>, Tracker::Outcome> Tracker::start_attach(
    const ProcessInfo& info, const WatchRule& rule, const std::vector<MapEntry>& maps,
    const MapEntry& mapping, uint64_t load_bias, const std::string& owner, double attached_at,
    double escalated_at) {
    const pid_t pid = info.pid;
    // Read on the loader: a file of the process may block whoever reads it.
    // Its interpreter's runtime is looked for beside the plan (both on the loader), so that a
    // busy loader delays the attach once, not twice.
    const bool python_pending = python_loading(info, maps);
    auto plan = probe_plan(info, rule, maps, mapping);
    if (!plan) return std::optional<AttachQueue::Done>();
    if (plan->slow) return std::unexpected(Outcome::kSlow);
    if (!plan->error.empty()) {
        log_failure(info, plan->error);
        return std::unexpected(Outcome::kFailed);
    }
    // Still being looked for: tried again (the plan is made again then, from the parsed-file
    // cache).
    if (python_pending && python_loading(info, maps)) return std::optional<AttachQueue::Done>();

    ProbeTarget target;
    // The very file the plan was read from: the kernel resolves no path of the process's. Its
    // descriptor is held open until the attach ends (the request's `hold`).
    target.path = plan->file->fd_path();
    target.load_bias = load_bias;
    for (const std::string& refused : plan->refused)
        spdlog::warn("pid {} ({}): {}: {}", pid, info.comm, mapping.path, refused);
    for (const auto& probe : plan->probes) {
        const Placement& where = probe.placement;
        if (where.emulated) {
            spdlog::debug("pid {}: {} probed {} bytes in ({})", pid, probe.function, where.skip,
                          where.how);
        } else if (single_stepped_.insert(mapping.path + ":" + probe.function).second) {
            spdlog::info(
                "{} in {} is probed at its entry, which the kernel single-steps ({}); "
                "each call costs several microseconds more",
                probe.function, mapping.path, where.how);
        }
        target.offsets.emplace_back(probe.function, probe.offset);
    }
    auto has = [&](const char* name) {
        return std::any_of(target.offsets.begin(), target.offsets.end(),
                           [&](const auto& o) { return o.first == name; });
    };
    if (!has("malloc") || !has("free")) {
        spdlog::warn("pid {} ({}): {} has no {}malloc/{}free to probe; not watched", pid, info.comm,
                     mapping.path, rule.allocator.symbol_prefix, rule.allocator.symbol_prefix);
        return std::unexpected(Outcome::kFailed);
    }
    if (purge_.count(static_cast<uint32_t>(pid))) flush_purges();
    target.keep_as = kept_tag(pid, info.start_time, attached_at, rule, escalated_at);
    AttachQueue::Request request;
    request.pid = pid;
    request.target = std::move(target);
    request.file = mapping.path;
    request.what = fmt::format("pid {} ({})", pid, info.comm);
    request.key = fmt::format("{}:{}:{}", mapping.dev_major, mapping.dev_minor, mapping.inode);
    request.owner = owner;
    request.hold = plan->file;
    request.attached_at = attached_at;
    request.escalated_at = escalated_at;
    // Most attaches take milliseconds: waited for here; one that waits in the kernel (or for
    // the process's previous probes to go) is asked for again at the next tries.
    return attaches_.attach(std::move(request), attach_wait_);
}

Tracker::Outcome Tracker::attach_probes(const ProcessInfo& info, const WatchRule& rule,
                                        const std::vector<MapEntry>& maps, double& attached_at,
                                        bool log_not_yet, std::unique_ptr<Attachment>& out,
                                        double& escalated_at) {
    const pid_t pid = info.pid;
    auto mapping = find_allocator_mapping(maps, rule.allocator, info.exe);
    if (!mapping) {
        if (log_not_yet)
            spdlog::warn("pid {} ({}) matches rule '{}' but cannot be watched: {}", pid, info.comm,
                         rule.name, mapping.error().message);
        return Outcome::kNotYet;
    }
    // One pass over the mappings of the allocator's file: its executable segment (where the
    // probes are: their addresses are load_bias + file offset) and its whole range.
    uint64_t load_bias = mapping->start - mapping->offset;
    uint64_t lib_lo = UINT64_MAX, lib_hi = 0;
    bool found_text = false;
    for (const auto& m : maps) {
        if (m.inode != mapping->inode || m.dev_major != mapping->dev_major ||
            m.dev_minor != mapping->dev_minor)
            continue;
        if (m.executable() && !found_text) {
            load_bias = m.start - m.offset;
            found_text = true;
        }
        lib_lo = std::min(lib_lo, m.start);
        lib_hi = std::max(lib_hi, m.end);
    }
    // The attach started by an earlier try, for this process and rule: asked for, nothing
    // read or planned again while it waits in the kernel.
    const std::string owner = fmt::format("{}:{:016x}", info.start_time, rule_digest(rule));
    std::optional<AttachQueue::Done> done;
    if (attaches_.waiting(pid, owner)) {
        done = attaches_.poll(pid, owner);
        if (!done) return Outcome::kLoading;
    } else {
        auto started =
            start_attach(info, rule, maps, *mapping, load_bias, owner, attached_at, escalated_at);
        if (!started) return started.error();
        done = std::move(*started);
        if (!done) return Outcome::kLoading;
    }
    attached_at = done->attached_at;
    escalated_at = done->escalated_at;
    auto& attachment = done->result;
    if (!attachment) {
        log_failure(info, attachment.error().message);
        return Outcome::kFailed;
    }
    Recording recording = stack_recording(info, rule, maps);
    recording.min_size = rule.min_size;
    recording.max_size = rule.max_size;
    recording.sample_bytes = rule.sample_bytes;
    // The allocator's own mmap calls are told by their caller being in its file, unless that
    // file is the program itself (a static binary), whose own mmap calls would vanish too.
    if (rule.allocator.library != "exe" && lib_lo < lib_hi) {
        recording.lib_lo = lib_lo;
        recording.lib_hi = lib_hi;
    }
    if (auto ok = attacher_.watch(static_cast<uint32_t>(pid), recording); !ok) {
        log_failure(info, ok.error().message);
        reaper_.dispose(std::move(*attachment), pid);  // never detached on the main loop
        return Outcome::kFailed;
    }
    spdlog::info("probing pid {} ({}) for rule '{}': {} functions probed in {} ({} links)", pid,
                 info.comm, rule.name, done->functions, mapping->path, (*attachment)->links());
    out = std::move(*attachment);
    return Outcome::kAttached;
}

Result<void> Tracker::escalate(pid_t pid, std::string_view reason) {
    auto it = tracked_.find(pid);
    if (it == tracked_.end()) return fail("pid " + std::to_string(pid) + " is not watched");
    Tracked& t = it->second;
    if (t.state != TrackingState::kWatch)
        return fail("pid " + std::to_string(pid) +
                    " is not in the watch tier (tracking: " + tracking_name(t.state) + ")");
    if (t.escalating) return {};  // asked again while its probes are being attached
    // Its maps as they are now when they read within the symbolizer's wait; else (a process
    // holding their read up) the maps read last.
    auto maps = symbolizer_.process_maps().read(pid);
    if (maps.fresh && !maps.maps) return fail("pid " + std::to_string(pid) + ": " + maps.error);
    if (maps.maps) t.maps = *maps.maps;
    if (maps.fresh) t.maps_read = Clock::now();
    double escalated_at = unix_microseconds();
    const Outcome o =
        attach_probes(t.info, t.rule, t.maps, t.attached_at, true, t.attachment, escalated_at);
    if (o == Outcome::kLoading) {
        // Its files are being read, or its probes wait in the kernel: finished at a tick.
        t.escalating = std::string(reason);
        t.escalating_since = escalated_at;
        spdlog::info(
            "escalating pid {} ({}) of rule '{}': {}; its allocator probes are being "
            "attached",
            pid, t.info.comm, t.rule.name, reason);
        return {};
    }
    if (o != Outcome::kAttached)
        return fail("pid " + std::to_string(pid) +
                    ": its allocator probes could not be "
                    "attached (the log says why)");
    mark_escalated(pid, t, escalated_at, reason);
    return {};
}

void Tracker::mark_escalated(pid_t pid, Tracked& t, double escalated_at, std::string_view reason) {
    t.state = TrackingState::kEscalated;
    t.escalated_at = escalated_at;
    spdlog::info("escalated pid {} ({}) of rule '{}': {}; allocator probes, {}", pid, t.info.comm,
                 t.rule.name, reason,
                 t.rule.sample_bytes
                     ? "sampled every " + std::to_string(t.rule.sample_bytes) + " bytes"
                     : std::string("every allocation"));
}

void Tracker::finish_escalation(pid_t pid, Tracked& t) {
    double escalated_at = unix_microseconds();
    const Outcome o =
        attach_probes(t.info, t.rule, t.maps, t.attached_at, false, t.attachment, escalated_at);
    if (o == Outcome::kLoading) return;
    const std::string reason = std::move(*t.escalating);
    t.escalating.reset();
    if (o != Outcome::kAttached) {
        attaches_.forget(pid);
        spdlog::warn("escalating pid {} ({}): its allocator probes could not be attached{}", pid,
                     t.info.comm, o == Outcome::kFailed ? " (the log says why)" : "");
        return;
    }
    mark_escalated(pid, t, escalated_at, reason);
}

void Tracker::release(pid_t pid, std::string_view reason) {
    auto it = tracked_.find(pid);
    if (it != tracked_.end() && it->second.escalating) {
        attaches_.forget(pid);
        it->second.escalating.reset();
        spdlog::info("released pid {} ({}) of rule '{}' before its probes were attached: {}", pid,
                     it->second.info.comm, it->second.rule.name, reason);
        return;
    }
    if (it == tracked_.end() || it->second.state != TrackingState::kEscalated) return;
    Tracked& t = it->second;
    attacher_.unwatch(static_cast<uint32_t>(pid));
    // Its uprobes go in the background (a kernel grace period each); recording has stopped.
    reaper_.dispose(std::move(t.attachment), pid);
    attacher_.purge_probes({static_cast<uint32_t>(pid)});
    spdlog::info(
        "released pid {} ({}) of rule '{}' after {:.0f}s escalated: {}; back to the "
        "watch tier",
        pid, t.info.comm, t.rule.name, unix_seconds() - t.escalated_at, reason);
    t.state = TrackingState::kWatch;
    t.escalated_at = 0;
}

size_t Tracker::escalated() const {
    return static_cast<size_t>(std::count_if(tracked_.begin(), tracked_.end(), [](const auto& t) {
        return t.second.state == TrackingState::kEscalated || t.second.escalating;
    }));
}

std::map<pid_t, double> Tracker::escalations_pending() const {
    std::map<pid_t, double> out;
    for (const auto& [pid, t] : tracked_)
        if (t.escalating) out[pid] = t.escalating_since;
    return out;
}

Tracker::ProbeOperations Tracker::probe_operations() {
    constexpr auto kStuck = std::chrono::seconds(10);  // as the header and the metric say
    ProbeOperations ops;
    const auto a = attaches_.stats();
    ops.attaches_in_flight = a.in_flight;
    ops.attaches_stuck = a.stuck;
    ops.detaches_queued = reaper_.queued();
    const auto busy = reaper_.busy_for();
    ops.detaches_stuck = busy >= kStuck ? 1 : 0;
    if (!ops.detaches_stuck) detach_stuck_logged_ = false;  // logged once per stall
    if (ops.detaches_stuck && !detach_stuck_logged_) {
        detach_stuck_logged_ = true;
        spdlog::warn(
            "detaching probes has waited {:.0f} s in the kernel, which takes the memory map lock "
            "of every process that maps the probed file, and one of them holds its own up; {} "
            "detaches wait (counted in leakwatch_probe_operations_stuck{{operation=\"detach\"}}"
            "; logged once per stall)",
            std::chrono::duration<double>(busy).count(), ops.detaches_queued);
    }
    return ops;
}

void Tracker::add_frame_pointer_code(pid_t pid, const std::vector<MapEntry>& maps,
                                     const std::string& exe, Recording& recording) {
    const std::vector<MapEntry> code = code_mappings(maps, exe);
    // Files whose tables were not read with a probe plan (the watch tier has none) are read on
    // the loader now, waited for a bounded time: those still loading are walked by rules.
    bool missing = false;
    {
        std::lock_guard lock(frame_pointer_files_->mu);
        for (const MapEntry& m : code)
            missing |= frame_pointer_files_->files.peek(code_key(m)) == nullptr;
    }
    if (missing) {
        const std::string key = "frame-pointer:" + std::to_string(pid);
        if (auto wait = symbolizer_.wait_for(key)) {
            auto load = [proc = proc_, pid, code, max_bytes = symbolizer_.max_file_bytes(),
                         fp = frame_pointer_files_, gate = symbolizer_.proc_gate()] {
                read_frame_pointer_files(proc, pid, code, max_bytes, gate, *fp);
            };
            symbolizer_.loader().run(key, std::move(load), *wait);
        }
    }
    size_t used = 0;
    std::lock_guard lock(frame_pointer_files_->mu);
    for (const MapEntry& mapping : code) {
        const MapEntry* m = &mapping;
        const FramePointerFile* file = frame_pointer_files_->files.get(code_key(mapping));
        if (file == nullptr) continue;
        const auto& use = file->use;
        if (!file->readable || !use.walkable(LW_MAX_RANGES / 2) ||
            used + 1 + use.without.size() > LW_MAX_RANGES)
            continue;
        const uint64_t base = file->vaddr, len = m->end - m->start;
        for (const auto& [lo, hi] : use.without) {
            if (hi <= base || (lo >= base && lo - base >= len)) continue;  // not in this mapping
            recording.rules_code.emplace_back(m->start + (lo > base ? lo - base : 0),
                                              m->start + std::min(hi - base, len));
            used++;
        }
        recording.frame_pointer_code.emplace_back(m->start, m->end);
        used++;
    }
}

namespace {

// Whether a rule might match a process of which only the pid and comm are known (it is gone):
// its pid and comm criteria do not rule it out. Its other criteria cannot be tried.
bool might_match(const std::vector<WatchRule>& rules, pid_t pid, const char* comm) {
    return std::any_of(rules.begin(), rules.end(), [&](const WatchRule& r) {
        return (!r.match.pid || *r.match.pid == pid) && (!r.match.comm || *r.match.comm == comm);
    });
}

}  // namespace

// Counted at once: every caller knows the process is gone (or exiting), and the kernel sends
// no exit event for a process that was never watched, so waiting for one counted them only at
// the next scan, tens of seconds later.
void Tracker::miss(Missed why, pid_t pid, uint64_t start_time) {
    if (auto it = missed_.find(pid); it != missed_.end()) {
        // The same process when the start times agree, or when this event found it gone
        // already (0). One counted as gone before it was read (0) cannot be read later: a
        // process read now is another one.
        const uint64_t known = it->second.start_time;
        if (start_time == 0 || known == start_time) return;
    }
    missed_[pid] = {start_time, Clock::now()};
    (why == Missed::kDropped ? attaches_dropped_ : execs_unread_)++;
}

void Tracker::miss_if_gone(pid_t pid, uint64_t start_time) {
    if (!proc_.start_time(pid)) miss(Missed::kDropped, pid, start_time);
}

void Tracker::consider(pid_t pid, Seen seen, const char* comm) {
    if (pid == self_ || tracked_.count(pid)) return;
    const bool fresh_exec = seen == Seen::kExec;
    awaiting_cmdline_.erase(pid);
    // Without its command line: it is read only when a rule needs it, and on the loader.
    auto info = proc_.process(pid, false);
    if (!info) {
        if (comm && might_match(rules_, pid, comm)) miss(Missed::kUnread, pid, 0);
        return;
    }
    if (auto f = failed_.find(pid); f != failed_.end()) {
        if (f->second == info->start_time && !fresh_exec) return;
        failed_.erase(f);
    }
    if (needs_cmdline(rules_, *info)) {
        // Any process can hold the read of its command line up (tracker/cmdline_reads.h):
        // one not read yet is matched at a later pass, never guessed.
        auto read = cmdlines_.read(pid, info->start_time);
        switch (read.state) {
            case CmdlineReads::State::kRead:
                info->argv = std::move(read.argv);
                break;
            case CmdlineReads::State::kPending:
                awaiting_cmdline_[pid] = {seen, Clock::now() + kLoadingRetryEvery};
                return;
            case CmdlineReads::State::kSlow:
                // Refused (counted, logged once): not matched until it execs.
                cmdlines_.forget(pid);
                failed_[pid] = info->start_time;
                return;
            case CmdlineReads::State::kGone:
                miss_if_gone(pid, info->start_time);
                return;
        }
    }
    const WatchRule* rule = matching_rule(rules_, *info);
    if (!rule) {
        // Exited already (a zombie: no exe, no maps), before the rules could be tried.
        if (comm && info->exe.empty() && might_match(rules_, pid, comm))
            miss(Missed::kUnread, pid, info->start_time);
        return;
    }
    // A forked child has its parent's image: when its allocator is not mapped, it has exec'd
    // already (its exec event follows and tries again) or its parent could not be watched
    // either (logged when the parent was seen). Logged for every fork, an exec storm filled the
    // log with thousands of these a minute.
    switch (try_attach(*info, *rule, seen == Seen::kScan)) {
        case Outcome::kAttached:
            break;
        case Outcome::kLoading:
            pending_[pid] = Pending{*info, *rule, 1, Clock::now() + kLoadingRetryEvery};
            break;
        case Outcome::kSlow: {
            Pending p{*info, *rule, 1, Clock::now()};
            if (retry_slow(pid, p)) pending_[pid] = std::move(p);
            break;
        }
        case Outcome::kNotYet:
            if (fresh_exec) {
                pending_[pid] = Pending{*info, *rule, 1, Clock::now() + kRetryEvery};
                break;
            }
            [[fallthrough]];
        case Outcome::kFailed:
            give_up(pid, info->start_time);
            miss_if_gone(pid, info->start_time);
            break;
    }
}

void Tracker::give_up(pid_t pid, uint64_t start_time) {
    failed_[pid] = start_time;
    attaches_.forget(pid);  // one still under way: its probes go when it ends
    // Its maps are not read again until it execs: what was read of them goes.
    symbolizer_.process_maps().forget(pid);
}

bool Tracker::retry_slow(pid_t pid, Pending& p) {
    const auto& info = p.info;
    if (!proc_.start_time(pid)) {
        plans_.erase(pid);
        symbolizer_.process_maps().forget(pid);
        miss(Missed::kDropped, pid, info.start_time);
        return false;
    }
    // The file's name, for the two log lines only, from the maps read last (never read
    // here: the main loop's). Without them, it is the maps whose read is slow.
    auto maps = symbolizer_.process_maps().last(pid);
    auto slow_file = [&] {
        if (maps) {
            if (auto m = find_allocator_mapping(*maps, p.rule.allocator, info.exe)) return m->path;
            return std::string("the allocator's file");
        }
        return "/proc/" + std::to_string(pid) + "/maps";
    };
    const char* what = maps ? "the allocator's file" : "its maps";
    if (p.slow_retries >= kSlowRetries) {
        // A file that never answers (FUSE, a hung NFS server) stays refused.
        plans_.erase(pid);
        give_up(pid, info.start_time);
        refuse_file(Refusal::kSlow, slow_file() + " (pid " + std::to_string(pid) + ")",
                    fmt::format("reading {} took too long {} times over {} s; the process "
                                "is not watched",
                                what, kSlowRetries + 1, slow_retry_total().count()));
        return false;
    }
    if (p.slow_retries == 0) {
        attaches_retried_++;
        spdlog::warn(
            "pid {} ({}): reading {}, {}, takes too long (a busy machine, a slow file system, "
            "or a process holding its memory map's lock); tried again in {} s, then at doubling "
            "intervals up to {} s, {} times at most (logged once per process; counted in "
            "leakwatch_attach_retries_total)",
            pid, info.comm, slow_file(), maps ? "its allocator's file" : "its maps",
            kSlowRetryFirst.count(), kSlowRetryMax.count(), kSlowRetries);
    }
    p.next = Clock::now() + slow_retry_delay(p.slow_retries);
    p.slow_retries++;
    return true;
}

void Tracker::detach(pid_t pid, const char* why) {
    plans_.erase(pid);
    attaches_.forget(pid);
    // Also when it was not watched (an attach that failed after its runtime was found): the
    // process at this pid after an exec or a reuse is another one.
    python_.forget(pid);
    symbolizer_.process_maps().forget(pid);
    auto it = tracked_.find(pid);
    if (it == tracked_.end()) return;
    attacher_.unwatch(static_cast<uint32_t>(pid));
    attacher_.unwatch_memory(static_cast<uint32_t>(pid));
    spdlog::info("stopped watching pid {} ({}): {}", pid, it->second.info.comm, why);
    reaper_.dispose(std::move(it->second.attachment), pid);
    tracked_.erase(it);
    symbolizer_.forget_process(pid);
    purge_.insert(static_cast<uint32_t>(pid));
}

void Tracker::flush_purges() {
    if (purge_.empty()) return;
    attacher_.purge(purge_);
    purge_.clear();
}

void Tracker::on_event(const lw_event& e) {
    const auto pid = static_cast<pid_t>(e.pid);
    switch (e.type) {
        case LW_EVENT_EXEC: {
            detach(pid, "exec");
            pending_.erase(pid);  // its attach, if one was under way, was forgotten
            char comm[LW_COMM_LEN + 1] = {};
            std::memcpy(comm, e.comm, LW_COMM_LEN);
            consider(pid, Seen::kExec, comm);
            break;
        }
        case LW_EVENT_FORK:
            consider(pid, Seen::kFork);
            break;
        case LW_EVENT_EXIT:
            detach(pid, "exit");
            // Matched, waiting for its allocator to be mapped, and gone: dropped.
            if (auto p = pending_.find(pid); p != pending_.end()) {
                miss(Missed::kDropped, pid, p->second.info.start_time);
                pending_.erase(p);
                attaches_.forget(pid);
            }
            failed_.erase(pid);
            awaiting_cmdline_.erase(pid);
            cmdlines_.forget(pid);
            // Its last event: the pid's next process is another one.
            missed_.erase(pid);
            break;
        default:
            break;
    }
}

int Tracker::tick() {
    flush_purges();
    auto now = Clock::now();
    // The events of a process are read within moments of each other; the pid's next process,
    // gone before it was read too, must count again.
    if (!missed_.empty() && now - missed_expired_ >= std::chrono::seconds(1)) {
        std::erase_if(missed_,
                      [&](const auto& m) { return now - m.second.at > kMissedRemembered; });
        missed_expired_ = now;
    }
    auto next = now + std::chrono::milliseconds(100);
    for (; !recheck_.empty() && recheck_.front().second <= now; recheck_.pop_front()) {
        const pid_t pid = recheck_.front().first;
        if (tracked_.count(pid) && !proc_.has_memory(pid)) detach(pid, "exit");
    }
    for (auto& [pid, t] : tracked_)
        if (t.escalating) {
            finish_escalation(pid, t);
            if (t.escalating) next = std::min(next, now + kLoadingRetryEvery);
        }
    std::vector<std::pair<pid_t, Seen>> due;
    for (const auto& [pid, a] : awaiting_cmdline_)
        if (a.second <= now) due.emplace_back(pid, a.first);
    for (const auto& [pid, seen] : due) consider(pid, seen);
    for (const auto& [pid, a] : awaiting_cmdline_) next = std::min(next, a.second);
    for (auto it = pending_.begin(); it != pending_.end();) {
        Pending& p = it->second;
        if (p.next > now) {
            next = std::min(next, p.next);
            ++it;
            continue;
        }
        bool last = ++p.attempts >= kMaxAttempts;
        Outcome o = try_attach(p.info, p.rule, last);
        if (o == Outcome::kSlow) {
            if (retry_slow(it->first, p)) {
                next = std::min(next, p.next);
                ++it;
            } else {
                attaches_.forget(it->first);
                it = pending_.erase(it);
            }
            continue;
        }
        if ((o == Outcome::kNotYet && !last) || o == Outcome::kLoading) {
            // Loading ends by itself: a file too slow to read fails the attach.
            p.next = now + (o == Outcome::kLoading ? kLoadingRetryEvery : kRetryEvery);
            next = std::min(next, p.next);
            ++it;
            continue;
        }
        if (o != Outcome::kAttached) {
            give_up(it->first, p.info.start_time);
            miss_if_gone(it->first, p.info.start_time);
        }
        it = pending_.erase(it);
    }
    flush_purges();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
    return static_cast<int>(std::max<int64_t>(ms, 1));
}

void Tracker::scan() {
    const auto began = Clock::now();
    auto pids = proc_.pids();
    std::set<pid_t> alive(pids.begin(), pids.end());
    for (auto it = tracked_.begin(); it != tracked_.end();) {
        pid_t pid = it->first;
        ++it;
        auto start = proc_.start_time(pid);
        if (!alive.count(pid) || !start)
            detach(pid, "gone");
        else if (*start != tracked_[pid].info.start_time)
            detach(pid, "pid reused");
        else
            rematch(pid);
    }
    for (auto it = failed_.begin(); it != failed_.end();)
        it = alive.count(it->first) ? std::next(it) : failed_.erase(it);
    // The maps read of processes neither watched nor waited for: those that exited unwatched
    // (no exit event comes for them) and those whose read ended after they were let go.
    symbolizer_.process_maps().forget_unless(
        [&](pid_t pid) { return tracked_.count(pid) || pending_.count(pid); });
    std::erase_if(awaiting_cmdline_, [&](const auto& a) { return !alive.count(a.first); });
    cmdlines_.forget_unless([&](pid_t pid) { return awaiting_cmdline_.count(pid) > 0; });

    flush_purges();
    for (pid_t pid : pids)
        if (!pending_.count(pid)) consider(pid, Seen::kScan);
    spdlog::debug(
        "rescan: {} processes in {} ms", pids.size(),
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - began).count());
}

void Tracker::rematch(pid_t pid) {
    Tracked& t = tracked_.at(pid);
    ProcessInfo fresh = t.info;
    if (!proc_.reread_uid_and_cgroup(fresh)) return;  // gone: the exit event or a scan sees it
    if (fresh.cgroup == t.info.cgroup && fresh.uid == t.info.uid && fresh.euid == t.info.euid)
        return;
    // What it was attached for (comm, exe, command line at exec), where and as whom it runs now.
    const WatchRule* now = matching_rule(rules_, fresh);
    if (now && same_rule(*now, t.rule)) {
        t.info = std::move(fresh);  // still its rule: probes and data stay, the labels follow
        return;
    }
    std::string why =
        fresh.cgroup != t.info.cgroup ? "moved to cgroup " + fresh.cgroup : "its uid changed";
    why += now ? "; rule '" + now->name + "' matches it now" : "; no rule matches it now";
    detach(pid, why.c_str());
    consider(pid, Seen::kScan);
}

void Tracker::set_rules(std::vector<WatchRule> rules) {
    rules_ = std::move(rules);
    std::vector<pid_t> stale;
    for (const auto& [pid, t] : tracked_) {
        const WatchRule* now = matching_rule(rules_, t.info);
        if (!now || !same_rule(*now, t.rule)) stale.push_back(pid);
    }
    for (pid_t pid : stale) detach(pid, "rules changed");
    for (const auto& [pid, p] : pending_) attaches_.forget(pid);
    pending_.clear();
    failed_.clear();
    awaiting_cmdline_.clear();
    flush_purges();
    scan();
}

bool Tracker::detach_all(std::chrono::seconds stuck) {
    attaches_.forget_all();
    pending_.clear();
    std::vector<std::unique_ptr<Attachment>> attachments;
    for (auto& [pid, t] : tracked_) {
        attacher_.unwatch(static_cast<uint32_t>(pid));
        attacher_.unwatch_memory(static_cast<uint32_t>(pid));
        if (t.attachment) attachments.push_back(std::move(t.attachment));
    }
    tracked_.clear();
    python_.clear();
    // Each uprobe link waits for a grace period on release; releasing them from several
    // threads lets those waits overlap. Each waits for memory map locks too (reaper.h): the
    // threads are not joined, only waited for while they make progress.
    struct Left {
        std::mutex mu;
        std::condition_variable cv;
        size_t left = 0;
    };
    auto left = std::make_shared<Left>();
    left->left = attachments.size();
    for (auto& a : attachments)
        std::thread([a = std::move(a), left]() mutable {
            a.reset();
            std::lock_guard lock(left->mu);
            left->left--;
            left->cv.notify_all();
        }).detach();
    {
        std::unique_lock lock(left->mu);
        size_t seen = left->left;
        while (left->left > 0) {
            if (!left->cv.wait_for(lock, stuck, [&] { return left->left < seen; })) break;
            seen = left->left;
        }
        if (left->left > 0) {
            spdlog::error(
                "stopping: {} of {} processes' probes still wait to be detached after {} s in "
                "the kernel, which takes the memory map lock of every process that maps the "
                "probed file, and one of them holds its own up; not waiting for them",
                left->left, attachments.size(), stuck.count());
            return false;
        }
    }
    return drain_probe_operations(stuck);
}

bool Tracker::drain_probe_operations(std::chrono::seconds stuck) {
    if (attaches_.drain(stuck) && reaper_.drain(stuck)) return true;
    spdlog::error(
        "stopping: an attach or a detach has waited {} s in the kernel; not waiting for it",
        stuck.count());
    return false;
}

bool Tracker::release_all(std::chrono::seconds stuck) {
    // Attaches under way were never handed over: their probes go when they end.
    attaches_.forget_all();
    pending_.clear();
    tracked_.clear();
    python_.clear();
    return drain_probe_operations(stuck);
}

std::string Tracker::kept_tag(pid_t pid, uint64_t start_time, double attached_at,
                              const WatchRule& rule, double escalated_at) {
    std::string tag =
        fmt::format("p_{}_{}_{}_{:016x}", pid, start_time,
                    static_cast<uint64_t>(std::llround(attached_at * 1e6)), rule_digest(rule));
    if (escalated_at > 0)
        tag += fmt::format("_e{}", static_cast<uint64_t>(std::llround(escalated_at * 1e6)));
    return tag;
}

std::set<uint32_t> Tracker::adopt(
    std::vector<std::pair<std::string, std::unique_ptr<Attachment>>> kept) {
    std::set<uint32_t> adopted;
    for (auto& [tag, attachment] : kept) {
        unsigned long long pid = 0, start = 0, attached_us = 0, digest = 0, escalated_us = 0;
        const int fields = std::sscanf(tag.c_str(), "p_%llu_%llu_%llu_%llx_e%llu", &pid, &start,
                                       &attached_us, &digest, &escalated_us);
        const bool escalated = fields == 5;
        const int n = std::min(fields, 4);
        std::optional<ProcessInfo> info;
        bool cmdline_unread = false;
        if (n == 4)
            if (auto found = proc_.process(static_cast<pid_t>(pid), false)) {
                info = std::move(*found);
                // Its command line on the loader (tracker/cmdline_reads.h), and only when a
                // rule needs it. Not read within the wait: not adopted (its probes go), it is
                // matched anew once its command line is read.
                if (needs_cmdline(rules_, *info)) {
                    auto read = cmdlines_.read(info->pid, info->start_time);
                    if (read.state == CmdlineReads::State::kRead)
                        info->argv = std::move(read.argv);
                    else
                        cmdline_unread = true;
                }
            }
        const WatchRule* rule = info && !cmdline_unread ? matching_rule(rules_, *info) : nullptr;
        const char* why = n != 4                               ? "unreadable tag"
                          : !info                              ? "gone"
                          : info->start_time != start          ? "pid reused"
                          : cmdline_unread                     ? "its command line is slow to read"
                          : !attacher_.watching(uint32_t(pid)) ? "exec'ed"
                          : !rule || rule_digest(*rule) != digest   ? "rules changed"
                          : tracked_.count(static_cast<pid_t>(pid)) ? "adopted twice"
                          : (rule->tracking == WatchRule::Tracking::kEscalate) != escalated
                              ? "kept for another tracking"
                              : nullptr;
        // Read on the loader (symbols/process_maps.h). A process whose maps do not read
        // within the wait is adopted without them (its probes kept counting meanwhile): they
        // are read again when its stacks are named.
        ProcessMaps::Read maps;
        if (!why) maps = symbolizer_.process_maps().read(info->pid);
        if (!why && maps.fresh && !maps.maps) why = "gone";
        if (why) {
            spdlog::info("not adopting the probes kept for pid {}: {}", pid, why);
            reaper_.dispose(std::move(attachment), static_cast<pid_t>(pid));
            continue;
        }
        const double attached_at = double(attached_us) / 1e6;
        // Its BPF side reads Python frames already: they are named as before; a JVM's frames
        // are named from its own structures again (and its perf map asked for, once more).
        std::vector<MapEntry> read_maps = maps.maps ? *maps.maps : std::vector<MapEntry>{};
        if (!maps.maps)
            spdlog::warn("pid {} ({}): its maps are slow to read; adopted without them", pid,
                         info->comm);
        else
            python_runtime(*info, read_maps);
        Tracked t{*info,
                  *rule,
                  std::move(attachment),
                  std::move(read_maps),
                  maps.maps ? Clock::now() : Clock::time_point{},
                  attached_at};
        t.state = rule->tracking == WatchRule::Tracking::kSampled ? TrackingState::kSampled
                                                                  : TrackingState::kFull;
        if (escalated) {
            // Back in the watch tier too (its sampled pages start anew), escalated as before.
            Recording stacks = stack_recording(*info, *rule, t.maps);
            if (auto ok = attacher_.watch_memory(static_cast<uint32_t>(pid), stacks,
                                                 escalation_.watch_sample_bytes);
                !ok) {
                spdlog::info("not adopting the probes kept for pid {}: {}", pid,
                             ok.error().message);
                reaper_.dispose(std::move(t.attachment), static_cast<pid_t>(pid));
                python_.forget(info->pid);
                continue;
            }
            t.state = TrackingState::kEscalated;
            t.escalated_at = double(escalated_us) / 1e6;
            t.fault_sample_bytes = escalation_.watch_sample_bytes;
        }
        watch_jvm(info->pid, *rule, t.maps);
        spdlog::info(
            "adopted pid {} ({}) for rule '{}'{}: its probes counted while no leakwatchd ran", pid,
            info->comm, rule->name,
            escalated ? fmt::format(", escalated {:.0f}s ago", unix_seconds() - t.escalated_at)
                      : std::string());
        tracked_[info->pid] = std::move(t);
        adopted.insert(static_cast<uint32_t>(pid));
    }
    return adopted;
}

std::vector<ProcessMeta> Tracker::processes() const {
    std::vector<ProcessMeta> out;
    out.reserve(tracked_.size());
    for (const auto& [pid, t] : tracked_)
        out.push_back({static_cast<uint32_t>(pid), t.rule.name, t.info.comm, t.rule.min_age,
                       t.rule.allocator.symbol_prefix, t.attached_at, unit_label(t.info.cgroup),
                       t.state, t.escalated_at, t.fault_sample_bytes});
    return out;
}

Frame Tracker::resolve(uint32_t pid, uint64_t address) {
    auto it = tracked_.find(static_cast<pid_t>(pid));
    if (it == tracked_.end()) {
        Frame f;
        f.address = address;
        f.module = "[unknown]";
        return f;
    }
    Tracked& t = it->second;
    // A library loaded after attach (dlopen) is not in the maps read then: reread them,
    // at most once a second per process.
    // Read on the loader (symbols/process_maps.h): a read still under way is picked up by a
    // later pass, the maps read before serve meanwhile.
    if (!find_mapping(t.maps, address) && Clock::now() - t.maps_read > std::chrono::seconds(1)) {
        auto maps = symbolizer_.process_maps().read(static_cast<pid_t>(pid));
        if (maps.maps) t.maps = *maps.maps;
        t.maps_read = Clock::now();
    }
    return symbolizer_.symbolize(static_cast<int>(pid), t.maps, address);
}

uint64_t Tracker::jit_generation(uint32_t pid) {
    return symbolizer_.perf_map_generation(static_cast<int>(pid));
}

}  // namespace leakwatch
