#include "proc/proc.h"

#include <dirent.h>
#include <fcntl.h>
#include <re2/re2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <tuple>
#include <utility>

#include "util/text.h"

namespace leakwatch {
namespace {

// /proc/PID/maps of a process with vm.max_map_count (65530) mappings of long paths stays far
// below this; it only stops a runaway read.
constexpr size_t kMaxProcFile = 64 << 20;
// /proc/PID/status and /proc/PID/cgroup (a path of nested cgroups, each name up to 255 bytes).
constexpr size_t kMaxSmallProcFile = 64 << 10;

constexpr std::string_view kDeletedSuffix = " (deleted)";

// Strips the kernel's " (deleted)" marker; true if it was there.
bool strip_deleted(std::string& path) {
    if (!path.ends_with(kDeletedSuffix)) return false;
    path.resize(path.size() - kDeletedSuffix.size());
    return true;
}

// /proc files report size 0, so read until EOF instead of trusting stat(), or until `max`
// bytes: what a process controls (its command line) is read no further than that.
Result<std::string> read_file(const std::string& path, size_t max = kMaxProcFile) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_errno(path, errno);
    std::string text;
    char buf[65536];
    while (text.size() < max) {
        ssize_t n = ::read(fd, buf, std::min(sizeof buf, max - text.size()));
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            ::close(fd);
            return fail_errno(path, err);
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return text;
}

}  // namespace

// The real and effective uids from /proc/PID/status ("Uid:\treal\teffective\tsaved\tfs").
Result<std::pair<uint32_t, uint32_t>> parse_uids(std::string_view status, const std::string& path) {
    size_t at = status.starts_with("Uid:") ? 0 : status.find("\nUid:");
    if (at == std::string_view::npos) return fail(path + ": no Uid line");
    std::string_view rest = status.substr(at + (at == 0 ? 4 : 5));
    uint32_t ids[2] = {};
    for (uint32_t& id : ids) {
        size_t begin = rest.find_first_not_of(" \t");
        if (begin == std::string_view::npos) return fail(path + ": malformed Uid line");
        rest.remove_prefix(begin);
        auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), id);
        if (ec != std::errc()) return fail(path + ": malformed Uid line");
        rest.remove_prefix(static_cast<size_t>(end - rest.data()));
    }
    return std::make_pair(ids[0], ids[1]);
}

// The unified (v2) hierarchy's path from /proc/PID/cgroup ("0::PATH"), or systemd's own
// hierarchy's on a v1 system ("N:name=systemd:PATH"), where the v2 one is "/" or absent.
std::string parse_cgroup(std::string_view text) {
    std::string_view unified, systemd;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        size_t first = line.find(':');
        if (first == std::string_view::npos) continue;
        size_t second = line.find(':', first + 1);
        if (second == std::string_view::npos) continue;
        std::string_view controllers = line.substr(first + 1, second - first - 1);
        std::string_view path = line.substr(second + 1);
        if (line.substr(0, first) == "0" && controllers.empty()) unified = path;
        if (controllers == "name=systemd") systemd = path;
    }
    if ((unified.empty() || unified == "/") && !systemd.empty()) return std::string(systemd);
    return std::string(unified);
}

namespace {

bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

// Which unit types a cgroup of systemd's names; slices only group them.
bool is_unit_name(std::string_view name) {
    static constexpr std::string_view kTypes[] = {".service", ".scope",    ".socket", ".mount",
                                                  ".swap",    ".target",   ".timer",  ".path",
                                                  ".device",  ".automount"};
    if (name.size() < 2 || name.front() == '.') return false;
    return std::any_of(std::begin(kTypes), std::end(kTypes), [&](std::string_view t) {
        return name.ends_with(t) && name.size() > t.size();
    });
}

// A small cursor over one maps line; each take_* consumes a field or reports failure.
class LineCursor {
  public:
    explicit LineCursor(std::string_view line) : rest_(line) {}

