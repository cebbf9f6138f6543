#include "proc/kernel_memory.h"

#include <charconv>
#include <fstream>
#include <map>
#include <sstream>

namespace leakwatch {

namespace {

Result<std::string> slurp(const std::string& path) {
    std::ifstream in(path);
    if (!in) return fail("cannot read " + path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

uint64_t number(std::string_view s) {
    uint64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
}

// Calls fn with each line of text, without its newline.
template <typename Fn>
void for_each_line(std::string_view text, Fn fn) {
    size_t pos = 0;
    while (pos < text.size()) {
        size_t end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        fn(text.substr(pos, end - pos));
        pos = end + 1;
    }
}

}  // namespace

std::vector<SlabCache> parse_slabinfo(std::string_view text) {
    std::vector<SlabCache> out;
    for_each_line(text, [&](std::string_view line) {
        if (line.starts_with("slabinfo") || line.starts_with('#')) return;
        // name active_objs num_objs objsize objperslab pagesperslab : tunables ...
        std::string_view fields[4];
        size_t n = 0, at = 0;
        while (n < 4 && at < line.size()) {
            size_t start = line.find_first_not_of(' ', at);
            if (start == std::string_view::npos) break;
            size_t stop = line.find(' ', start);
            if (stop == std::string_view::npos) stop = line.size();
            fields[n++] = line.substr(start, stop - start);
            at = stop;
        }
        if (n < 4) return;
        out.push_back({std::string(fields[0]), number(fields[1]), number(fields[3])});
    });
    return out;
}

void parse_meminfo(std::string_view text, KernelMemory& out) {
    std::map<std::string_view, uint64_t> kb;
    for_each_line(text, [&](std::string_view line) {
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) return;
        size_t digits = line.find_first_not_of(' ', colon + 1);
        if (digits == std::string_view::npos) return;
        kb[line.substr(0, colon)] = number(line.substr(digits));
    });
    out.percpu = kb["Percpu"] * 1024;
    out.vmalloc = kb["VmallocUsed"] * 1024;
    int64_t other = static_cast<int64_t>(kb["MemTotal"]) - static_cast<int64_t>(kb["MemFree"]);
    for (std::string_view key :
         {"Buffers", "Cached", "AnonPages", "Slab", "KernelStack", "PageTables", "Percpu"})
        other -= static_cast<int64_t>(kb[key]);
    out.pages = other > 0 ? static_cast<uint64_t>(other) * 1024 : 0;
}

Result<KernelMemory> read_kernel_memory(const std::string& proc_root) {
    KernelMemory out;
    auto meminfo = slurp(proc_root + "/meminfo");
    if (!meminfo) return std::unexpected(meminfo.error());
    parse_meminfo(*meminfo, out);
    auto slabinfo = slurp(proc_root + "/slabinfo");
    if (!slabinfo)
        return fail("cannot read " + proc_root +
                    "/slabinfo: it is root's (the unit's CAP_DAC_READ_SEARCH reads it)");
    out.caches = parse_slabinfo(*slabinfo);
    return out;
}

}  // namespace leakwatch
