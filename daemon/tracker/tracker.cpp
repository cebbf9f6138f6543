#include "tracker/tracker.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
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

}  // namespace

Tracker::Tracker(Attacher& attacher, const ProcReader& proc, Symbolizer& symbolizer,
                 std::vector<WatchRule> rules, Escalation escalation)
    : attacher_(attacher),
      proc_(proc),
      symbolizer_(symbolizer),
      rules_(std::move(rules)),
      escalation_(escalation),
      self_(getpid()) {}

Recording Tracker::stack_recording(pid_t pid, const WatchRule& rule,
                                   const std::vector<MapEntry>& maps, const std::string& exe) {
    Recording recording;
#if defined(__x86_64__)
    recording.dwarf_unwind = rule.unwind != WatchRule::Unwind::kFramePointer;
    if (rule.unwind == WatchRule::Unwind::kAuto)
        add_frame_pointer_code(pid, maps, exe, recording);
#else
    (void)pid, (void)rule, (void)maps, (void)exe;
#endif
    return recording;
}

Tracker::Outcome Tracker::try_attach(const ProcessInfo& info, const WatchRule& rule,
                                     bool log_not_yet) {
    const pid_t pid = info.pid;
    auto maps = proc_.maps(pid);
    if (!maps) {
        spdlog::debug("pid {}: {}", pid, maps.error().message);
        return Outcome::kFailed;  // gone
    }
    if (purge_.count(static_cast<uint32_t>(pid))) flush_purges();
    Tracked t{info, rule, nullptr, std::move(*maps), Clock::now(), unix_seconds()};
    if (rule.tracking == WatchRule::Tracking::kEscalate) {
        // The watch tier: no uprobe, nothing to wait for.
        Recording stacks = stack_recording(pid, rule, t.maps, info.exe);
        if (auto ok = attacher_.watch_memory(static_cast<uint32_t>(pid), stacks,
                                             escalation_.watch_sample_bytes);
            !ok) {
            spdlog::warn("pid {} ({}): {}", pid, info.comm, ok.error().message);
            return Outcome::kFailed;
        }
        t.state = TrackingState::kWatch;
        t.fault_sample_bytes = escalation_.watch_sample_bytes;
        spdlog::info("watching pid {} ({}) for rule '{}': its memory, and a page fault in {} "
                     "bytes it touches first (no uprobes until it is suspected of leaking)",
                     pid, info.comm, rule.name, escalation_.watch_sample_bytes);
        tracked_[pid] = std::move(t);
        return Outcome::kAttached;
    }
    Outcome o = attach_probes(info, rule, t.maps, log_not_yet, t.attachment);
    if (o != Outcome::kAttached) return o;
    t.state = rule.tracking == WatchRule::Tracking::kSampled ? TrackingState::kSampled
                                                             : TrackingState::kFull;
    tracked_[pid] = std::move(t);
    return Outcome::kAttached;
}

