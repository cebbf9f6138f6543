#include "aggregate/aggregator.h"

#include <unistd.h>

#include <algorithm>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "aggregate/site.h"
#include "leakwatch.h"

namespace leakwatch {

const char* tracking_name(TrackingState state) {
    switch (state) {
        case TrackingState::kWatch:
            return "watch";
        case TrackingState::kEscalated:
            return "escalated";
        case TrackingState::kSampled:
            return "sampled";
        case TrackingState::kFull:
            return "full";
    }
    return "?";
}

std::vector<uint64_t> frame_addresses(const RawStack& raw) {
    std::vector<uint64_t> out;
    out.reserve(raw.ips.size() + 1);
    if (!raw.ips.empty()) out.push_back(raw.ips[0]);
    if (raw.caller != 0 && (raw.ips.size() < 2 || raw.ips[1] != raw.caller))
        out.push_back(raw.caller);
    for (size_t i = 1; i < raw.ips.size(); i++) out.push_back(raw.ips[i]);
    return out;
}

std::string interleave_python(std::vector<Frame>& frames, std::vector<std::vector<Frame>> groups) {
    std::vector<Frame> out;
    out.reserve(frames.size() + groups.size() * 4);
    std::string interpreter;
    size_t next = 0;
    for (auto& f : frames) {
        if (f.symbol.starts_with("py::")) continue;
        if (next < groups.size() && f.symbol.starts_with("_PyEval_EvalFrameDefault")) {
            if (interpreter.empty()) interpreter = f.module.str();
            for (auto& p : groups[next]) out.push_back(std::move(p));
            next++;
            continue;
        }
        out.push_back(std::move(f));
    }
    for (; next < groups.size(); next++)
        for (auto& p : groups[next]) out.push_back(std::move(p));
    frames = std::move(out);
    return interpreter;
}

const Aggregator::Resolved& Aggregator::resolve_stack(const ProcessMeta& meta, uint64_t id) {
    auto key = std::make_pair(meta.pid, id);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
        if (!it->second.unnamed_jit ||
            resolver_.jit_generation(meta.pid) == it->second.jit_generation)
            return it->second;
        cache_.erase(it);  // the perf map changed: its JIT frames may be named now
    }
    Resolved r;
    r.id = id;
    auto frames = std::make_shared<std::vector<Frame>>();
    auto raw = id ? source_.stack(meta.pid, id) : std::nullopt;
    bool pending = false;  // a file a frame needs is still being read
    if (raw) {
        if (raw->content_id != 0) r.id = raw->content_id;
        r.incomplete = raw->partial || raw->truncated || raw->pending;
        auto addrs = frame_addresses(*raw);
        // Kept for as long as the stack is cached (10,000 stacks of ~9 frames at scale):
        // grown by push_back, each vector would keep up to twice the room it needs.
        frames->reserve(addrs.size());
        for (size_t i = 0; i < addrs.size(); i++) {
            // Frames past the first are return addresses: look up the call instruction
            // before them, so a call that ends a function is not put in the next one.
            uint64_t lookup = i == 0 ? addrs[i] : addrs[i] - 1;
            Frame f = resolver_.resolve(meta.pid, lookup);
            if (lookup != addrs[i]) {
                f.address = addrs[i];
                if (!f.symbol.empty()) f.offset += 1;
                f.module_offset += 1;
            }
            if (f.symbol.empty() && f.module == "[anon]") r.unnamed_jit = true;
            pending |= f.pending;
            frames->push_back(std::move(f));
        }
        std::string interpreter;
        if (!raw->python.empty()) {
            std::vector<std::vector<Frame>> groups(1);
            for (uint64_t v : raw->python) {
                // LW_PY_SHIM: the group before it ends (if it was not ended already)
                if (v == LW_PY_SHIM) {
                    if (!groups.back().empty()) groups.emplace_back();
                    continue;
                }
                groups.back().push_back(resolver_.resolve_python(meta.pid, v & 0xfffffffffff8ull,
                                                                 static_cast<uint32_t>(v >> 48)));
                // its code object still being read (on the loader): named next time
                pending |= groups.back().back().pending;
                if (v & LW_PY_GROUP_END) groups.emplace_back();
            }
            if (groups.back().empty()) groups.pop_back();
            interpreter = interleave_python(*frames, std::move(groups));
        }
        r.site = raw->python.empty() ? site_of(*frames, meta.symbol_prefix)
                                     : python_site_of(*frames, interpreter, meta.symbol_prefix);
        r.allocator_frames = static_cast<uint32_t>(allocator_frames(*frames, meta.symbol_prefix));
        r.touch_site = touch_site_of(*frames, meta.symbol_prefix);
        r.touch_frames = static_cast<uint32_t>(touch_frames(*frames, meta.symbol_prefix));
    } else {
        r.site = "[unknown]";
        r.touch_site = r.site;
    }
    r.frames = std::move(frames);
    // Only processes with unnamed JIT frames have their perf map looked at.
    if (r.unnamed_jit) r.jit_generation = resolver_.jit_generation(meta.pid);
    // A stack the map does not hold (yet: it was full), whose snapshot is still being
    // unwound, or with a frame whose file is still being read, is looked up again next time.
    if (id && (!raw || raw->partial || pending)) {
        unresolved_ = std::move(r);
        return unresolved_;
    }
    return cache_.emplace(key, std::move(r)).first->second;
}

