#include "http/api.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace leakwatch {

namespace {

std::string hex(uint64_t v, int width = 0) {
    char buf[24];
    std::snprintf(buf, sizeof(buf), "0x%0*llx", width, static_cast<unsigned long long>(v));
    return buf;
}

nlohmann::json totals_json(const ProcessView& p) {
    return {
        {"pid", p.pid},
        {"watch", p.watch},
        {"comm", p.comm},
        {"attached_at", p.attached_at},
        {"outstanding_bytes", p.totals.bytes},
        {"outstanding_allocations", p.totals.count},
        {"allocated_bytes_total", p.totals.alloc_bytes},
        {"freed_bytes_total", p.totals.free_bytes},
        {"allocations_total", p.totals.alloc_count},
        {"frees_total", p.totals.free_count},
        {"stacks", std::count_if(p.stacks.begin(), p.stacks.end(),
                                 [](const StackView& s) { return s.bytes > 0 || s.count > 0; })},
        {"growth_bytes_per_second", p.growth.rate},
        {"leak_suspected", p.growth.suspected},
        {"tracking", tracking_name(p.tracking)},
        {"escalated_at", p.escalated_at},
        {"memory",
         p.memory_known ? nlohmann::json{{"anon_bytes", p.memory.anon},
                                         {"swap_bytes", p.memory.swap},
                                         {"data_bytes", p.memory.data}}
                        : nlohmann::json(nullptr)},
        {"growth_stacks", p.growth_stacks.size()},
    };
}

// One stack with every frame: `bytes_key` names what its bytes are.
nlohmann::json stack_json(const StackView& s, const char* bytes_key, const char* count_key) {
    auto frames = nlohmann::json::array();
    if (s.frames)
        for (const auto& f : *s.frames) frames.push_back(frame_json(f));
    return {{"stack_id", hex(s.id, 16).substr(2)},
            {bytes_key, s.bytes},
            {count_key, s.count},
            {"site", s.site},
            {"growth_bytes_per_second", s.growth.rate},
            {"leak_suspected", s.growth.suspected},
            {"complete", !s.incomplete},
            {"frames", frames}};
}

nlohmann::json stacks_list(const std::vector<StackView>& list, size_t top, const char* bytes_key,
                           const char* count_key) {
    auto out = nlohmann::json::array();
    for (size_t i = 0; i < list.size() && i < top; i++) {
        if (list[i].bytes <= 0 && list[i].count <= 0) break;  // the rest hold nothing now
        out.push_back(stack_json(list[i], bytes_key, count_key));
    }
    return out;
}

}  // namespace

nlohmann::json frame_json(const Frame& f) {
    nlohmann::json j = {
        {"address", hex(f.address)},
        {"symbol", f.symbol},
        {"offset", f.offset},
        {"module", f.module.str()},
        {"module_offset", hex(f.module_offset)},
    };
    if (!f.build_id.empty()) j["build_id"] = f.build_id.str();
    // Source lines from DWARF, when the module has debug info.
    if (!f.file.empty()) j["file"] = f.file.str();
    if (f.line != 0) j["line"] = f.line;
    if (!f.inlined.empty()) {
        auto inlined = nlohmann::json::array();
        for (const auto& s : f.inlined) {
            nlohmann::json one = {{"function", s.function}};
            if (!s.file.empty()) one["file"] = s.file;
            if (s.line != 0) one["line"] = s.line;
            inlined.push_back(std::move(one));
        }
        j["inlined"] = std::move(inlined);
    }
    return j;
}

nlohmann::json processes_json(const Snapshot& snap) {
    auto list = nlohmann::json::array();
    for (const auto& p : snap.processes) list.push_back(totals_json(p));
    return {{"processes", list}};
}

std::optional<nlohmann::json> stacks_json(const Snapshot& snap, uint32_t pid, size_t top) {
    for (const auto& p : snap.processes) {
        if (p.pid != pid) continue;
        auto j = totals_json(p);
        j["stacks"] = stacks_list(p.stacks, top, "outstanding_bytes", "outstanding_allocations");
        // Escalated, the probes count from the escalation on: a stack's bytes over the time
        // since are its growth, long before the detector has a window of its history.
        if (p.tracking == TrackingState::kEscalated && p.escalated_at > 0) {
            const double since =
                std::chrono::duration<double>(snap.taken.time_since_epoch()).count() -
                p.escalated_at;
            for (size_t i = 0; i < j["stacks"].size(); i++)
                j["stacks"][i]["growth_since_escalation_bytes_per_second"] =
                    since > 0 ? static_cast<double>(p.stacks[i].bytes) / since : 0.0;
        }
        // The watch tier's: the resident memory each stack first touched (an estimate from
        // sampled pages).
        j["growth_stacks"] = stacks_list(p.growth_stacks, top, "resident_bytes", "sampled_pages");
        return j;
    }
    return std::nullopt;
}

