#include "config/config.h"

#include <fcntl.h>
#include <pwd.h>
#include <re2/re2.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <string_view>

namespace leakwatch {
namespace {

// Bigger than any sane watchlist; stops a wrong path (a log, a core file) from being slurped.
constexpr size_t kMaxConfigBytes = 16 << 20;

// The Linux ceiling for pid_max (PID_MAX_LIMIT on 64-bit): no process id is larger.
constexpr int kMaxPid = 4194304;

// Comm is TASK_COMM_LEN (16) including the terminating NUL.
constexpr size_t kMaxCommLength = 15;

constexpr Duration kMinInterval{100};

// "kernel" is the `watch` label of kernel allocation stacks, so a rule may not take it.
constexpr std::string_view kReservedRuleName = "kernel";

std::string quoted(std::string_view text) {
    std::string out = "\"";
    for (char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    out += '"';
    return out;
}

std::string_view trim(std::string_view text) {
    auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    return text;
}

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
    return std::isalpha(static_cast<unsigned char>(c)) != 0;
}

// Whole-string unsigned decimal; rejects signs, spaces, hex and exponents so that
// "1e3" or "0x10" cannot silently mean something the operator did not write.
std::optional<uint64_t> parse_uint(std::string_view text) {
    if (text.empty() || !std::all_of(text.begin(), text.end(), is_digit)) return std::nullopt;
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

// A decimal number with an optional fraction, scaled exactly (no floating point), so
// "1.5MiB" is 1572864 and not 1572863.9999.
struct Decimal {
    unsigned __int128 whole = 0;
    unsigned __int128 fraction = 0;  // the digits after the point, as an integer
    unsigned __int128 scale = 1;     // 10^(number of fraction digits)
    bool overflow = false;
};

// Reads digits[.digits] from the front of `text`; returns the number of characters used.
size_t read_decimal(std::string_view text, Decimal& out) {
    // Above any uint64_t result, yet small enough that multiplying by the largest unit (2^40)
    // cannot overflow 128 bits; larger inputs only need to be known as too large.
    constexpr unsigned __int128 kCap =
        static_cast<unsigned __int128>(10000000000ULL) * 10000000000ULL;
    size_t i = 0;
    while (i < text.size() && is_digit(text[i])) {
        out.whole = out.whole * 10 + static_cast<unsigned>(text[i] - '0');
        if (out.whole > kCap) out.overflow = true, out.whole = kCap;
        ++i;
    }
    if (i < text.size() && text[i] == '.') {
        size_t start = ++i;
        while (i < text.size() && is_digit(text[i])) {
            // Digits beyond 18 are worth far less than a byte or a millisecond; drop them.
            if (i - start < 18) {
                out.fraction = out.fraction * 10 + static_cast<unsigned>(text[i] - '0');
                out.scale *= 10;
            }
            ++i;
        }
        if (i == start) return 0;  // "5." or a lone "." is a typo, not a number
    }
    return i;
}

struct Unit {
    std::string_view name;
    uint64_t multiplier;
};

constexpr uint64_t kKiB = 1ULL << 10;
constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kGiB = 1ULL << 30;
constexpr uint64_t kTiB = 1ULL << 40;

constexpr std::array kSizeUnits{
    Unit{"B", 1},
    Unit{"KiB", kKiB},
    Unit{"MiB", kMiB},
    Unit{"GiB", kGiB},
    Unit{"TiB", kTiB},
    Unit{"Ki", kKiB},
    Unit{"Mi", kMiB},
    Unit{"Gi", kGiB},
    Unit{"Ti", kTiB},
    // Bare K/M/G/T are taken as binary: that is what people mean for memory.
    Unit{"K", kKiB},
    Unit{"M", kMiB},
    Unit{"G", kGiB},
    Unit{"T", kTiB},
    Unit{"kB", 1000},
    Unit{"KB", 1000},
    Unit{"MB", 1000 * 1000},
    Unit{"GB", 1000 * 1000 * 1000},
    Unit{"TB", 1000ULL * 1000 * 1000 * 1000},
};

constexpr std::array kDurationUnits{
    Unit{"ms", 1},
    Unit{"s", 1000},
    Unit{"m", 60 * 1000},
    Unit{"h", 60 * 60 * 1000},
    Unit{"d", 24 * 60 * 60 * 1000},
};

template <size_t N>
std::optional<uint64_t> find_unit(const std::array<Unit, N>& units, std::string_view name) {
    for (const auto& unit : units) {
        if (unit.name == name) return unit.multiplier;
    }
    return std::nullopt;
}

// Scales value*multiplier, truncating the fraction; nullopt when it does not fit in `max`.
std::optional<unsigned __int128> scaled(const Decimal& value, uint64_t multiplier,
                                        unsigned __int128 max) {
    if (value.overflow) return std::nullopt;
    unsigned __int128 total = value.whole * multiplier + value.fraction * multiplier / value.scale;
    if (total > max) return std::nullopt;
    return total;
}

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t above = row[j];
            bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                        std::tolower(static_cast<unsigned char>(b[j - 1]));
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (same ? 0 : 1)});
            diagonal = above;
        }
    }
    return row[b.size()];
}

std::string type_name(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Null:
            return "nothing";
        case YAML::NodeType::Scalar:
            return quoted(node.Scalar());
        case YAML::NodeType::Sequence:
            return "a sequence";
        case YAML::NodeType::Map:
            return "a mapping";
        default:
            return "an undefined value";
    }
}

using KnownKeys = std::span<const std::string_view>;

