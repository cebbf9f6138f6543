#include "symbols/perf_map.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

#include "proc/files.h"
#include "util/text.h"

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

PerfMap PerfMap::parse(std::string_view text, size_t max_lines) {
    std::vector<Symbol> lines;
    for (size_t n = 0; !text.empty() && n < max_lines; n++) {
        size_t nl = text.find('\n');
        if (nl == std::string_view::npos) break;  // a last line without newline: being written
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        auto start = hex_field(line);
        auto size = start ? hex_field(line) : std::nullopt;
        if (!size || *size == 0 || line.empty()) continue;
        lines.push_back({*start, *size, shown_text(line, kMaxShownName)});
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

PerfMaps::PerfMaps(const ProcReader& proc, BoundedLoader& loader, Options options)
    : proc_(proc),
      loader_(loader),
      options_(options),
      shared_(std::make_shared<Shared>(options.max_processes)) {
    shared_->max_bytes = options.max_bytes;
}

void PerfMaps::set_max_bytes(uint64_t max_bytes) {
    std::lock_guard lock(shared_->mu);
    shared_->max_bytes = max_bytes;
}

namespace {

// Reads pid's perf map, unless it is the file already read (`last`).
PerfMaps::Read read_perf_map(const ProcReader& proc, int pid, uint64_t max_bytes,
                             const std::string& last) {
    PerfMaps::Read out;
    ProcessInfo owner;
    owner.pid = pid;
    if (!proc.reread_uid_and_cgroup(owner)) return out;  // gone
    const std::string path = "/tmp/perf-" + std::to_string(pid_in_namespace(proc, pid)) + ".map";
    OpenRules rules{.max_bytes = max_bytes, .symlinks = false, .owners = {owner.uid, owner.euid}};
    auto file = open_in_root(proc, pid, path, rules);
    if (!file) return out;  // absent, or refused (counted and logged once)
    out.identity = file->identity();
    if (out.identity == last) {
        out.unchanged = true;
        return out;
    }
    // Whole lines only, up to kMaxPerfMapLines of them, a chunk at a time.
    constexpr size_t kChunk = 1 << 20;
    std::string text;
    size_t lines = 0;
    bool cut = false;
    for (uint64_t offset = 0; offset < file->size();) {
        auto chunk = read_at(*file, offset, kChunk);
        if (!chunk || chunk->empty()) break;
        offset += chunk->size();
        size_t end = 0;
        for (size_t nl = chunk->find('\n'); nl != std::string::npos;
             nl = chunk->find('\n', nl + 1)) {
            end = nl + 1;
            if (++lines == kMaxPerfMapLines) {
                cut = true;
                break;
            }
        }
        text.append(*chunk, 0, cut ? end : chunk->size());
        if (cut) break;
    }
    if (cut) {
        refuse_file(Refusal::kTooManyLines, path + " (" + out.identity + ")",
                    "a perf map of more than " + std::to_string(kMaxPerfMapLines) +
                        " lines; its first ones are used");
    }
    out.map = std::make_shared<const PerfMap>(PerfMap::parse(text));
    return out;
}

}  // namespace

void PerfMaps::store(Shared& shared, int pid, Read r) {
    std::lock_guard lock(shared.mu);
    Entry* e = shared.entries.peek(pid);
    if (e == nullptr) return;  // forgotten meanwhile
    e->loaded = true;
    if (r.unchanged) return;
    if (!r.map && !e->map && e->identity.empty()) return;  // still none
    e->map = std::move(r.map);
    e->identity = std::move(r.identity);
    e->generation = shared.next_generation++;
}

bool PerfMaps::refresh(int pid, bool at_once) {
    const auto now = std::chrono::steady_clock::now();
    std::string last;
    uint64_t max_bytes = 0;
    bool first = false;
    {
        std::lock_guard lock(shared_->mu);
        Entry* e = shared_->entries.peek(pid);
        if (e == nullptr) e = &shared_->entries.put(pid, Entry{});
        if (e->loaded && !at_once && now - e->checked < std::chrono::seconds(1)) return false;
        e->checked = now;
        last = e->identity;
        max_bytes = shared_->max_bytes;
        first = !e->loaded;
    }
    auto load = [proc = proc_, shared = shared_, pid, max_bytes, last] {
        store(*shared, pid, read_perf_map(proc, pid, max_bytes, last));
    };
    // Only a first read is waited for; later ones replace the map when they are done.
    const std::string key = "perf:" + std::to_string(pid);
    auto wait = first || at_once ? options_.wait(key) : std::chrono::milliseconds(0);
    if (!wait) {
        refuse_file(Refusal::kSlow, "the perf map of pid " + std::to_string(pid),
                    "reading it takes too long; its JIT frames stay unnamed");
        std::lock_guard lock(shared_->mu);
        if (Entry* e = shared_->entries.peek(pid)) e->loaded = true;
        return false;
    }
    return loader_.run(key, std::move(load), *wait) == BoundedLoader::Outcome::kWaiting && first;
}

void PerfMaps::watch_jvm(int pid) {
    {
        std::lock_guard lock(shared_->mu);
        if (!shared_->jvms.try_emplace(pid).second) return;  // known already
        if (!shared_->entries.peek(pid)) shared_->entries.put(pid, Entry{});
    }
    request_attach(pid, true);
}

bool PerfMaps::request_attach(int pid, bool now) {
    const auto at = std::chrono::steady_clock::now();
    uint64_t max_bytes = 0;
    {
        std::lock_guard lock(shared_->mu);
        auto it = shared_->jvms.find(pid);
        if (it == shared_->jvms.end() || it->second.unable) return false;
        Jvm& jvm = it->second;
        if (jvm.attaching) return true;
        // Each ask waits twice as long as the one before, up to kMaxAttachInterval: a JVM
        // whose stacks keep code its map never names is not asked every few seconds for ever.
        auto interval = std::min<std::chrono::milliseconds>(
            options_.attach_interval * (1u << std::min<uint64_t>(jvm.attaches, 6) >> 1),
            kMaxAttachInterval);
        if (!now && jvm.attaches > 0 && at - jvm.asked < interval) return false;
        jvm.attaching = true;
        jvm.asked = at;
        jvm.attaches++;
        max_bytes = shared_->max_bytes;
    }
    auto load = [proc = proc_, shared = shared_, pid, max_bytes, limits = options_.attach_limits] {
        bool give_up = false;
        auto reply = jvm_command(proc, pid, "Compiler.perfmap", limits, &give_up);
        bool unable = false;
        if (!reply && give_up) {
            // Not asked again: it was sent SIGQUIT and did not answer (its listener slow or
            // refused), or its attach mechanism is off; such a JVM prints a thread dump for
            // each SIGQUIT. Or the daemon can pass none of its checks (not root, and unable to
            // become its user: the shipped unit).
            unable = true;
            spdlog::info("pid {}: no perf map from the JVM, not asked again: {}", pid,
                         reply.error().message);
        } else if (!reply) {
            // Not signalled (not yet catching SIGQUIT, just started): asked again later.
            spdlog::debug("pid {}: no perf map from the JVM: {}", pid, reply.error().message);
        } else if (reply->code != 0) {
            // JDK 11 has no Compiler.perfmap ("Unknown diagnostic command"); a JVM that says
            // no once says it each time.
            unable = true;
            spdlog::info(
                "pid {}: the JVM does not write a perf map (Compiler.perfmap: {} {}); "
                "its JIT frames stay unnamed",
                pid, reply->code, shown_text(reply->output, 200));
        } else {
            spdlog::debug("pid {}: the JVM wrote its perf map", pid);
        }
        Read r = reply && reply->code == 0 ? read_perf_map(proc, pid, max_bytes, "") : Read{};
        if (r.map || !r.identity.empty()) store(*shared, pid, std::move(r));
        std::lock_guard lock(shared->mu);
        auto it = shared->jvms.find(pid);
        if (it == shared->jvms.end()) return;
        it->second.attaching = false;
        it->second.unable = unable;
        it->second.asked = std::chrono::steady_clock::now();
    };
    // Never waited for: the JVM may take seconds to answer, or never do.
    loader_.run("attach:" + std::to_string(pid), std::move(load), std::chrono::milliseconds(0));
    return true;
}

std::optional<PerfMap::Symbol> PerfMaps::find(int pid, uint64_t addr, bool recheck, bool* pending) {
    bool loading = refresh(pid, false);
    auto lookup = [&]() -> std::optional<PerfMap::Symbol> {
        std::lock_guard lock(shared_->mu);
        Entry* e = shared_->entries.peek(pid);
        const PerfMap::Symbol* s = e && e->map ? e->map->find(addr) : nullptr;
        if (s == nullptr) return std::nullopt;
        return *s;
    };
    auto found = lookup();
    if (!found && recheck && !loading) {
        loading = refresh(pid, true);
        found = lookup();
    }
    // JIT code the map does not name yet: a JVM is asked for a new one, and its frames are
    // named once it is read. Until then the unwinder (`recheck`) is told to wait rather than
    // take the frame-pointer rule, which it would keep for that address: HotSpot's compiled
    // frames keep no frame pointer by default.
    if (!found && (request_attach(pid, false) || (recheck && may_attach(pid)))) loading = true;
    if (pending) *pending = loading;
    return found;
}

bool PerfMaps::may_attach(int pid) {
    std::lock_guard lock(shared_->mu);
    auto it = shared_->jvms.find(pid);
    return it != shared_->jvms.end() && !it->second.unable;
}

uint64_t PerfMaps::generation(int pid) {
    // Asked for stacks with JIT frames the map did not name: the JVM is asked again when due.
    request_attach(pid, false);
    refresh(pid, false);
    std::lock_guard lock(shared_->mu);
    Entry* e = shared_->entries.peek(pid);
    return e ? e->generation : 0;
}

void PerfMaps::forget(int pid) {
    std::lock_guard lock(shared_->mu);
    shared_->entries.erase(pid);
    shared_->jvms.erase(pid);
}

}  // namespace leakwatch