void Aggregator::forget_detached(const std::vector<ProcessMeta>& processes) {
    std::map<uint32_t, double> now;
    for (const auto& m : processes) now.emplace(m.pid, m.attached_at);
    for (auto it = cached_attach_.begin(); it != cached_attach_.end();) {
        auto listed = now.find(it->first);
        if (listed != now.end() && listed->second == it->second) {
            ++it;
            continue;
        }
        cache_.erase(cache_.lower_bound({it->first, 0}), cache_.lower_bound({it->first + 1, 0}));
        it = cached_attach_.erase(it);
    }
    cached_attach_.merge(now);
}

Snapshot Aggregator::sample(const std::vector<ProcessMeta>& processes, uint64_t now_ns) {
    forget_detached(processes);
    Snapshot snap;
    snap.taken = std::chrono::system_clock::now();
    snap.lost = source_.lost();
    snap.usage = source_.usage();

    std::unordered_map<uint32_t, ProcTotals> totals;
    for (const auto& [tgid, t] : source_.process_totals()) totals[tgid] = t;

    std::unordered_map<uint32_t, std::vector<StackTotals>> stacks;
    for (const auto& s : source_.stack_totals()) stacks[s.tgid].push_back(s);

    // Processes with min_age are counted from their live allocations instead.
    std::set<uint32_t> aged;
    for (const auto& m : processes)
        if (m.min_age.count() > 0) aged.insert(m.pid);
    std::unordered_map<uint32_t, uint64_t> min_age_ns;
    for (const auto& m : processes)
        min_age_ns[m.pid] = static_cast<uint64_t>(m.min_age.count()) * 1000000ull;
    if (!aged.empty()) {
        std::unordered_map<uint32_t, std::map<uint64_t, StackTotals>> by_stack;
        for (const auto& a : source_.live_allocations(aged)) {
            if (a.ts_ns + min_age_ns[a.tgid] > now_ns) continue;
            auto& s = by_stack[a.tgid][a.stack];
            s.tgid = a.tgid;
            s.stack = a.stack;
            s.bytes += static_cast<int64_t>(a.size);
            s.count += 1;
        }
        for (uint32_t pid : aged) {
            auto& t = totals[pid];
            t.bytes = 0;
            t.count = 0;
            auto& list = stacks[pid];
            // What was allocated stays the totals map's: min_age filters only what is held.
            for (const auto& s : list) {
                auto it = by_stack[pid].find(s.stack);
                if (it == by_stack[pid].end()) {
                    if (s.alloc_count == 0) continue;
                    it = by_stack[pid].emplace(s.stack, StackTotals{pid, s.stack}).first;
                }
                it->second.alloc_bytes = s.alloc_bytes;
                it->second.alloc_count = s.alloc_count;
            }
            list.clear();
            for (const auto& [id, s] : by_stack[pid]) {
                t.bytes += s.bytes;
                t.count += s.count;
                list.push_back(s);
            }
        }
    }

    for (const auto& meta : processes) {
        ProcessView view;
        view.pid = meta.pid;
        view.watch = meta.watch;
        view.comm = meta.comm;
        view.unit = meta.unit;
        view.attached_at = meta.attached_at;
        view.tracking = meta.tracking;
        view.escalated_at = meta.escalated_at;
        if (auto memory = memory_.memory(static_cast<int>(meta.pid))) {
            view.memory = *memory;
            view.memory_known = true;
        }
        if (auto it = totals.find(meta.pid); it != totals.end()) view.totals = it->second;
        auto& list = stacks[meta.pid];
        std::sort(list.begin(), list.end(), [](const StackTotals& a, const StackTotals& b) {
            return a.bytes != b.bytes ? a.bytes > b.bytes : a.stack < b.stack;
        });
        // Stacks with the same frames are one: a stack completed from an unwind snapshot is
        // stored under the snapshot's id, the walks after it under the frames' own.
        std::unordered_map<uint64_t, size_t> by_id;
        view.stacks.reserve(list.size());
        for (const auto& s : list) {
            const Resolved& r = resolve_stack(meta, s.stack);
            auto [at, fresh] = by_id.try_emplace(r.id, view.stacks.size());
            if (fresh) {
                view.stacks.push_back({r.id,
                                       s.bytes,
                                       s.count,
                                       r.site,
                                       r.frames,
                                       {},
                                       r.incomplete,
                                       s.alloc_bytes,
                                       s.alloc_count,
                                       r.allocator_frames});
            } else {
                StackView& merged = view.stacks[at->second];
                merged.bytes += s.bytes;
                merged.count += s.count;
                merged.alloc_bytes += s.alloc_bytes;
                merged.alloc_count += s.alloc_count;
            }
        }
        std::stable_sort(view.stacks.begin(), view.stacks.end(),
                         [](const StackView& a, const StackView& b) { return a.bytes > b.bytes; });
        snap.processes.push_back(std::move(view));
    }
    std::sort(snap.processes.begin(), snap.processes.end(),
              [](const ProcessView& a, const ProcessView& b) { return a.pid < b.pid; });
    add_growth_stacks(processes, snap);
    return snap;
}