constexpr std::array<std::string_view, 10> kTopKeys{
    "listen_address", "expose_kernel_addresses", "interval",   "log_level", "kernel", "watch",
    "limits",         "leak_detection",          "escalation", "python"};
constexpr std::array<std::string_view, 1> kPythonKeys{"max_frames"};
// The BPF side's bound (bpf/leakwatch.h, LW_PY_MAX_FRAMES).
constexpr uint64_t kMaxPythonFrames = 32;
constexpr std::array<std::string_view, 4> kEscalationKeys{"duration", "max_processes",
                                                          "sample_bytes", "watch_sample_bytes"};
constexpr std::array<std::string_view, 6> kDetectionKeys{"enabled",    "window",     "min_rate",
                                                         "min_growth", "confidence", "max_series"};
constexpr std::array<std::string_view, 6> kLogLevels{"trace", "debug", "info",
                                                     "warn",  "error", "critical"};
constexpr std::array<std::string_view, 6> kKernelKeys{
    "enabled", "kinds", "min_size", "max_size", "tracking", "include_movable_pages"};
constexpr std::array<std::string_view, 10> kRuleKeys{
    "name",    "match",    "allocator",    "min_size", "max_size",
    "min_age", "tracking", "sample_bytes", "unwind",   "jvm_attach"};
constexpr std::array<std::string_view, 7> kMatchKeys{"comm", "exe",    "pid", "cmdline",
                                                     "uid",  "cgroup", "unit"};
constexpr std::string_view kMatchKeyList = "comm, exe, pid, cmdline, uid, cgroup, unit";
// The largest uid: (uid_t)-1 means "no user" to the kernel.
constexpr uint64_t kMaxUid = 4294967294u;
constexpr std::array<std::string_view, 2> kAllocatorKeys{"library", "symbol_prefix"};
constexpr std::array<std::string_view, 15> kLimitKeys{"live_allocations",
                                                      "stacks",
                                                      "stack_totals",
                                                      "processes",
                                                      "threads",
                                                      "top_stacks",
                                                      "kernel_live_allocations",
                                                      "kernel_stacks",
                                                      "kernel_totals",
                                                      "top_processes",
                                                      "symbol_files",
                                                      "symbol_cache_entries",
                                                      "process_share",
                                                      "growth_pages",
                                                      "file_size"};
// A file smaller than this holds no useful ELF; larger than this, no sane one.
constexpr uint64_t kMinFileSize = 1 << 20;
constexpr uint64_t kMaxFileSize = 64ull << 30;

// One key: value pair of a mapping, with where it sits, for messages.
struct Entry {
    std::string key;
    std::string path;  // e.g. watch[1].match.comm
    YAML::Node key_node;
    YAML::Node value;
};

// Walks one YAML document and fills a Config; every error names source:line: path.
class Parser {
  public:
    explicit Parser(const std::string& source) : source_(source) {}

    Result<Config> parse(const YAML::Node& root) {
        Config config;
        config.source = source_;
        if (root.IsNull()) return config;  // an empty file: all defaults, watch nothing
        if (!root.IsMap()) {
            return error(line_of(root), "(top level)",
                         "expected a mapping of keys, got " + type_name(root));
        }
        auto entries = entries_of(root, "", kTopKeys);
        if (!entries) return std::unexpected(entries.error());
        for (const Entry& entry : *entries) {
            Result<void> ok;
            if (entry.key == "listen_address") {
                ok = parse_listen_address(entry, config.listen_address);
            } else if (entry.key == "expose_kernel_addresses") {
                bool value = false;
                if (!entry.value.IsScalar() || !YAML::convert<bool>::decode(entry.value, value))
                    return wrong_type(entry, "true or false");
                config.expose_kernel_addresses = value;
            } else if (entry.key == "interval") {
                ok = parse_interval(entry, config.interval);
            } else if (entry.key == "log_level") {
                auto text = string_of(entry);
                if (!text) return std::unexpected(text.error());
                if (std::find(kLogLevels.begin(), kLogLevels.end(), *text) == kLogLevels.end())
                    return error(entry, quoted(*text) +
                                            " is not a log level (trace, debug, info, warn, "
                                            "error, critical)");
                config.log_level = *text;
            } else if (entry.key == "kernel") {
                ok = parse_kernel(entry, config.kernel);
            } else if (entry.key == "watch") {
                ok = parse_watch(entry, config.watch);
            } else if (entry.key == "limits") {
                ok = parse_limits(entry, config.limits);
            } else if (entry.key == "leak_detection") {
                detection_line_ = line_of(entry);
                ok = parse_detection(entry, config.leak_detection);
            } else if (entry.key == "escalation") {
                ok = parse_escalation(entry, config.escalation);
            } else if (entry.key == "python") {
                ok = parse_python(entry, config.python);
            }
            if (!ok) return std::unexpected(ok.error());
        }
        // A rule that does not set sample_bytes: its mode's default.
        for (size_t i = 0; i < config.watch.size(); i++) {
            WatchRule& rule = config.watch[i];
            if (explicit_sample_bytes_.count(i)) continue;
            if (rule.tracking == WatchRule::Tracking::kSampled)
                rule.sample_bytes = kSampledDefault;
            else if (rule.tracking == WatchRule::Tracking::kEscalate)
                rule.sample_bytes = config.escalation.sample_bytes;
        }
        // The detector needs 16 samples in a window to judge it (docs/detection.md).
        if (config.leak_detection.enabled && config.leak_detection.window < config.interval * 16) {
            return error(detection_line_, "leak_detection.window",
                         "the window (" + std::to_string(config.leak_detection.window.count()) +
                             "ms) must cover at least 16 intervals (" +
                             std::to_string((config.interval * 16).count()) + "ms)");
        }
        return config;
    }

