#include "symbols/perf_map.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

namespace leakwatch {

namespace {

std::optional<uint64_t> hex_field(std::string_view& rest) {
    size_t space = rest.find(' ');
    if (space == std::string_view::npos) return std::nullopt;
    std::string_view field = rest.substr(0, space);
    rest.remove_prefix(space + 1);
    if (field.starts_with("0x") || field.starts_with("0X")) field.remove_prefix(2);
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), v, 16);
    if (ec != std::errc() || end != field.data() + field.size() || field.empty())
        return std::nullopt;
    return v;
}

// The pid a process has in its own pid namespace (the last NSpid of /proc/PID/status): the
// one in the name of the perf map it writes.
int pid_in_namespace(const ProcReader& proc, int pid) {
    std::ifstream status(proc.root() + "/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (!line.starts_with("NSpid:")) continue;
        std::istringstream fields(line.substr(6));
        int last = pid, v = 0;
        while (fields >> v) last = v;
        return last;
    }
    return pid;
}

}  // namespace

PerfMap PerfMap::parse(std::string_view text) {
    std::vector<Symbol> lines;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        if (nl == std::string_view::npos) break;  // a last line without newline: being written
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        auto start = hex_field(line);
        auto size = start ? hex_field(line) : std::nullopt;
        if (!size || *size == 0 || line.empty()) continue;
        lines.push_back({*start, *size, std::string(line)});
    }
    // Later lines describe the code now at an address: keep, for each address, the latest.
    PerfMap map;
    std::map<uint64_t, Symbol> by_start;
    for (auto& s : lines) {
        uint64_t end = s.start + s.size;
        // drop the earlier blobs this one overlaps
        auto it = by_start.lower_bound(s.start);
        if (it != by_start.begin()) {
            auto prev = std::prev(it);
            if (prev->second.start + prev->second.size > s.start) it = prev;
        }
        while (it != by_start.end() && it->first < end) it = by_start.erase(it);
        by_start[s.start] = std::move(s);
    }
    map.symbols_.reserve(by_start.size());
    for (auto& [start, s] : by_start) map.symbols_.push_back(std::move(s));
    return map;
}

const PerfMap::Symbol* PerfMap::find(uint64_t addr) const {
    auto it = std::upper_bound(symbols_.begin(), symbols_.end(), addr,
                               [](uint64_t a, const Symbol& s) { return a < s.start; });
    if (it == symbols_.begin()) return nullptr;
    --it;
    return addr - it->start < it->size ? &*it : nullptr;
}

std::string perf_map_symbol(std::string_view name) {
    // HotSpot: "void LeakDirect.leakBuffer(int)", "java.nio.ByteBuffer
    // java.nio.ByteBuffer.allocateDirect(int)"; its stubs ("Interpreter", "StubRoutines
    // (1)") have no parameter list, or a space inside it.
    size_t paren = name.find('(');
    if (paren != std::string_view::npos && paren > 0 && name[paren - 1] != ' ' &&
        !name.starts_with("py::")) {
        size_t space = name.substr(0, paren).rfind(' ');
        if (space != std::string_view::npos) return std::string(name.substr(space + 1));
    }
    return std::string(name);
}

PerfMaps::PerfMaps(const ProcReader& proc, size_t max_processes)
    : proc_(proc), entries_(max_processes) {}

PerfMaps::Entry& PerfMaps::refresh(int pid, bool at_once) {
    auto now = std::chrono::steady_clock::now();
    Entry* e = entries_.peek(pid);
    if (e == nullptr) {
        e = &entries_.put(pid, Entry{});
        e->path = proc_.path_in(
            pid, "/tmp/perf-" + std::to_string(pid_in_namespace(proc_, pid)) + ".map");
    } else if (!at_once && now - e->checked < std::chrono::seconds(1)) {
        return *e;
    }
    e->checked = now;
    struct stat st {};
    if (::stat(e->path.c_str(), &st) != 0) {
        if (e->map) {
            e->map.reset();
            e->generation = next_generation_++;
        }
        e->mtime_ns = e->size = -1;
        return *e;
    }
    int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    if (mtime == e->mtime_ns && st.st_size == e->size) return *e;
    std::ifstream in(e->path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    e->map = std::make_shared<const PerfMap>(PerfMap::parse(text.str()));
    e->mtime_ns = mtime;
    e->size = st.st_size;
    e->generation = next_generation_++;
    return *e;
}

const PerfMap::Symbol* PerfMaps::find(int pid, uint64_t addr, bool recheck) {
    Entry& e = refresh(pid);
    const PerfMap::Symbol* s = e.map ? e.map->find(addr) : nullptr;
    if (s == nullptr && recheck) {
        Entry& again = refresh(pid, true);
        s = again.map ? again.map->find(addr) : nullptr;
    }
    return s;
}

uint64_t PerfMaps::generation(int pid) {
    return refresh(pid).generation;
}

}  // namespace leakwatch