    template <class T>
    bool take_number(T& value, int base) {
        auto [ptr, ec] = std::from_chars(rest_.data(), rest_.data() + rest_.size(), value, base);
        if (ec != std::errc() || ptr == rest_.data()) return false;
        rest_.remove_prefix(static_cast<size_t>(ptr - rest_.data()));
        return true;
    }
    bool take_char(char c) {
        if (rest_.empty() || rest_.front() != c) return false;
        rest_.remove_prefix(1);
        return true;
    }
    bool take_token(std::string_view& token) {
        size_t n = rest_.find(' ');
        if (n == 0) return false;
        token = rest_.substr(0, n);
        rest_.remove_prefix(token.size());
        return true;
    }
    // The kernel pads the inode column to align paths, so any number of spaces may follow.
    std::string_view rest_after_padding() {
        size_t n = rest_.find_first_not_of(' ');
        return n == std::string_view::npos ? std::string_view() : rest_.substr(n);
    }
    bool at_end_or_space() const { return rest_.empty() || rest_.front() == ' '; }

  private:
    std::string_view rest_;
};

Result<MapEntry> parse_maps_line(std::string_view line) {
    MapEntry entry;
    LineCursor cur(line);
    std::string_view perms;
    if (!cur.take_number(entry.start, 16) || !cur.take_char('-') ||
        !cur.take_number(entry.end, 16) || !cur.take_char(' ')) {
        return fail("bad address range");
    }
    if (entry.end < entry.start) return fail("address range ends before it starts");
    if (!cur.take_token(perms) || perms.size() != 4 || !cur.take_char(' ')) {
        return fail("bad permissions");
    }
    if (!cur.take_number(entry.offset, 16) || !cur.take_char(' ')) return fail("bad offset");
    if (!cur.take_number(entry.dev_major, 16) || !cur.take_char(':') ||
        !cur.take_number(entry.dev_minor, 16) || !cur.take_char(' ')) {
        return fail("bad device");
    }
    if (!cur.take_number(entry.inode, 10) || !cur.at_end_or_space()) return fail("bad inode");
    entry.perms = perms;
    // Everything after the padding is the path, spaces included.
    entry.path = cur.rest_after_padding();
    entry.deleted = strip_deleted(entry.path);
    return entry;
}

bool all_digits(std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view basename_of(std::string_view path) {
    size_t slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool is_libc_basename(std::string_view name) {
    if (name == "libc.so.6" || name == "libc.so") return true;
    // Old glibc: libc-2.17.so; musl ships its libc as the dynamic loader.
    if (name.starts_with("libc-2.") && name.ends_with(".so")) return true;
    return name.starts_with("ld-musl-") && name.ends_with(".so.1");
}

}  // namespace

Result<uint64_t> parse_start_time(std::string_view stat, const std::string& path) {
    // comm may hold spaces and ')' itself, so the field boundary is the last ')'.
    size_t close = stat.rfind(')');
    if (close == std::string_view::npos) return fail(path + ": malformed stat: no ')' after comm");
    std::string_view rest = stat.substr(close + 1);
    // Fields after comm start at 3 (state); starttime is field 22.
    constexpr int kFieldsToSkip = 22 - 3;
    for (int field = 0;; ++field) {
        size_t begin = rest.find_first_not_of(' ');
        if (begin == std::string_view::npos) break;
        rest.remove_prefix(begin);
        size_t end = std::min(rest.find(' '), rest.size());
        if (field == kFieldsToSkip) {
            std::string_view token = rest.substr(0, end);
            if (!token.empty() && token.back() == '\n') token.remove_suffix(1);
            uint64_t value = 0;
            auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
            if (ec != std::errc() || ptr != token.data() + token.size() || token.empty()) {
                return fail(path + ": malformed stat: starttime '" + std::string(token) +
                            "' is not a number");
            }
            return value;
        }
        rest.remove_prefix(end);
    }
    return fail(path + ": malformed stat: fewer than 22 fields");
}

namespace {

// "" when the link cannot be read: kernel threads have no exe, and other users'
// processes may deny it; neither should stop us from naming the process.
std::string read_link_or_empty(const std::string& path) {
    std::string target(PATH_MAX, '\0');
    for (;;) {
        ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
        if (n < 0) return {};
        if (static_cast<size_t>(n) < target.size()) {
            target.resize(static_cast<size_t>(n));
            return target;
        }
        target.resize(target.size() * 2);
    }
}

// Every argument ends in NUL; processes that rewrite their title (setproctitle) often pad
// with more NULs, so all trailing empty pieces are dropped, not just the last.
std::vector<std::string> split_cmdline(std::string_view raw) {
    while (!raw.empty() && raw.back() == '\0') raw.remove_suffix(1);
    std::vector<std::string> argv;
    while (!raw.empty()) {
        size_t nul = raw.find('\0');
        if (nul == std::string_view::npos) {
            argv.emplace_back(raw);
            break;
        }
        argv.emplace_back(raw.substr(0, nul));
        raw.remove_prefix(nul + 1);
    }
    return argv;
}

std::string join_argv(const std::vector<std::string>& argv) {
    std::string joined;
    for (size_t i = 0; i < argv.size(); ++i) {
        if (i > 0) joined += ' ';
        joined += argv[i];
    }
    return joined;
}

bool cmdline_matches(const Match& match, const ProcessInfo& info) {
    // RE2 matches in time linear in the text, with the memory set at compile time, whatever
    // the pattern and however long the command line (it is bounded when read, too).
    const std::string joined = join_argv(info.argv);
    if (match.cmdline_regex) return RE2::PartialMatch(joined, *match.cmdline_regex);
    // Config always compiles the pattern; this covers Match values built by hand.
    auto compiled = compile_cmdline(match.cmdline.value_or(""));
    return compiled && RE2::PartialMatch(joined, **compiled);
}

// A `[...]` set at pattern[p] against c: the set's length in the pattern (0 when it is not
// closed: then the '[' is an ordinary character), and in `ok` whether c is in it.
size_t glob_set(std::string_view pattern, size_t p, char c, bool& ok) {
    size_t i = p + 1;
    bool negate = i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^');
    if (negate) i++;
    bool found = false;
    for (bool first = true;; first = false) {
        if (i >= pattern.size()) return 0;
        if (pattern[i] == ']' && !first) break;
        if (i + 2 < pattern.size() && pattern[i + 1] == '-' && pattern[i + 2] != ']') {
            found |= c >= pattern[i] && c <= pattern[i + 2];
            i += 3;
        } else {
            found |= c == pattern[i];
            i++;
        }
    }
    ok = found != negate;
    return i + 1 - p;
}

}  // namespace

ProcMemory parse_status_memory(std::string_view status) {
    ProcMemory m;
    auto kib = [&](std::string_view key) -> uint64_t {
        size_t at = status.find(key);
        if (at == std::string_view::npos || (at != 0 && status[at - 1] != '\n')) return 0;
        std::string_view rest = status.substr(at + key.size());
        size_t digits = rest.find_first_not_of(" \t");
        if (digits == std::string_view::npos) return 0;
        uint64_t v = 0;
        std::from_chars(rest.data() + digits, rest.data() + rest.size(), v);
        return v * 1024;  // the kernel writes kB
    };
    m.anon = kib("RssAnon:");
    m.swap = kib("VmSwap:");
    m.data = kib("VmData:");
    return m;
}

bool pagemap_entry_held(uint64_t entry) {
    constexpr uint64_t kPresent = 1ull << 63, kSwapped = 1ull << 62, kFileOrShared = 1ull << 61;
    return (entry & (kPresent | kSwapped)) != 0 && (entry & kFileOrShared) == 0;
}

Result<std::vector<MapEntry>> parse_maps(std::string_view text) {
    std::vector<MapEntry> maps;
    maps.reserve(static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1);
    int line_number = 0;
    while (!text.empty()) {
        ++line_number;
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (line.empty()) continue;
        auto entry = parse_maps_line(line);
        if (!entry) {
            return fail("line " + std::to_string(line_number) + ": " + entry.error().message +
                        ": '" + std::string(line) + "'");
        }
        maps.push_back(std::move(*entry));
    }
    return maps;
}

const MapEntry* find_mapping(const std::vector<MapEntry>& maps, uint64_t addr) {
    auto after = std::upper_bound(maps.begin(), maps.end(), addr,
                                  [](uint64_t a, const MapEntry& m) { return a < m.start; });
    // The kernel's lines are sorted and disjoint, but a file name with a newline adds lines of
    // the process's choosing (duplicate starts, empty ranges): look a few entries back.
    for (int i = 0; i < 8 && after != maps.begin(); i++) {
        --after;
        if (after->contains(addr)) return &*after;
    }
    return nullptr;
}

std::vector<int> ProcReader::pids() const {
    std::vector<int> result;
    DIR* dir = ::opendir(root_.c_str());
    if (dir == nullptr) return result;
    while (const dirent* entry = ::readdir(dir)) {
        std::string_view name = entry->d_name;
        if (!all_digits(name)) continue;
        int pid = 0;
        auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
        if (ec == std::errc() && ptr == name.data() + name.size()) result.push_back(pid);
    }
    ::closedir(dir);
    std::sort(result.begin(), result.end());
    return result;
}

Result<std::vector<std::string>> ProcReader::cmdline(int pid) const {
    auto raw = read_file(root_ + "/" + std::to_string(pid) + "/cmdline", kMaxCommandLine);
    if (!raw) return std::unexpected(raw.error());
    return split_cmdline(*raw);
}

Result<ProcessInfo> ProcReader::process(int pid, bool with_cmdline) const {
    const std::string dir = root_ + "/" + std::to_string(pid);
    ProcessInfo info;
    info.pid = pid;

    auto comm = read_file(dir + "/comm", kMaxSmallProcFile);
    if (!comm) return std::unexpected(comm.error());
    info.raw_comm = std::move(*comm);
    if (!info.raw_comm.empty() && info.raw_comm.back() == '\n') info.raw_comm.pop_back();
    info.comm = shown_text(info.raw_comm, kMaxShownName);

    if (with_cmdline) {
        auto argv = cmdline(pid);
        if (!argv) return std::unexpected(argv.error());
        info.argv = std::move(*argv);
    }

    auto start = start_time(pid);
    if (!start) return std::unexpected(start.error());
    info.start_time = *start;

    if (auto ok = reread_uid_and_cgroup(info); !ok) return std::unexpected(ok.error());

    info.exe = read_link_or_empty(dir + "/exe");
    strip_deleted(info.exe);
    return info;
}

Result<void> ProcReader::reread_uid_and_cgroup(ProcessInfo& info) const {
    const std::string dir = root_ + "/" + std::to_string(info.pid);
    auto status = read_file(dir + "/status", kMaxSmallProcFile);
    if (!status) return std::unexpected(status.error());
    auto uids = parse_uids(*status, dir + "/status");
    if (!uids) return std::unexpected(uids.error());
    std::tie(info.uid, info.euid) = *uids;
    // A kernel without cgroups, or a fixture tree without the file: no cgroup to match.
    auto cgroup = read_file(dir + "/cgroup", kMaxSmallProcFile);
    info.cgroup = cgroup ? parse_cgroup(*cgroup) : std::string();
    return {};
}

Result<std::vector<MapEntry>> ProcReader::maps(int pid) const {
    const std::string path = root_ + "/" + std::to_string(pid) + "/maps";
    auto text = read_file(path);
    if (!text) return std::unexpected(text.error());
    auto parsed = parse_maps(*text);
    if (!parsed) return fail(path + ": " + parsed.error().message);
    return parsed;
}

Result<uint64_t> ProcReader::start_time(int pid) const {
    const std::string path = root_ + "/" + std::to_string(pid) + "/stat";
    auto text = read_file(path);
    if (!text) return std::unexpected(text.error());
    return parse_start_time(*text, path);
}

bool ProcReader::has_memory(int pid) const {
    char target[16];  // any length: only whether it reads
    const std::string dir = root_ + "/" + std::to_string(pid);
    if (readlink((dir + "/exe").c_str(), target, sizeof(target)) >= 0) return true;
    // The main thread may have exited while others run on: any thread with the memory.
    DIR* tasks = opendir((dir + "/task").c_str());
    if (!tasks) return false;
    bool found = false;
    int looked = 0;
    while (dirent* e = readdir(tasks)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        if (++looked > 256) {  // a process of more threads than that: assume it lives
            found = true;
            break;
        }
        const std::string exe = dir + "/task/" + e->d_name + "/exe";
        if (readlink(exe.c_str(), target, sizeof(target)) >= 0) {
            found = true;
            break;
        }
    }
    closedir(tasks);
    return found;
}

Result<ProcMemory> ProcReader::memory(int pid) const {
    auto text = read_file(root_ + "/" + std::to_string(pid) + "/status");
    if (!text) return std::unexpected(text.error());
    return parse_status_memory(*text);
}

Result<uint32_t> ProcReader::uid(int pid) const {
    const std::string path = root_ + "/" + std::to_string(pid) + "/status";
    auto status = read_file(path, kMaxSmallProcFile);
    if (!status) return std::unexpected(status.error());
    auto uids = parse_uids(*status, path);
    if (!uids) return std::unexpected(uids.error());
    return uids->first;
}

Result<std::vector<bool>> ProcReader::pages_held(int pid,
                                                 const std::vector<uint64_t>& pages) const {
    const std::string path = root_ + "/" + std::to_string(pid) + "/pagemap";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_errno("opening " + path, errno);
    const uint64_t page_size = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    std::vector<bool> held(pages.size(), false);
    for (size_t i = 0; i < pages.size(); i++) {
        uint64_t entry = 0;
        off_t at = static_cast<off_t>(pages[i] / page_size * sizeof(entry));
        if (::pread(fd, &entry, sizeof(entry), at) == sizeof(entry))
            held[i] = pagemap_entry_held(entry);
    }
    ::close(fd);
    return held;
}

std::string cgroup_unit(std::string_view cgroup) {
    while (!cgroup.empty()) {
        size_t begin = cgroup.find_first_not_of('/');
        if (begin == std::string_view::npos) break;
        cgroup.remove_prefix(begin);
        std::string_view name = cgroup.substr(0, cgroup.find('/'));
        cgroup.remove_prefix(name.size());
        if (name.ends_with(".slice")) continue;
        return is_unit_name(name) ? std::string(name) : std::string();
    }
    return {};
}

std::string cgroup_container_id(std::string_view cgroup) {
    // The last component with a run of exactly 64 hex digits: "docker-ID.scope",
    // "cri-containerd-ID.scope", "crio-ID.scope", "libpod-ID.scope", or "ID" alone.
    std::string id;
    while (!cgroup.empty()) {
        size_t slash = cgroup.find('/');
        std::string_view name = cgroup.substr(0, slash);
        cgroup.remove_prefix(slash == std::string_view::npos ? cgroup.size() : slash + 1);
        for (size_t i = 0; i + 64 <= name.size();) {
            size_t run = 0;
            while (i + run < name.size() && is_hex(name[i + run])) run++;
            if (run == 64) id = std::string(name.substr(i, 64));
            i += run + 1;
        }
    }
    return id;
}

std::string unit_label(std::string_view cgroup) {
    std::string id = cgroup_container_id(cgroup);
    if (!id.empty()) return id.substr(0, 12);
    return shown_text(cgroup_unit(cgroup), kMaxShownName);
}

bool glob_matches(std::string_view pattern, std::string_view text) {
    // On a mismatch, only the last `*` takes one more character: what an earlier star would
    // take, the last one can take too, so this finds every match the full search would.
    size_t p = 0, t = 0;
    size_t star_p = std::string_view::npos, star_t = 0;
    while (t < text.size()) {
        if (p < pattern.size()) {
            const char pc = pattern[p];
            if (pc == '*') {
                star_p = ++p;
                star_t = t;
                continue;
            }
            size_t length = 1;
            bool ok = false;
            if (pc == '?') {
                ok = true;
            } else if (pc == '\\' && p + 1 < pattern.size()) {
                length = 2;
                ok = text[t] == pattern[p + 1];
            } else if (size_t set = pc == '[' ? glob_set(pattern, p, text[t], ok) : 0) {
                length = set;
            } else {
                ok = text[t] == pc;
            }
            if (ok) {
                p += length;
                t++;
                continue;
            }
        }
        if (star_p == std::string_view::npos) return false;
        p = star_p;
        t = ++star_t;
    }
    while (p < pattern.size() && pattern[p] == '*') p++;
    return p == pattern.size();
}

namespace {

bool has_cmdline(const Match& match) {
    return match.cmdline || match.cmdline_regex;
}

// Every criterion but the command line.
bool matches_but_cmdline(const Match& match, const ProcessInfo& info) {
    const bool any_set = match.comm || match.exe || match.pid || has_cmdline(match) || match.uid ||
                         match.cgroup || match.unit;
    if (!any_set) return false;
    if (match.pid && *match.pid != info.pid) return false;
    if (match.uid && (info.uid != *match.uid || info.euid != *match.uid)) return false;
    if (match.comm && *match.comm != info.raw_comm) return false;
    if (match.exe && *match.exe != info.exe) return false;
    if (match.cgroup && (info.cgroup.empty() || !glob_matches(*match.cgroup, info.cgroup)))
        return false;
    if (match.unit) {
        const std::string unit = cgroup_unit(info.cgroup);
        if (unit.empty() || !glob_matches(*match.unit, unit)) return false;
    }
    return true;
}

}  // namespace

bool matches(const Match& match, const ProcessInfo& info) {
    // The cheap criteria first: the command line is matched last, and only then.
    if (!matches_but_cmdline(match, info)) return false;
    if (has_cmdline(match) && !cmdline_matches(match, info)) return false;
    return true;
}

bool needs_cmdline(const std::vector<WatchRule>& rules, const ProcessInfo& info) {
    for (const auto& rule : rules)
        if (matches_but_cmdline(rule.match, info)) return has_cmdline(rule.match);
    return false;
}

const WatchRule* matching_rule(const std::vector<WatchRule>& rules, const ProcessInfo& info) {
    for (const auto& rule : rules) {
        if (matches(rule.match, info)) return &rule;
    }
    return nullptr;
}

Result<MapEntry> find_allocator_mapping(const std::vector<MapEntry>& maps,
                                        const Allocator& allocator, const std::string& exe) {
    const std::string& lib = allocator.library;
    auto first_file = [&](auto&& pred) -> const MapEntry* {
        for (const auto& m : maps) {
            if (m.path.starts_with('/') && pred(m)) return &m;
        }
        return nullptr;
    };

    const MapEntry* found = nullptr;
    std::string tried;
    if (lib == "libc") {
        found = first_file([](const MapEntry& m) { return is_libc_basename(basename_of(m.path)); });
        tried = "libc.so.6, libc-2.*.so, libc.so, ld-musl-*.so.1";
    } else if (lib == "exe") {
        if (!exe.empty()) found = first_file([&](const MapEntry& m) { return m.path == exe; });
        tried = exe.empty() ? "the executable (its path is unknown)" : exe;
    } else if (lib.find('/') != std::string::npos) {
        found = first_file([&](const MapEntry& m) { return m.path == lib; });
        tried = lib;
    } else {
        found = first_file([&](const MapEntry& m) {
            std::string_view base = basename_of(m.path);
            return base == lib ||
                   (base.starts_with(lib) && base.size() > lib.size() && base[lib.size()] == '.');
        });
        tried = lib + ", " + lib + ".*";
    }
    if (found == nullptr) {
        return fail("library " + lib + " is not mapped by the process (looked for " + tried + ")");
    }
    return *found;
}

}  // namespace leakwatch