  private:
    static int line_of(const YAML::Node& node) {
        return node.Mark().is_null() ? 0 : node.Mark().line + 1;
    }

    // A scalar's own line is exact; a null value's mark points past it and a block
    // collection's mark at its first child, so those report the key's line instead.
    static int line_of(const Entry& entry) {
        if (entry.value.IsScalar()) return line_of(entry.value);
        return line_of(entry.key_node);
    }

    std::unexpected<Error> error(int line, const std::string& path,
                                 const std::string& message) const {
        std::string where = source_;
        if (line > 0) where += ":" + std::to_string(line);
        return fail(where + ": " + path + ": " + message);
    }

    std::unexpected<Error> error(const Entry& entry, const std::string& message) const {
        return error(line_of(entry), entry.path, message);
    }

    std::unexpected<Error> wrong_type(const Entry& entry, std::string_view expected) const {
        return error(entry,
                     "expected " + std::string(expected) + ", got " + type_name(entry.value));
    }

    // The pairs of a mapping, after checking that every key is a known, unique string.
    Result<std::vector<Entry>> entries_of(const YAML::Node& map, const std::string& prefix,
                                          KnownKeys known) const {
        std::vector<Entry> entries;
        std::map<std::string, int> seen;  // key -> line, to name both places of a duplicate
        for (auto it = map.begin(); it != map.end(); ++it) {
            // Copies, not references: `it->` yields a temporary proxy that dies with the
            // statement (a Node is a cheap handle to the document).
            YAML::Node key_node = it->first;
            YAML::Node value = it->second;
            int line = line_of(key_node);
            std::string where = prefix.empty() ? "(top level)" : prefix;
            if (!key_node.IsScalar()) {
                return error(line, where, "keys must be plain names, got " + type_name(key_node));
            }
            std::string key = key_node.Scalar();
            std::string path = prefix.empty() ? key : prefix + "." + key;
            if (std::find(known.begin(), known.end(), key) == known.end()) {
                return error(line, path, unknown_key_message(key, known));
            }
            auto [previous, inserted] = seen.emplace(key, line);
            if (!inserted) {
                return error(
                    line, path,
                    "duplicate key (first set at line " + std::to_string(previous->second) + ")");
            }
            entries.push_back(Entry{key, path, key_node, value});
        }
        return entries;
    }

    static std::string unknown_key_message(const std::string& key, KnownKeys known) {
        std::string message = "unknown key";
        std::string_view closest;
        size_t best = 3;  // only suggest what is within two edits: a typo, not a guess
        for (std::string_view candidate : known) {
            size_t distance = edit_distance(key, candidate);
            if (distance < best) best = distance, closest = candidate;
        }
        if (!closest.empty()) message += " (did you mean " + std::string(closest) + "?)";
        message += "; known keys:";
        for (size_t i = 0; i < known.size(); ++i) {
            message += (i == 0 ? " " : ", ") + std::string(known[i]);
        }
        return message;
    }

    Result<std::string> string_of(const Entry& entry) const {
        if (!entry.value.IsScalar()) return wrong_type(entry, "a string");
        return entry.value.Scalar();
    }

    Result<std::vector<Entry>> mapping_of(const Entry& entry, KnownKeys known) const {
        if (entry.value.IsNull()) return std::vector<Entry>{};
        if (!entry.value.IsMap()) return wrong_type(entry, "a mapping");
        return entries_of(entry.value, entry.path, known);
    }

    Result<uint64_t> size_of(const Entry& entry) const {
        if (!entry.value.IsScalar()) return wrong_type(entry, "a size such as 64KiB");
        auto size = parse_size(entry.value.Scalar());
        if (!size) return error(entry, size.error().message);
        return *size;
    }

    Result<Duration> duration_of(const Entry& entry) const {
        if (!entry.value.IsScalar()) return wrong_type(entry, "a duration such as 5s");
        auto duration = parse_duration(entry.value.Scalar());
        if (!duration) return error(entry, duration.error().message);
        return *duration;
    }

    Result<uint64_t> count_of(const Entry& entry, uint64_t max) const {
        if (!entry.value.IsScalar()) return wrong_type(entry, "a positive integer");
        std::string_view text = entry.value.Scalar();
        if (text.starts_with('-')) {
            return error(entry, quoted(text) + " is negative; expected a positive integer");
        }
        auto value = parse_uint(text);
        if (!value) return error(entry, quoted(text) + " is not a positive integer");
        if (*value == 0) return error(entry, "must be at least 1");
        if (*value > max) {
            return error(
                entry, std::to_string(*value) + " is above the maximum of " + std::to_string(max));
        }
        return *value;
    }

    // A share such as "25%": 1 to 100 percent.
    Result<uint32_t> percent_of(const Entry& entry) const {
        const std::string usage = " (a share such as 25%: 1% to 100%)";
        if (!entry.value.IsScalar()) return wrong_type(entry, "a share such as 25%");
        std::string_view text = trim(entry.value.Scalar());
        if (!text.ends_with('%'))
            return error(entry, quoted(text) + " is not a percentage" + usage);
        auto value = parse_uint(trim(text.substr(0, text.size() - 1)));
        if (!value || *value < 1 || *value > 100)
            return error(entry, quoted(text) + " is out of range" + usage);
        return static_cast<uint32_t>(*value);
    }