Tracker::Outcome Tracker::attach_probes(const ProcessInfo& info, const WatchRule& rule,
                                        const std::vector<MapEntry>& maps, bool log_not_yet,
                                        std::unique_ptr<Attachment>& out) {
    const pid_t pid = info.pid;
    auto mapping = find_allocator_mapping(maps, rule.allocator, info.exe);
    if (!mapping) {
        if (log_not_yet)
            spdlog::warn("pid {} ({}) matches rule '{}' but cannot be watched: {}", pid, info.comm,
                         rule.name, mapping.error().message);
        return Outcome::kNotYet;
    }
    auto elf = symbolizer_.file_for(pid, *mapping);
    if (!elf) {
        spdlog::warn("pid {} ({}): {}", pid, info.comm, elf.error().message);
        return Outcome::kFailed;
    }

    ProbeTarget target;

    auto reachable = proc_.mapped_file(pid, *mapping);
    if (!reachable) {
        spdlog::warn("pid {} ({}): {}", pid, info.comm, reachable.error().message);
        return Outcome::kFailed;
    }
    target.path = *reachable;
    // The probes are in the library's executable segment: its mapping gives their addresses.
    // One pass over the mappings of the allocator's file: its executable segment (where the
    // probes are: their addresses are load_bias + file offset) and its whole range.
    target.load_bias = mapping->start - mapping->offset;
    uint64_t lib_lo = UINT64_MAX, lib_hi = 0;
    bool found_text = false;
    for (const auto& m : maps) {
        if (m.inode != mapping->inode || m.dev_major != mapping->dev_major ||
            m.dev_minor != mapping->dev_minor)
            continue;
        if (m.executable() && !found_text) {
            target.load_bias = m.start - m.offset;
            found_text = true;
        }
        lib_lo = std::min(lib_lo, m.start);
        lib_hi = std::max(lib_hi, m.end);
    }
    std::set<uint64_t> seen;  // aliases (mmap/mmap64) share an address: probe it once
    for (const auto& fn : allocator_functions()) {
        auto vaddr = (*elf)->function_address(rule.allocator.symbol_prefix + fn.name);
        if (!vaddr) continue;
        auto off = (*elf)->file_offset_of_vaddr(*vaddr);
        if (!off || !seen.insert(*off).second) continue;
        Placement where = place_probe_in_file(target.path, *off, fn.arguments, fn.kind == LW_FREE);
        const uint64_t at = *off + where.skip;
        if (where.emulated) {
            spdlog::debug("pid {}: {} probed {} bytes in ({})", pid, fn.name, where.skip,
                          where.how);
        } else if (single_stepped_.insert(mapping->path + ":" + fn.name).second) {
            spdlog::info(
                "{} in {} is probed at its entry, which the kernel single-steps ({}); "
                "each call costs several microseconds more",
                fn.name, mapping->path, where.how);
        }
        target.offsets.emplace_back(fn.name, at);
    }
    auto has = [&](const char* name) {
        return std::any_of(target.offsets.begin(), target.offsets.end(),
                           [&](const auto& o) { return o.first == name; });
    };
    if (!has("malloc") || !has("free")) {
        spdlog::warn("pid {} ({}): {} has no {}malloc/{}free symbols; not watched", pid, info.comm,
                     mapping->path, rule.allocator.symbol_prefix, rule.allocator.symbol_prefix);
        return Outcome::kFailed;
    }

    if (purge_.count(static_cast<uint32_t>(pid))) flush_purges();
    auto attachment = attacher_.attach(pid, target);
    if (!attachment) {
        spdlog::warn("pid {} ({}): {}", pid, info.comm, attachment.error().message);
        return Outcome::kFailed;
    }
    Recording recording = stack_recording(pid, rule, maps, info.exe);
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
        spdlog::warn("pid {} ({}): {}", pid, info.comm, ok.error().message);
        return Outcome::kFailed;
    }
    spdlog::info("probing pid {} ({}) for rule '{}': {} functions probed in {} ({} links)", pid,
                 info.comm, rule.name, target.offsets.size(), mapping->path,
                 (*attachment)->links());
    out = std::move(*attachment);
    return Outcome::kAttached;
}

Result<void> Tracker::escalate(pid_t pid, std::string_view reason) {
    auto it = tracked_.find(pid);
    if (it == tracked_.end()) return fail("pid " + std::to_string(pid) + " is not watched");
    Tracked& t = it->second;
    if (t.state != TrackingState::kWatch)
        return fail("pid " + std::to_string(pid) + " is not in the watch tier (tracking: " +
                    tracking_name(t.state) + ")");
    auto maps = proc_.maps(pid);
    if (!maps) return std::unexpected(maps.error());
    t.maps = std::move(*maps);
    t.maps_read = Clock::now();
    if (attach_probes(t.info, t.rule, t.maps, true, t.attachment) != Outcome::kAttached)
        return fail("pid " + std::to_string(pid) + ": its allocator probes could not be "
                    "attached (the log says why)");
    t.state = TrackingState::kEscalated;
    t.escalated_at = unix_seconds();
    spdlog::info("escalated pid {} ({}) of rule '{}': {}; allocator probes, {}", pid, t.info.comm,
                 t.rule.name, reason,
                 t.rule.sample_bytes ? "sampled every " + std::to_string(t.rule.sample_bytes) +
                                           " bytes"
                                     : std::string("every allocation"));
    return {};
}

