// /proc parsing on arbitrary text: /proc/PID/maps (paths are the process's to choose: a file
// name may hold newlines and any bytes), the Uid line of status, cgroup and stat (the comm in
// it may hold spaces and ')'), and the cgroup path helpers behind `unit` and `cgroup` rules.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proc/proc.h"
#include "util/text.h"

using namespace leakwatch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    if (auto maps = parse_maps(text)) {
        // find_mapping takes the kernel's order (sorted by start); what it finds holds the
        // address asked for, and in disjoint maps (the kernel's) a non-empty mapping's own start
        // is found. (Lines a file name forged can overlap: then only the first holds.)
        const bool sorted =
            std::is_sorted(maps->begin(), maps->end(),
                           [](const auto& a, const auto& b) { return a.start < b.start; }) &&
            std::adjacent_find(maps->begin(), maps->end(), [](const auto& a, const auto& b) {
                return b.start < a.end;
            }) == maps->end();
        for (const auto& m : *maps) {
            if (m.end < m.start) __builtin_trap();
            if (!sorted) continue;
            const MapEntry* found = find_mapping(*maps, m.start);
            if (found != nullptr && !found->contains(m.start)) __builtin_trap();
            if (m.end > m.start && found == nullptr) __builtin_trap();
        }
    }
    (void)parse_uids(text, "status");
    (void)parse_start_time(text, "stat");
    const std::string cgroup = parse_cgroup(text);
    const std::string unit = cgroup_unit(cgroup);
    if (unit.find('/') != std::string::npos) __builtin_trap();
    const std::string id = cgroup_container_id(cgroup);
    if (!id.empty() && id.size() != 64) __builtin_trap();
    const std::string label = unit_label(cgroup);
    if (!is_shown_text(label, kMaxShownName)) __builtin_trap();
    // A glob from the first line over the rest: linear time, whatever both hold.
    const size_t nl = text.find('\n');
    if (nl != std::string_view::npos) {
        (void)glob_matches(text.substr(0, nl), text.substr(nl + 1));
    }
    return 0;
}