    Result<void> parse_listen_address(const Entry& entry, std::string& out) const {
        auto text = string_of(entry);
        if (!text) return std::unexpected(text.error());
        const std::string usage = " (expected HOST:PORT or :PORT, e.g. :10071)";
        size_t colon = text->rfind(':');
        if (colon == std::string::npos) return error(entry, quoted(*text) + " has no port" + usage);
        std::string_view host = std::string_view(*text).substr(0, colon);
        std::string_view port = std::string_view(*text).substr(colon + 1);
        // An IPv6 host needs brackets, otherwise its colons cannot be told from the port's.
        bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
        if (!bracketed && host.find_first_of(":[] \t") != std::string_view::npos) {
            return error(entry, quoted(*text) + " has a malformed host" + usage +
                                    "; write IPv6 addresses as [::1]:10071");
        }
        auto number = parse_uint(port);
        if (!number) return error(entry, "port " + quoted(port) + " is not a number" + usage);
        if (*number < 1 || *number > 65535) {
            return error(entry, "port " + std::string(port) + " is out of range 1..65535");
        }
        out = *text;
        return {};
    }

    Result<void> parse_interval(const Entry& entry, Duration& out) const {
        auto interval = duration_of(entry);
        if (!interval) return std::unexpected(interval.error());
        // Shorter periods spend more time reading BPF maps than the samples are worth.
        if (*interval < kMinInterval) {
            return error(entry, quoted(entry.value.Scalar()) + " is shorter than the minimum " +
                                    std::to_string(kMinInterval.count()) + "ms");
        }
        out = *interval;
        return {};
    }

    Result<WatchRule::Tracking> tracking_of(const Entry& entry, bool kernel) const {
        const std::string value = entry.value.IsScalar() ? entry.value.Scalar() : "";
        if (value == "escalate") return WatchRule::Tracking::kEscalate;
        if (value == "full") return WatchRule::Tracking::kFull;
        if (value == "sampled" && !kernel) return WatchRule::Tracking::kSampled;
        return error(entry, std::string("tracking must be ") +
                                (kernel ? "escalate or full" : "escalate, sampled or full") +
                                ", not " + quoted(value));
    }

    Result<void> parse_python(const Entry& entry, PythonFrames& p) const {
        auto entries = mapping_of(entry, kPythonKeys);
        if (!entries) return std::unexpected(entries.error());
        for (const Entry& field : *entries) {
            if (field.key == "max_frames") {
                // 0 reads none: the processes keep their native frames.
                if (field.value.IsScalar() && field.value.Scalar() == "0") {
                    p.max_frames = 0;
                    continue;
                }
                auto n = count_of(field, kMaxPythonFrames);
                if (!n) return std::unexpected(n.error());
                p.max_frames = static_cast<uint32_t>(*n);
            }
        }
        return {};
    }

    Result<void> parse_escalation(const Entry& entry, Escalation& e) const {
        auto entries = mapping_of(entry, kEscalationKeys);
        if (!entries) return std::unexpected(entries.error());
        for (const Entry& field : *entries) {
            Result<void> ok;
            if (field.key == "duration") {
                ok = assign(duration_of(field), e.duration);
                if (ok && e.duration < kMinInterval)
                    return error(field, quoted(field.value.Scalar()) + " is too short");
            } else if (field.key == "max_processes") {
                auto n = count_of(field, 1024);
                if (!n) return std::unexpected(n.error());
                e.max_processes = static_cast<uint32_t>(*n);
            } else if (field.key == "sample_bytes") {
                ok = assign(size_of(field), e.sample_bytes);
                if (ok && e.sample_bytes > kMaxSampleBytes)
                    return error(field, "sample_bytes " + quoted(field.value.Scalar()) +
                                            " is larger than 64MiB; use 0 to record every "
                                            "allocation");
            } else if (field.key == "watch_sample_bytes") {
                ok = assign(size_of(field), e.watch_sample_bytes);
                // One page in this many bytes is sampled: at least one page, at most 1 GiB.
                if (ok && (e.watch_sample_bytes == 0 || e.watch_sample_bytes > (1ull << 30)))
                    return error(field, "watch_sample_bytes " + quoted(field.value.Scalar()) +
                                            " must be from 1 byte (every page) to 1GiB");
            }
            if (!ok) return std::unexpected(ok.error());
        }
        return {};
    }

    Result<void> parse_kernel(const Entry& entry, KernelConfig& kernel) const {
        auto entries = mapping_of(entry, kKernelKeys);
        if (!entries) return std::unexpected(entries.error());
        const Entry* min_size = nullptr;
        const Entry* max_size = nullptr;
        for (const Entry& field : *entries) {
            Result<void> ok;
            if (field.key == "enabled" || field.key == "include_movable_pages") {
                bool value = false;
                if (!field.value.IsScalar() || !YAML::convert<bool>::decode(field.value, value))
                    return wrong_type(field, "true or false");
                (field.key == "enabled" ? kernel.enabled : kernel.include_movable_pages) = value;
            } else if (field.key == "kinds") {
                ok = parse_kinds(field, kernel.kinds);
            } else if (field.key == "tracking") {
                ok = assign(tracking_of(field, true), kernel.tracking);
            } else if (field.key == "min_size") {
                min_size = &field;
                ok = assign(size_of(field), kernel.min_size);
            } else if (field.key == "max_size") {
                max_size = &field;
                ok = assign(size_of(field), kernel.max_size);
            }
            if (!ok) return std::unexpected(ok.error());
        }
        if (min_size && max_size && kernel.min_size > kernel.max_size) {
            return error(*min_size, "inverted range: min_size " + quoted(min_size->value.Scalar()) +
                                        " is larger than max_size " +
                                        quoted(max_size->value.Scalar()) + " (line " +
                                        std::to_string(line_of(*max_size)) + ")");
        }
        return {};
    }

