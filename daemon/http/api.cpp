#include "http/api.h"

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
        {"stacks", p.stacks.size()},
    };
}

}  // namespace

nlohmann::json frame_json(const Frame& f) {
    nlohmann::json j = {
        {"address", hex(f.address)},
        {"symbol", f.symbol},
        {"offset", f.offset},
        {"module", f.module},
        {"module_offset", hex(f.module_offset)},
    };
    if (!f.build_id.empty()) j["build_id"] = f.build_id;
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
        auto stacks = nlohmann::json::array();
        for (size_t i = 0; i < p.stacks.size() && i < top; i++) {
            const auto& s = p.stacks[i];
            auto frames = nlohmann::json::array();
            if (s.frames)
                for (const auto& f : *s.frames) frames.push_back(frame_json(f));
            stacks.push_back({{"stack_id", hex(s.id, 16).substr(2)},
                              {"outstanding_bytes", s.bytes},
                              {"outstanding_allocations", s.count},
                              {"site", s.site},
                              {"frames", frames}});
        }
        j["stacks"] = stacks;
        return j;
    }
    return std::nullopt;
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
    return nlohmann::json{{"kinds", kinds},
                          {"slab_backing_bytes", k.backing_bytes},
                          {"stacks", stacks},
                          {"processes", procs}};
}

}  // namespace leakwatch