nlohmann::json leaks_json(const Snapshot& snap, double now) {
    auto leaks = nlohmann::json::array();
    auto add = [&](const char* scope, const std::string& watch, const std::string& pid,
                   const std::string& comm, const std::string& stack_id, const std::string& site,
                   int64_t bytes, const Growth& g, const std::vector<Frame>* frames) {
        if (!g.suspected) return;
        nlohmann::json j = {{"scope", scope},
                            {"watch", watch},
                            {"pid", pid},
                            {"comm", comm},
                            {"stack_id", stack_id},
                            {"site", site},
                            {"growth_bytes_per_second", g.rate},
                            {"flagged_since", g.flagged_since},
                            {"flagged_for_seconds", std::max(0.0, now - g.flagged_since)},
                            {"outstanding_bytes", bytes}};
        auto fj = nlohmann::json::array();
        if (frames)
            for (const auto& f : *frames) fj.push_back(frame_json(f));
        j["frames"] = fj;
        leaks.push_back(std::move(j));
    };
    for (const auto& p : snap.processes) {
        std::string pid = std::to_string(p.pid);
        add("process", p.watch, pid, p.comm, "", "", p.series_bytes(), p.growth, nullptr);
        for (const auto& s : p.stacks)
            add("stack", p.watch, pid, p.comm, hex(s.id, 16).substr(2), s.site, s.bytes, s.growth,
                s.frames.get());
        for (const auto& s : p.growth_stacks)
            add("growth_stack", p.watch, pid, p.comm, hex(s.id, 16).substr(2), s.site, s.bytes,
                s.growth, s.frames.get());
    }
    if (snap.kernel) {
        for (const auto& s : snap.kernel->stacks)
            add("stack", "kernel", "", "", hex(s.id, 16).substr(2), s.site, s.bytes, s.growth,
                s.frames.get());
        for (const auto& p : snap.kernel->processes)
            add("process", "kernel", std::to_string(p.pid), p.comm, "", "", p.bytes, p.growth,
                nullptr);
        for (const auto& c : snap.kernel->counters)
            add("kernel_counter", "kernel", "", "", "", c.name, c.bytes, c.growth, nullptr);
    }
    std::sort(leaks.begin(), leaks.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
        return a["growth_bytes_per_second"].get<double>() >
               b["growth_bytes_per_second"].get<double>();
    });
    return {{"leaks", leaks}};
}

std::optional<nlohmann::json> kernel_json(const Snapshot& snap, size_t top) {
    if (!snap.kernel) return std::nullopt;
    const KernelView& k = *snap.kernel;
    nlohmann::json kinds = nlohmann::json::object();
    for (size_t i = 0; i < kKernelKinds.size(); i++)
        kinds[std::string(kKernelKinds[i])] = {{"outstanding_bytes", k.bytes[i]},
                                               {"outstanding_allocations", k.count[i]}};
    auto stacks = nlohmann::json::array();
    for (size_t i = 0; i < k.stacks.size() && i < top; i++) {
        const auto& s = k.stacks[i];
        if (s.bytes <= 0 && s.count <= 0) break;
        auto frames = nlohmann::json::array();
        if (s.frames)
            for (const auto& f : *s.frames) frames.push_back(frame_json(f));
        stacks.push_back({{"stack_id", hex(s.id, 16).substr(2)},
                          {"kind", std::string(kKernelKinds[s.kind])},
                          {"outstanding_bytes", s.bytes},
                          {"outstanding_allocations", s.count},
                          {"site", s.site},
                          {"frames", frames}});
    }
    auto procs = nlohmann::json::array();
    for (size_t i = 0; i < k.processes.size() && i < top; i++) {
        const auto& p = k.processes[i];
        procs.push_back({{"pid", p.pid},
                         {"comm", p.comm},
                         {"outstanding_bytes", p.bytes},
                         {"outstanding_allocations", p.count}});
    }
    auto counters = nlohmann::json::array();
    for (size_t i = 0; i < k.counters.size(); i++) {
        const auto& c = k.counters[i];
        if (i >= top && !c.escalated && !c.growth.suspected) continue;
        counters.push_back({{"counter", c.name},
                            {"bytes", c.bytes},
                            {"escalated", c.escalated},
                            {"escalated_at", c.escalated_at},
                            {"growth_bytes_per_second", c.growth.rate},
                            {"leak_suspected", c.growth.suspected}});
    }
    return nlohmann::json{{"kinds", kinds},
                          {"counters", counters},
                          {"slab_backing_bytes", k.backing_bytes},
                          {"stacks", stacks},
                          {"processes", procs}};
}

}  // namespace leakwatch