    Result<void> parse_detection(const Entry& entry, LeakDetection& d) const {
        auto entries = mapping_of(entry, kDetectionKeys);
        if (!entries) return std::unexpected(entries.error());
        for (const Entry& field : *entries) {
            Result<void> ok;
            if (field.key == "enabled") {
                bool value = false;
                if (!field.value.IsScalar() || !YAML::convert<bool>::decode(field.value, value))
                    return wrong_type(field, "true or false");
                d.enabled = value;
            } else if (field.key == "window") {
                ok = assign(duration_of(field), d.window);
                if (ok && d.window < std::chrono::seconds(10))
                    return error(field, "the window must be at least 10s");
            } else if (field.key == "min_rate") {
                // A size per second: "1KiB" means 1 KiB/s.
                uint64_t rate = 0;
                ok = assign(size_of(field), rate);
                d.min_rate = static_cast<double>(rate);
            } else if (field.key == "min_growth") {
                ok = assign(size_of(field), d.min_growth);
            } else if (field.key == "confidence") {
                double c = 0;
                if (!field.value.IsScalar() || !YAML::convert<double>::decode(field.value, c))
                    return wrong_type(field, "a number between 0.5 and 0.9999");
                if (!(c >= 0.5 && c <= 0.9999))
                    return error(field,
                                 quoted(field.value.Scalar()) + " is not between 0.5 and 0.9999");
                d.confidence = c;
            } else if (field.key == "max_series") {
                auto n = count_of(field, 1000000);
                if (!n) return std::unexpected(n.error());
                d.max_series = static_cast<uint32_t>(*n);
            }
            if (!ok) return std::unexpected(ok.error());
        }
        return {};
    }

    Result<void> parse_kinds(const Entry& entry,
                             std::array<bool, kKernelKinds.size()>& kinds) const {
        if (!entry.value.IsSequence())
            return wrong_type(entry, "a list of kinds (kmalloc, kmem_cache, page, percpu)");
        kinds.fill(false);
        for (const YAML::Node& item : entry.value) {
            std::string name = item.IsScalar() ? item.Scalar() : std::string();
            auto it = std::find(kKernelKinds.begin(), kKernelKinds.end(), name);
            if (it == kKernelKinds.end()) {
                return error(item.Mark().line + 1, entry.path,
                             "unknown kind " + quoted(name) +
                                 " (the kinds are kmalloc, kmem_cache, page, percpu)");
            }
            kinds[static_cast<size_t>(it - kKernelKinds.begin())] = true;
        }
        return {};
    }

    Result<void> parse_watch(const Entry& entry, std::vector<WatchRule>& rules) {
        if (entry.value.IsNull()) return {};  // "watch:" with nothing under it
        if (!entry.value.IsSequence()) return wrong_type(entry, "a sequence of rules");
        std::map<std::string, int> names;  // name -> line of its rule
        size_t index = 0;
        for (const YAML::Node& node : entry.value) {
            std::string path = "watch[" + std::to_string(index++) + "]";
            int name_line = 0;
            // A null item ("- " alone) carries the mark of the token after it; the
            // index in the path still pins it down, so point at the watch key instead.
            int line = node.IsNull() ? line_of(entry.key_node) : line_of(node);
            bool explicit_sample_bytes = false;
            auto rule = parse_rule(node, path, line, name_line, explicit_sample_bytes);
            if (!rule) return std::unexpected(rule.error());
            if (explicit_sample_bytes) explicit_sample_bytes_.insert(rules.size());
            auto [previous, inserted] = names.emplace(rule->name, name_line);
            if (!inserted) {
                return error(name_line, path + ".name",
                             "duplicate rule name " + quoted(rule->name) + " (also used at line " +
                                 std::to_string(previous->second) + ")");
            }
            rules.push_back(std::move(*rule));
        }
        return {};
    }