ProcMemoryReader::ProcMemoryReader(const ProcReader& proc, Symbolizer& symbolizer)
    : proc_(proc),
      pagemaps_(proc, symbolizer.proc_reads(),
                [&symbolizer](const std::string& key) { return symbolizer.wait_for(key); },
                {.file = "pagemap",
                 .refused = "its growth stacks keep the pages read before, and those it "
                            "touches since"}) {}

Result<std::vector<bool>> ProcMemoryReader::pages_held(int pid,
                                                       const std::vector<uint64_t>& pages) {
    auto got = pagemaps_.read(pid, 0, [proc = proc_, pid, pages]() -> Result<PagesHeld> {
        auto held = proc.pages_held(pid, pages);
        if (!held) return std::unexpected(held.error());
        PagesHeld out;
        out.reserve(pages.size());
        for (size_t i = 0; i < pages.size(); i++) out.emplace(pages[i], (*held)[i]);
        return out;
    });
    if (got.gone) return fail(got.error);
    std::vector<bool> held(pages.size(), true);  // not known: held
    if (got.value) {
        for (size_t i = 0; i < pages.size(); i++)
            if (auto it = got.value->find(pages[i]); it != got.value->end()) held[i] = it->second;
    }
    return held;
}

void ProcMemoryReader::forget_unless(const std::function<bool(int)>& keep) {
    pagemaps_.forget_unless([&](pid_t pid) { return keep(pid); });
}

void Aggregator::add_growth_stacks(const std::vector<ProcessMeta>& processes, Snapshot& snap) {
    std::unordered_set<uint32_t> watched;
    for (const auto& meta : processes) watched.insert(meta.pid);
    memory_.forget_unless([&](int pid) { return watched.count(static_cast<uint32_t>(pid)) > 0; });
    std::unordered_map<uint32_t, std::vector<GrowthPage>> by_pid;
    for (auto& g : source_.growth_pages()) by_pid[g.tgid].push_back(g);
    if (by_pid.empty()) return;
    static const uint64_t page_size = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    std::vector<std::pair<uint32_t, uint64_t>> forget;
    for (const auto& meta : processes) {
        auto found = by_pid.find(meta.pid);
        if (found == by_pid.end()) continue;
        auto view =
            std::lower_bound(snap.processes.begin(), snap.processes.end(), meta.pid,
                             [](const ProcessView& p, uint32_t pid) { return p.pid < pid; });
        std::vector<GrowthPage> pages = std::move(found->second);
        by_pid.erase(found);
        std::vector<uint64_t> addresses;
        addresses.reserve(pages.size());
        for (const auto& g : pages) addresses.push_back(g.page);
        auto held = memory_.pages_held(static_cast<int>(meta.pid), addresses);
        if (!held) continue;  // gone: the tracker purges its pages
        const int64_t weight =
            static_cast<int64_t>(std::max<uint64_t>(meta.fault_sample_bytes, page_size));
        std::unordered_map<uint64_t, size_t> by_id;
        for (size_t i = 0; i < pages.size(); i++) {
            if (!(*held)[i]) {
                forget.emplace_back(meta.pid, pages[i].page);
                continue;
            }
            const Resolved& r = resolve_stack(meta, pages[i].stack);
            auto [at, fresh] = by_id.try_emplace(r.id, view->growth_stacks.size());
            if (fresh)
                view->growth_stacks.push_back(
                    {r.id, 0, 0, r.touch_site, r.frames, {}, r.incomplete, 0, 0, r.touch_frames});
            view->growth_stacks[at->second].bytes += weight;
            view->growth_stacks[at->second].count += 1;
        }
        std::stable_sort(view->growth_stacks.begin(), view->growth_stacks.end(),
                         [](const StackView& a, const StackView& b) { return a.bytes > b.bytes; });
    }
    // Pages of processes no longer watched.
    for (const auto& [pid, pages] : by_pid)
        for (const auto& g : pages) forget.emplace_back(pid, g.page);
    source_.forget_growth_pages(forget);
}

}  // namespace leakwatch