void Tracker::release(pid_t pid, std::string_view reason) {
    auto it = tracked_.find(pid);
    if (it == tracked_.end() || it->second.state != TrackingState::kEscalated) return;
    Tracked& t = it->second;
    attacher_.unwatch(static_cast<uint32_t>(pid));
    // Its uprobes go in the background (a kernel grace period each); recording has stopped.
    reaper_.dispose(std::move(t.attachment));
    attacher_.purge_probes({static_cast<uint32_t>(pid)});
    spdlog::info("released pid {} ({}) of rule '{}' after {:.0f}s escalated: {}; back to the "
                 "watch tier",
                 pid, t.info.comm, t.rule.name, unix_seconds() - t.escalated_at, reason);
    t.state = TrackingState::kWatch;
    t.escalated_at = 0;
}

size_t Tracker::escalated() const {
    return static_cast<size_t>(std::count_if(tracked_.begin(), tracked_.end(), [](const auto& t) {
        return t.second.state == TrackingState::kEscalated;
    }));
}

void Tracker::add_frame_pointer_code(pid_t pid, const std::vector<MapEntry>& maps,
                                     const std::string& exe, Recording& recording) {
    // The program first: its own code is where the callers that name a leak are.
    std::vector<const MapEntry*> code;
    for (const auto& m : maps)
        if (m.executable() && !m.path.empty() && m.path.front() == '/')
            code.insert(m.path == exe ? code.begin() : code.end(), &m);
    size_t used = 0;
    for (const MapEntry* m : code) {
        std::string key = m->path + '|' + std::to_string(m->dev_major) + ':' +
                          std::to_string(m->dev_minor) + ':' + std::to_string(m->inode) + '@' +
                          std::to_string(m->offset);
        FramePointerFile* file = frame_pointer_files_.get(key);
        if (file == nullptr) {
            FramePointerFile fresh;
            auto path = proc_.mapped_file(pid, *m);
            auto cfi = path ? CfiFile::open(*path)
                            : Result<std::unique_ptr<CfiFile>>(std::unexpected(path.error()));
            if (cfi) {
                if (auto vaddr = (*cfi)->vaddr_of_file_offset(m->offset)) {
                    fresh.use = (*cfi)->frame_pointer_use();
                    fresh.vaddr = *vaddr;
                    fresh.readable = true;
                    spdlog::debug(
                        "{}: {} of {} functions keep a frame pointer; {} walked by "
                        "the frame pointer",
                        m->path, fresh.use.with_frame_pointer, fresh.use.functions,
                        fresh.use.walkable(LW_MAX_RANGES / 2) ? "frames" : "no frame");
                }
            }
            file = &frame_pointer_files_.put(key, std::move(fresh));
        }
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

void Tracker::consider(pid_t pid, bool fresh_exec) {
    if (pid == self_ || tracked_.count(pid)) return;
    auto info = proc_.process(pid);
    if (!info) return;
    if (auto f = failed_.find(pid); f != failed_.end()) {
        if (f->second == info->start_time && !fresh_exec) return;
        failed_.erase(f);
    }
    const WatchRule* rule = matching_rule(rules_, *info);
    if (!rule) return;
    switch (try_attach(*info, *rule, !fresh_exec)) {
        case Outcome::kAttached:
            break;
        case Outcome::kNotYet:
            if (fresh_exec) {
                pending_[pid] = Pending{*info, *rule, 1, Clock::now() + kRetryEvery};
                break;
            }
            [[fallthrough]];
        case Outcome::kFailed:
            failed_[pid] = info->start_time;
            break;
    }
}

void Tracker::detach(pid_t pid, const char* why, bool in_background) {
    auto it = tracked_.find(pid);
    if (it == tracked_.end()) return;
    attacher_.unwatch(static_cast<uint32_t>(pid));
    attacher_.unwatch_memory(static_cast<uint32_t>(pid));
    spdlog::info("stopped watching pid {} ({}): {}", pid, it->second.info.comm, why);
    if (in_background) reaper_.dispose(std::move(it->second.attachment));
    tracked_.erase(it);  // destroys the attachment (if still here): its uprobes go
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
        case LW_EVENT_EXEC:
            detach(pid, "exec");
            pending_.erase(pid);
            consider(pid, true);
            break;
        case LW_EVENT_FORK:
            consider(pid, false);
            break;
        case LW_EVENT_EXIT:
            detach(pid, "exit", true);
            pending_.erase(pid);
            failed_.erase(pid);
            break;
        default:
            break;
    }
}

int Tracker::tick() {
    flush_purges();
    auto now = Clock::now();
    auto next = now + std::chrono::milliseconds(100);
    for (auto it = pending_.begin(); it != pending_.end();) {
        Pending& p = it->second;
        if (p.next > now) {
            next = std::min(next, p.next);
            ++it;
            continue;
        }
        bool last = ++p.attempts >= kMaxAttempts;
        Outcome o = try_attach(p.info, p.rule, last);
        if (o == Outcome::kNotYet && !last) {
            p.next = now + kRetryEvery;
            next = std::min(next, p.next);
            ++it;
            continue;
        }
        if (o != Outcome::kAttached) failed_[it->first] = p.info.start_time;
        it = pending_.erase(it);
    }
    flush_purges();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
    return static_cast<int>(std::max<int64_t>(ms, 1));
}

void Tracker::scan() {
    auto pids = proc_.pids();
    std::set<pid_t> alive(pids.begin(), pids.end());
    for (auto it = tracked_.begin(); it != tracked_.end();) {
        pid_t pid = it->first;
        ++it;
        auto start = proc_.start_time(pid);
        if (!alive.count(pid) || !start)
            detach(pid, "gone", true);
        else if (*start != tracked_[pid].info.start_time)
            detach(pid, "pid reused");
    }
    for (auto it = failed_.begin(); it != failed_.end();)
        it = alive.count(it->first) ? std::next(it) : failed_.erase(it);
    flush_purges();
    for (pid_t pid : pids)
        if (!pending_.count(pid)) consider(pid, false);
}

void Tracker::set_rules(std::vector<WatchRule> rules) {
    rules_ = std::move(rules);
    std::vector<pid_t> stale;
    for (const auto& [pid, t] : tracked_) {
        const WatchRule* now = matching_rule(rules_, t.info);
        if (!now || !same_rule(*now, t.rule)) stale.push_back(pid);
    }
    for (pid_t pid : stale) detach(pid, "rules changed");
    pending_.clear();
    failed_.clear();
    flush_purges();
    scan();
}

void Tracker::detach_all() {
    std::vector<std::unique_ptr<Attachment>> attachments;
    for (auto& [pid, t] : tracked_) {
        attacher_.unwatch(static_cast<uint32_t>(pid));
        attacher_.unwatch_memory(static_cast<uint32_t>(pid));
        if (t.attachment) attachments.push_back(std::move(t.attachment));
    }
    tracked_.clear();
    // Each uprobe link waits for a grace period on release; releasing them from several
    // threads lets those waits overlap.
    std::vector<std::thread> threads;
    for (auto& a : attachments) threads.emplace_back([a = std::move(a)]() mutable { a.reset(); });
    for (auto& t : threads) t.join();
}

std::vector<ProcessMeta> Tracker::processes() const {
    std::vector<ProcessMeta> out;
    out.reserve(tracked_.size());
    for (const auto& [pid, t] : tracked_)
        out.push_back({static_cast<uint32_t>(pid), t.rule.name, t.info.comm, t.rule.min_age,
                       t.rule.allocator.symbol_prefix, t.attached_at, t.state, t.escalated_at,
                       t.fault_sample_bytes});
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
    if (!find_mapping(t.maps, address) && Clock::now() - t.maps_read > std::chrono::seconds(1)) {
        if (auto maps = proc_.maps(static_cast<pid_t>(pid))) t.maps = std::move(*maps);
        t.maps_read = Clock::now();
    }
    return symbolizer_.symbolize(static_cast<int>(pid), t.maps, address);
}

uint64_t Tracker::jit_generation(uint32_t pid) {
    return symbolizer_.perf_map_generation(static_cast<int>(pid));
}

}  // namespace leakwatch