    Result<WatchRule> parse_rule(const YAML::Node& node, const std::string& path, int line,
                                 int& name_line, bool& explicit_sample_bytes) const {
        WatchRule rule;
        rule.line = line;
        if (!node.IsMap()) {
            return error(rule.line, path,
                         "expected a rule (a mapping with name and match), got " + type_name(node));
        }
        auto entries = entries_of(node, path, kRuleKeys);
        if (!entries) return std::unexpected(entries.error());
        bool has_name = false;
        bool has_match = false;
        const Entry* sample_bytes = nullptr;
        const Entry* min_size = nullptr;
        const Entry* max_size = nullptr;
        for (const Entry& entry : *entries) {
            Result<void> ok;
            if (entry.key == "name") {
                has_name = true;
                name_line = line_of(entry);
                ok = parse_rule_name(entry, rule.name);
            } else if (entry.key == "match") {
                has_match = true;
                ok = parse_match(entry, rule.match);
            } else if (entry.key == "allocator") {
                ok = parse_allocator(entry, rule.allocator);
            } else if (entry.key == "min_size") {
                min_size = &entry;
                ok = assign(size_of(entry), rule.min_size);
            } else if (entry.key == "max_size") {
                max_size = &entry;
                ok = assign(size_of(entry), rule.max_size);
            } else if (entry.key == "min_age") {
                ok = assign(duration_of(entry), rule.min_age);
            } else if (entry.key == "tracking") {
                ok = assign(tracking_of(entry, false), rule.tracking);
            } else if (entry.key == "sample_bytes") {
                explicit_sample_bytes = true;
                sample_bytes = &entry;
                ok = assign(size_of(entry), rule.sample_bytes);
                if (ok && rule.sample_bytes > kMaxSampleBytes) {
                    return error(entry, "sample_bytes " + quoted(entry.value.Scalar()) +
                                            " is larger than 64MiB; use 0 to record every "
                                            "allocation");
                }
            } else if (entry.key == "jvm_attach") {
                if (!entry.value.IsScalar() ||
                    !YAML::convert<bool>::decode(entry.value, rule.jvm_attach))
                    return wrong_type(entry, "true or false");
            } else if (entry.key == "unwind") {
                const std::string value = entry.value.IsScalar() ? entry.value.Scalar() : "";
                if (value == "auto") {
                    rule.unwind = WatchRule::Unwind::kAuto;
                } else if (value == "frame-pointer") {
                    rule.unwind = WatchRule::Unwind::kFramePointer;
                } else if (value == "dwarf") {
                    rule.unwind = WatchRule::Unwind::kDwarf;
                } else {
                    return error(
                        entry, "unwind must be auto, frame-pointer or dwarf, not " + quoted(value));
                }
            }
            if (!ok) return std::unexpected(ok.error());
        }
        if (!has_name) return error(rule.line, path, "missing required key name");
        if (sample_bytes && rule.sample_bytes != 0 && rule.tracking == WatchRule::Tracking::kFull)
            return error(*sample_bytes,
                         "tracking: full records every allocation; sample_bytes is for "
                         "tracking: sampled or escalate");
        if (!has_match) {
            return error(rule.line, path,
                         "missing required key match (give at least one of " +
                             std::string(kMatchKeyList) + ")");
        }
        if (min_size && max_size && rule.min_size > rule.max_size) {
            return error(*min_size, "inverted range: min_size " + quoted(min_size->value.Scalar()) +
                                        " is larger than max_size " +
                                        quoted(max_size->value.Scalar()) + " (line " +
                                        std::to_string(line_of(*max_size)) + ")");
        }
        return rule;
    }

    template <class T, class U>
    static Result<void> assign(Result<T> value, U& out) {
        if (!value) return std::unexpected(value.error());
        out = *value;
        return {};
    }

    Result<void> parse_rule_name(const Entry& entry, std::string& out) const {
        auto name = string_of(entry);
        if (!name) return std::unexpected(name.error());
        if (name->empty()) return error(entry, "must not be empty");
        auto allowed = [](char c) {
            return is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-';
        };
        if (!std::all_of(name->begin(), name->end(), allowed)) {
            // It becomes a Prometheus label value and a log field: keep it plain.
            return error(entry,
                         quoted(*name) + " may contain only letters, digits, '_', '.' and '-'");
        }
        if (*name == kReservedRuleName) {
            return error(entry, quoted(*name) + " is reserved for kernel allocations");
        }
        out = *name;
        return {};
    }

    Result<void> parse_match(const Entry& entry, Match& match) const {
        if (!entry.value.IsMap()) {
            return wrong_type(entry, "a mapping of " + std::string(kMatchKeyList));
        }
        auto entries = entries_of(entry.value, entry.path, kMatchKeys);
        if (!entries) return std::unexpected(entries.error());
        if (entries->empty()) {
            // An empty match would watch every process: far too easy to do by accident.
            return error(entry, "give at least one of " + std::string(kMatchKeyList));
        }
        for (const Entry& field : *entries) {
            if (field.key == "pid") {
                auto pid = count_of(field, kMaxPid);
                if (!pid) return std::unexpected(pid.error());
                match.pid = static_cast<int>(*pid);
                continue;
            }
            auto text = string_of(field);
            if (!text) return std::unexpected(text.error());
            if (field.key == "comm") {
                if (text->empty() || text->size() > kMaxCommLength) {
                    return error(field, quoted(*text) +
                                            " must be 1 to 15 characters, as the "
                                            "kernel keeps only 15 of a comm");
                }
                match.comm = *text;
            } else if (field.key == "exe") {
                if (!text->starts_with('/')) {
                    return error(field, quoted(*text) + " is not an absolute path");
                }
                match.exe = *text;
            } else if (field.key == "cmdline") {
                if (text->empty()) return error(field, "must not be empty");
                auto compiled = compile_cmdline(*text);
                if (!compiled) return error(field, compiled.error().message);
                match.cmdline_regex = std::move(*compiled);
                match.cmdline = *text;
            } else if (field.key == "uid") {
                auto uid = uid_of(field, *text);
                if (!uid) return std::unexpected(uid.error());
                match.uid = *uid;
            } else if (field.key == "cgroup") {
                if (!text->starts_with('/') && !text->starts_with('*')) {
                    return error(field, quoted(*text) +
                                            " is not a cgroup path (it starts with /, e.g. "
                                            "/system.slice/*)");
                }
                match.cgroup = *text;
            } else if (field.key == "unit") {
                if (text->empty() || text->find('/') != std::string::npos) {
                    return error(field, quoted(*text) +
                                            " is not a unit name (e.g. nginx.service, or a glob "
                                            "such as app-*.service)");
                }
                match.unit = *text;
            }
        }
        return {};
    }

