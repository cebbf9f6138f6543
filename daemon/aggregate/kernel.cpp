#include "aggregate/kernel.h"

#include <algorithm>
#include <map>

#include "aggregate/kernel_site.h"

namespace leakwatch {

bool in_interrupt(const std::vector<Frame>& frames) {
    static constexpr std::string_view kExact[] = {
        "handle_softirqs",
        "__do_softirq",
        "do_softirq",
        "irq_exit_rcu",
        "__irq_exit_rcu",
        "irq_exit",
        "common_interrupt",
        "asm_common_interrupt",
        "handle_irq_event",
        "do_IRQ",
        "exc_nmi",
        "nmi_handle",
        "gic_handle_irq",
        "el1_interrupt",
        "el0_interrupt",
        "handle_domain_irq",
        "generic_handle_domain_irq",
        "__handle_domain_irq",
    };
    static constexpr std::string_view kPrefixes[] = {"sysvec_", "asm_sysvec_", "__sysvec_",
                                                     "el1h_64_irq", "el0t_64_irq"};
    for (const auto& f : frames) {
        std::string_view s = f.symbol;
        if (auto dot = s.find('.'); dot != std::string_view::npos) s = s.substr(0, dot);
        for (auto e : kExact)
            if (s == e) return true;
        for (auto p : kPrefixes)
            if (s.starts_with(p)) return true;
    }
    return false;
}

uint64_t kernel_stack_id(const std::vector<Frame>& frames) {
    // FNV-1a, 64 bits, over each frame's module, symbol and offset, separated.
    uint64_t h = 0xcbf29ce484222325ull;
    auto add = [&](const void* data, size_t n) {
        const auto* p = static_cast<const unsigned char*>(data);
        for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    };
    for (const Frame& f : frames) {
        add(f.module.str().data(), f.module.str().size());
        add("|", 1);
        add(f.symbol.data(), f.symbol.size());
        add("|", 1);
        add(&f.module_offset, sizeof(f.module_offset));
    }
    return frames.empty() ? 0 : h;
}

void KernelAggregator::name_frames(const KernelStack& stack, Resolved& r) {
    // A copy: snapshots already published share the frames named before.
    auto frames = r.frames ? std::make_shared<std::vector<Frame>>(*r.frames)
                           : std::make_shared<std::vector<Frame>>(stack.ips.size());
    bool all = true;
    for (size_t i = 0; i < stack.ips.size() && i < frames->size(); i++) {
        Frame& f = (*frames)[i];
        if (!f.symbol.empty()) continue;  // named once: kept, also after its module is gone
        // Return addresses past the first frame: look up the call instruction.
        uint64_t addr = stack.ips[i];
        f = namer_.name(i == 0 ? addr : addr - 1, stack.modules);
        if (i != 0) {
            f.address = addr;
            if (!f.symbol.empty()) f.offset += 1;
            f.module_offset += 1;
        }
        all = all && !f.symbol.empty();
    }
    r.site = kernel_site_of(*frames);
    r.backing = backs_slab_or_kmalloc(*frames);
    r.interrupt = in_interrupt(*frames);
    r.frames = std::move(frames);
    if (all)
        r.unnamed.reset();
    else if (!r.unnamed)
        r.unnamed = stack;
}

const KernelAggregator::Resolved& KernelAggregator::resolve(uint64_t id) {
    if (auto it = cache_.find(id); it != cache_.end()) return it->second;
    Resolved r;
    auto raw = id ? source_.kernel_stack(id) : std::nullopt;
    if (raw) {
        name_frames(*raw, r);
        r.id = kernel_stack_id(*r.frames);
    } else {
        r.frames = std::make_shared<std::vector<Frame>>();
        r.site = "[unknown]";
    }
    if (id && !raw) {  // not stored (yet): look again next time
        unresolved_ = std::move(r);
        return unresolved_;
    }
    return cache_.emplace(id, std::move(r)).first->second;
}

KernelView KernelAggregator::sample() {
    KernelView view;
    std::map<std::pair<uint32_t, uint64_t>, KernelStackView> stacks;   // (kind, stack)
    std::map<std::pair<uint32_t, uint64_t>, KernelProcessView> procs;  // (tgid, start)
    std::vector<KernelTotals> empty;
    const auto totals = source_.kernel_totals();
    // Every stack is named before any is counted: new stacks with addresses the namer cannot
    // name yet (a module loaded since it read the symbols) may make it read them again, and
    // then they are named in this same sample.
    for (const auto& t : totals)
        if (t.kind < view.bytes.size()) resolve(t.stack);
    if (uint64_t version = namer_.refresh(); version != names_version_) {
        names_version_ = version;
        for (auto& [id, r] : cache_)
            if (r.unnamed) name_frames(*r.unnamed, r);
    }
    for (const auto& t : totals) {
        view.totals_entries++;
        view.live_records += static_cast<uint64_t>(std::max<int64_t>(t.count, 0));
        if (t.kind >= view.bytes.size()) continue;
        if (t.count == 0 && t.bytes == 0 && t.tgid != 0) empty.push_back(t);
        const Resolved& r = resolve(t.stack);
        if (t.kind == 2 /* page */ && r.backing) {
            view.backing_bytes += t.bytes;
            continue;
        }
        view.bytes[t.kind] += t.bytes;
        view.count[t.kind] += t.count;
        // Under the id it is shown as: stacks not stored yet (id 0, "[unknown]") are one.
        auto& s = stacks[{t.kind, r.id}];
        s.id = r.id;
        s.kind = t.kind;
        s.bytes += t.bytes;
        s.count += t.count;
        s.site = r.site;
        s.frames = r.frames;
        if (t.tgid != 0 && !r.interrupt) {
            auto& p = procs[{t.tgid, t.start}];
            p.pid = t.tgid;
            p.start = t.start;
            p.bytes += t.bytes;
            p.count += t.count;
        }
    }

    std::map<std::pair<uint32_t, uint64_t>, std::optional<ProcessIdentity>> who;
    auto comm_of = [&](uint32_t tgid, uint64_t start) -> const std::optional<ProcessIdentity>& {
        auto key = std::make_pair(tgid, start);
        auto it = who.find(key);
        if (it == who.end()) it = who.emplace(key, lookup_(tgid, start)).first;
        return it->second;
    };
    std::vector<KernelTotals> gone;
    for (const auto& t : empty)
        if (!comm_of(t.tgid, t.start)) gone.push_back(t);
    if (!gone.empty()) source_.remove_kernel_totals(gone);

    for (auto& [key, p] : procs) {
        const auto& id = comm_of(key.first, key.second);
        if (!id || p.bytes <= 0) continue;  // exited: its bytes stay in the kind and stack totals
        p.comm = id->comm;
        p.unit = id->unit;
        view.processes.push_back(std::move(p));
    }
    for (auto& [key, s] : stacks) view.stacks.push_back(std::move(s));
    std::sort(view.stacks.begin(), view.stacks.end(), [](const auto& a, const auto& b) {
        return a.bytes != b.bytes ? a.bytes > b.bytes : a.id < b.id;
    });
    std::sort(view.processes.begin(), view.processes.end(), [](const auto& a, const auto& b) {
        return a.bytes != b.bytes ? a.bytes > b.bytes : a.pid < b.pid;
    });
    return view;
}

}  // namespace leakwatch
