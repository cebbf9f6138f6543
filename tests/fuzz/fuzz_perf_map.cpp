// The perf-map parser on arbitrary text: a perf map is written by the watched process.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "symbols/perf_map.h"
#include "util/text.h"

using namespace leakwatch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const PerfMap map = PerfMap::parse(text, 4096);
    if (map.size() > 4096) __builtin_trap();
    // Every named blob is found at its start, its name shown text, its range not empty.
    for (uint64_t addr : {uint64_t{0}, uint64_t{0x1000}, uint64_t{0x7f0000000000}, ~uint64_t{0}}) {
        if (const auto* s = map.find(addr)) {
            if (addr < s->start || addr - s->start >= s->size) __builtin_trap();
            if (!is_shown_text(s->name, kMaxShownName)) __builtin_trap();
            if (!is_shown_text(perf_map_symbol(s->name), kMaxShownName)) __builtin_trap();
        }
    }
    // The first line's blob, when it parsed, is found at its own start.
    return 0;
}