    // A uid as a number, or a user name looked up now (at load and at each reload).
    Result<uint32_t> uid_of(const Entry& field, const std::string& text) const {
        if (text.starts_with('-')) return error(field, quoted(text) + " is negative");
        if (auto number = parse_uint(text)) {
            if (*number > kMaxUid) {
                return error(field,
                             quoted(text) + " is above the largest uid " + std::to_string(kMaxUid));
            }
            return static_cast<uint32_t>(*number);
        }
        passwd entry{};
        passwd* found = nullptr;
        std::vector<char> buffer(16384);
        int err = getpwnam_r(text.c_str(), &entry, buffer.data(), buffer.size(), &found);
        if (err != 0 || found == nullptr) {
            return error(field, quoted(text) + " is neither a uid nor a known user name" +
                                    (err != 0 ? std::string(": ") + std::strerror(err) : ""));
        }
        return static_cast<uint32_t>(found->pw_uid);
    }

    Result<void> parse_allocator(const Entry& entry, Allocator& allocator) const {
        auto entries = mapping_of(entry, kAllocatorKeys);
        if (!entries) return std::unexpected(entries.error());
        for (const Entry& field : *entries) {
            auto text = string_of(field);
            if (!text) return std::unexpected(text.error());
            if (field.key == "library") {
                if (text->empty()) {
                    return error(field, "must not be empty (use libc, exe, or a library path)");
                }
                allocator.library = *text;
            } else if (field.key == "symbol_prefix") {
                auto symbol_char = [](char c) { return is_alpha(c) || is_digit(c) || c == '_'; };
                if (!std::all_of(text->begin(), text->end(), symbol_char)) {
                    return error(field, quoted(*text) +
                                            " is not a symbol prefix (use letters, "
                                            "digits and '_', e.g. je_)");
                }
                allocator.symbol_prefix = *text;
            }
        }
        return {};
    }

    Result<void> parse_limits(const Entry& entry, Limits& limits) const {
        auto entries = mapping_of(entry, kLimitKeys);
        if (!entries) return std::unexpected(entries.error());
        // Upper bounds keep a typo from asking the kernel for gigabytes of map memory.
        struct Bound {
            std::string_view key;
            uint32_t Limits::*field;
            uint64_t max;
        };
        static constexpr std::array kBounds{
            Bound{"live_allocations", &Limits::live_allocations, 16 << 20},
            Bound{"stacks", &Limits::stacks, 1 << 20},
            Bound{"stack_totals", &Limits::stack_totals, 16 << 20},
            Bound{"processes", &Limits::processes, 65536},
            Bound{"threads", &Limits::threads, 4 << 20},
            Bound{"top_stacks", &Limits::top_stacks, 1000},
            Bound{"kernel_live_allocations", &Limits::kernel_live_allocations, 16 << 20},
            Bound{"kernel_stacks", &Limits::kernel_stacks, 1 << 20},
            Bound{"kernel_totals", &Limits::kernel_totals, 16 << 20},
            Bound{"top_processes", &Limits::top_processes, 1000},
            Bound{"symbol_files", &Limits::symbol_files, 65536},
            Bound{"symbol_cache_entries", &Limits::symbol_cache_entries, 16 << 20},
            Bound{"growth_pages", &Limits::growth_pages, 16 << 20},
        };
        for (const Entry& field : *entries) {
            if (field.key == "file_size") {
                auto size = size_of(field);
                if (!size) return std::unexpected(size.error());
                if (*size < kMinFileSize || *size > kMaxFileSize) {
                    return error(field, quoted(field.value.Scalar()) + " is outside 1MiB..64GiB");
                }
                limits.file_size = *size;
                continue;
            }
            if (field.key == "process_share") {
                auto share = percent_of(field);
                if (!share) return std::unexpected(share.error());
                limits.process_share = *share;
                continue;
            }
            for (const Bound& bound : kBounds) {
                if (field.key != bound.key) continue;
                auto value = count_of(field, bound.max);
                if (!value) return std::unexpected(value.error());
                limits.*bound.field = static_cast<uint32_t>(*value);
            }
        }
        return {};
    }

    // The default sample_bytes of tracking: sampled.
    static constexpr uint64_t kSampledDefault = 512 * 1024;
    std::string source_;
    int detection_line_ = 1;
    std::set<size_t> explicit_sample_bytes_;  // rules (by index) that set sample_bytes
};

}  // namespace

Result<std::shared_ptr<const re2::RE2>> compile_cmdline(const std::string& pattern) {
    RE2::Options options;
    options.set_max_mem(kMaxRegexMemory);
    options.set_log_errors(false);
    auto re = std::make_shared<const RE2>(pattern, options);
    if (!re->ok()) {
        return fail(quoted(pattern) + " is not a valid regex (RE2 syntax): " + re->error());
    }
    return std::shared_ptr<const RE2>(std::move(re));
}

Result<uint64_t> parse_size(std::string_view text) {
    const std::string usage = " (use e.g. 64KiB, 1MiB)";
    std::string_view rest = trim(text);
    if (rest.starts_with('-')) return fail(quoted(text) + " is negative; a size must be >= 0");
    if (rest.starts_with('+')) rest.remove_prefix(1);
    Decimal number;
    size_t used = read_decimal(rest, number);
    if (used == 0) return fail(quoted(text) + " is not a size" + usage);
    std::string_view unit = trim(rest.substr(used));
    uint64_t multiplier = 1;
    if (!unit.empty()) {
        auto found = find_unit(kSizeUnits, unit);
        if (!found) return fail(quoted(text) + " is not a size" + usage);
        multiplier = *found;
    }
    if (multiplier == 1 && number.fraction != 0) {
        return fail(quoted(text) + " is not a whole number of bytes" + usage);
    }
    auto bytes = scaled(number, multiplier, std::numeric_limits<uint64_t>::max());
    if (!bytes) return fail(quoted(text) + " is too large (the maximum is 16EiB - 1)");
    return static_cast<uint64_t>(*bytes);
}

Result<Duration> parse_duration(std::string_view text) {
    const std::string usage = " (use e.g. 5s, 250ms, 1h30m)";
    std::string_view rest = trim(text);
    if (rest.starts_with('-')) return fail(quoted(text) + " is negative; a duration must be >= 0");
    if (rest.empty()) return fail("an empty string is not a duration" + usage);
    if (parse_uint(rest)) {
        // "5" could be seconds or milliseconds; refusing it beats guessing wrong.
        return fail(quoted(text) + " has no unit" + usage);
    }
    constexpr auto kMax = static_cast<unsigned __int128>(std::numeric_limits<Duration::rep>::max());
    unsigned __int128 total = 0;
    while (!rest.empty()) {
        Decimal number;
        size_t used = read_decimal(rest, number);
        if (used == 0) return fail(quoted(text) + " is not a duration" + usage);
        rest = trim(rest.substr(used));
        size_t unit_length = 0;
        while (unit_length < rest.size() && is_alpha(rest[unit_length])) ++unit_length;
        auto multiplier = find_unit(kDurationUnits, rest.substr(0, unit_length));
        if (!multiplier) return fail(quoted(text) + " is not a duration" + usage);
        rest = trim(rest.substr(unit_length));
        auto part = scaled(number, *multiplier, kMax);
        if (!part || (total += *part) > kMax) return fail(quoted(text) + " is too long");
    }
    return Duration(static_cast<Duration::rep>(total));
}

namespace {

// yaml-cpp 0.7 never returns from some malformed input (a file that is only ",": its parser
// emits null nodes for ever, allocating each). A first pass counts the parser's events and
// gives up past any number a text of that size can hold, before anything is built.
class BoundedEvents : public YAML::EventHandler {
  public:
    explicit BoundedEvents(size_t text_size) : max_(4 * text_size + 64) {}
    void OnDocumentStart(const YAML::Mark& mark) override { count(mark); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { count(mark); }
    void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { count(mark); }
    void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  const std::string&) override {
        count(mark);
    }
    void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {
        count(mark);
    }
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {
        count(mark);
    }
    void OnMapEnd() override {}

  private:
    void count(const YAML::Mark& mark) {
        if (++events_ > max_) throw YAML::ParserException(mark, "the parser does not end here");
    }
    size_t max_;
    size_t events_ = 0;
};

}  // namespace

Result<Config> parse_config(const std::string& yaml_text, const std::string& source) {
    std::vector<YAML::Node> documents;
    try {
        std::istringstream stream(yaml_text);
        YAML::Parser events(stream);
        BoundedEvents bound(yaml_text.size());
        while (events.HandleNextDocument(bound)) {
        }
        documents = YAML::LoadAll(yaml_text);
    } catch (const YAML::ParserException& e) {
        std::string where = source;
        if (!e.mark.is_null()) where += ":" + std::to_string(e.mark.line + 1);
        return fail(where + ": invalid YAML: " + e.msg);
    } catch (const YAML::Exception& e) {
        return fail(source + ": invalid YAML: " + e.what());
    }
    if (documents.size() > 1) {
        const YAML::Mark& mark = documents[1].Mark();
        std::string where = source;
        if (!mark.is_null()) where += ":" + std::to_string(mark.line + 1);
        return fail(where + ": a second YAML document; the config must be a single document");
    }
    Parser parser(source);
    try {
        return parser.parse(documents.empty() ? YAML::Node() : documents.front());
    } catch (const YAML::Exception& e) {
        // The walk avoids throwing accessors; this only keeps a yaml-cpp surprise from
        // escaping as an exception through a Result-returning API.
        return fail(source + ": " + e.what());
    }
}

Result<Config> load_config(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_errno("cannot open config file " + path, errno);
    std::string text;
    struct stat st {};
    int err = 0;
    if (::fstat(fd, &st) != 0) {
        err = errno;
    } else if (S_ISDIR(st.st_mode)) {
        err = EISDIR;  // open(2) succeeds on a directory; say why before read(2) does
    } else {
        char buffer[65536];
        for (;;) {
            ssize_t n = ::read(fd, buffer, sizeof buffer);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                err = errno;
                break;
            }
            if (n == 0) break;
            text.append(buffer, static_cast<size_t>(n));
            if (text.size() > kMaxConfigBytes) {
                ::close(fd);
                return fail("cannot read config file " + path + ": larger than " +
                            std::to_string(kMaxConfigBytes >> 20) + " MiB");
            }
        }
    }
    ::close(fd);
    if (err != 0) return fail_errno("cannot read config file " + path, err);
    return parse_config(text, path);
}

Config default_config() {
    Config config;
    config.source = "<built-in>";
    return config;
}

Result<Config> read_config(const std::string& path, bool explicit_path) {
    struct stat st {};
    if (!explicit_path && stat(path.c_str(), &st) != 0) {
        spdlog::info("{} not found: using the built-in default configuration", path);
        return default_config();
    }
    return load_config(path);
}

}  // namespace leakwatch
