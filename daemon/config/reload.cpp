#include "config/reload.h"

#include <algorithm>
#include <optional>
#include <type_traits>

#include "util/hash.h"

namespace leakwatch {
namespace {

// The warnings, in the order a reload logs them.
constexpr std::string_view kKernelWarning = "kernel settings change at restart";
constexpr std::string_view kListenWarning = "listen_address changes take effect at restart";
constexpr std::string_view kMapWarning =
    "BPF map limits change at restart; keeping the current "
    "sizes";
constexpr std::string_view kWarningOrder[] = {kKernelWarning, kListenWarning, kMapWarning};

// A key is a path of member pointers from the struct, e.g. &Config::limits, &Limits::stacks.
template <class T, auto... Path>
bool differs(const T& a, const T& b) {
    return !((a.*....*Path) == (b.*....*Path));
}

template <auto... Path>
void keep(Config& to, const Config& from) {
    (to.*....*Path) = (from.*....*Path);
}

template <auto... Path>
constexpr ConfigKey key(std::string_view name, Takes takes, std::string_view warning = {}) {
    return {name, takes, warning, &differs<Config, Path...>, &keep<Path...>};
}

// A value as text for rule_digest; a key of a type not listed here does not compile, so that a
// new rule key cannot be left out of the digest.
void describe_value(const std::string& v, std::string& out) {
    out += std::to_string(v.size()) + ':' + v;
}
template <class T>
requires std::is_arithmetic_v<T> || std::is_enum_v<T>
void describe_value(T v, std::string& out) {
    if constexpr (std::is_enum_v<T>)
        out += std::to_string(static_cast<std::underlying_type_t<T>>(v));
    else
        out += std::to_string(v);
}
void describe_value(Duration v, std::string& out) {
    describe_value(v.count(), out);
}
template <class T>
void describe_value(const std::optional<T>& v, std::string& out) {
    if (!v) {
        out += '-';
        return;
    }
    out += '+';
    describe_value(*v, out);
}

template <auto... Path>
void describe(const WatchRule& rule, std::string& out) {
    describe_value((rule.*....*Path), out);
    out += ';';
}

template <auto... Path>
constexpr RuleKey rule_key(std::string_view name, Takes takes) {
    return {name, takes, &differs<WatchRule, Path...>, &describe<Path...>};
}

// The compiled regex is derived from match.cmdline, which is compared.
bool regex_differs(const WatchRule& a, const WatchRule& b) {
    return (a.match.cmdline_regex != nullptr) != (b.match.cmdline_regex != nullptr);
}

constexpr RuleKey kRuleKeys[] = {
    rule_key<&WatchRule::name>("watch.name", Takes::kReattach),
    rule_key<&WatchRule::match, &Match::comm>("watch.match.comm", Takes::kReattach),
    rule_key<&WatchRule::match, &Match::exe>("watch.match.exe", Takes::kReattach),
    rule_key<&WatchRule::match, &Match::pid>("watch.match.pid", Takes::kReattach),
    rule_key<&WatchRule::match, &Match::cmdline>("watch.match.cmdline", Takes::kReattach),
    {"watch.match.cmdline (compiled)", Takes::kNothing, &regex_differs, nullptr},
    rule_key<&WatchRule::match, &Match::uid>("watch.match.uid", Takes::kReattach),
    rule_key<&WatchRule::match, &Match::cgroup>("watch.match.cgroup", Takes::kReattach),
    rule_key<&WatchRule::match, &Match::unit>("watch.match.unit", Takes::kReattach),
    rule_key<&WatchRule::allocator, &Allocator::library>("watch.allocator.library",
                                                         Takes::kReattach),
    rule_key<&WatchRule::allocator, &Allocator::symbol_prefix>("watch.allocator.symbol_prefix",
                                                               Takes::kReattach),
    rule_key<&WatchRule::min_size>("watch.min_size", Takes::kReattach),
    rule_key<&WatchRule::max_size>("watch.max_size", Takes::kReattach),
    rule_key<&WatchRule::min_age>("watch.min_age", Takes::kReattach),
    rule_key<&WatchRule::sample_bytes>("watch.sample_bytes", Takes::kReattach),
    rule_key<&WatchRule::unwind>("watch.unwind", Takes::kReattach),
    rule_key<&WatchRule::jvm_attach>("watch.jvm_attach", Takes::kReattach),
    rule_key<&WatchRule::tracking>("watch.tracking", Takes::kReattach),
    rule_key<&WatchRule::line>("watch (line in the file)", Takes::kNothing),
};

bool rules_differ(const Config& a, const Config& b) {
    return !std::equal(
        a.watch.begin(), a.watch.end(), b.watch.begin(), b.watch.end(),
        [](const WatchRule& x, const WatchRule& y) { return changed_rule_keys(x, y).empty(); });
}

constexpr ConfigKey kConfigKeys[] = {
    key<&Config::listen_address>("listen_address", Takes::kRestart, kListenWarning),
    key<&Config::expose_kernel_addresses>("expose_kernel_addresses", Takes::kLive),
    key<&Config::interval>("interval", Takes::kLive),
    key<&Config::log_level>("log_level", Takes::kLive),
    key<&Config::kernel, &KernelConfig::enabled>("kernel.enabled", Takes::kRestart, kKernelWarning),
    key<&Config::kernel, &KernelConfig::kinds>("kernel.kinds", Takes::kRestart, kKernelWarning),
    key<&Config::kernel, &KernelConfig::min_size>("kernel.min_size", Takes::kRestart,
                                                  kKernelWarning),
    key<&Config::kernel, &KernelConfig::max_size>("kernel.max_size", Takes::kRestart,
                                                  kKernelWarning),
    key<&Config::kernel, &KernelConfig::include_movable_pages>("kernel.include_movable_pages",
                                                               Takes::kRestart, kKernelWarning),
    key<&Config::kernel, &KernelConfig::tracking>("kernel.tracking", Takes::kRestart,
                                                  kKernelWarning),
    key<&Config::leak_detection, &LeakDetection::enabled>("leak_detection.enabled", Takes::kLive),
    key<&Config::leak_detection, &LeakDetection::window>("leak_detection.window", Takes::kLive),
    key<&Config::leak_detection, &LeakDetection::min_rate>("leak_detection.min_rate", Takes::kLive),
    key<&Config::leak_detection, &LeakDetection::min_growth>("leak_detection.min_growth",
                                                             Takes::kLive),
    key<&Config::leak_detection, &LeakDetection::confidence>("leak_detection.confidence",
                                                             Takes::kLive),
    key<&Config::leak_detection, &LeakDetection::max_series>("leak_detection.max_series",
                                                             Takes::kLive),
    key<&Config::escalation, &Escalation::duration>("escalation.duration", Takes::kLive),
    key<&Config::escalation, &Escalation::max_processes>("escalation.max_processes", Takes::kLive),
    key<&Config::escalation, &Escalation::sample_bytes>("escalation.sample_bytes", Takes::kLive),
    key<&Config::escalation, &Escalation::watch_sample_bytes>("escalation.watch_sample_bytes",
                                                              Takes::kLive),
    key<&Config::python, &PythonFrames::max_frames>("python.max_frames", Takes::kLive),
    {"watch", Takes::kLive, {}, &rules_differ, &keep<&Config::watch>},
    key<&Config::limits, &Limits::live_allocations>("limits.live_allocations", Takes::kRestart,
                                                    kMapWarning),
    key<&Config::limits, &Limits::stacks>("limits.stacks", Takes::kRestart, kMapWarning),
    key<&Config::limits, &Limits::stack_totals>("limits.stack_totals", Takes::kRestart,
                                                kMapWarning),
    key<&Config::limits, &Limits::processes>("limits.processes", Takes::kRestart, kMapWarning),
    key<&Config::limits, &Limits::threads>("limits.threads", Takes::kRestart, kMapWarning),
    key<&Config::limits, &Limits::top_stacks>("limits.top_stacks", Takes::kLive),
    key<&Config::limits, &Limits::kernel_live_allocations>("limits.kernel_live_allocations",
                                                           Takes::kRestart, kMapWarning),
    key<&Config::limits, &Limits::kernel_stacks>("limits.kernel_stacks", Takes::kRestart,
                                                 kMapWarning),
    key<&Config::limits, &Limits::kernel_totals>("limits.kernel_totals", Takes::kRestart,
                                                 kMapWarning),
    key<&Config::limits, &Limits::top_processes>("limits.top_processes", Takes::kLive),
    key<&Config::limits, &Limits::symbol_files>("limits.symbol_files", Takes::kLive),
    key<&Config::limits, &Limits::symbol_cache_entries>("limits.symbol_cache_entries",
                                                        Takes::kLive),
    key<&Config::limits, &Limits::file_size>("limits.file_size", Takes::kLive),
    key<&Config::limits, &Limits::process_share>("limits.process_share", Takes::kRestart,
                                                 kMapWarning),
    key<&Config::limits, &Limits::growth_pages>("limits.growth_pages", Takes::kRestart,
                                                kMapWarning),
    key<&Config::source>("source (the file read)", Takes::kNothing),
};

}  // namespace

std::span<const ConfigKey> config_keys() {
    return kConfigKeys;
}

std::span<const RuleKey> rule_keys() {
    return kRuleKeys;
}

std::vector<const ConfigKey*> changed_keys(const Config& a, const Config& b) {
    std::vector<const ConfigKey*> out;
    for (const auto& k : kConfigKeys)
        if (k.differs(a, b)) out.push_back(&k);
    return out;
}

std::vector<const RuleKey*> changed_rule_keys(const WatchRule& a, const WatchRule& b) {
    std::vector<const RuleKey*> out;
    for (const auto& k : kRuleKeys)
        if (k.differs(a, b)) out.push_back(&k);
    return out;
}

bool same_rule(const WatchRule& a, const WatchRule& b) {
    return std::none_of(std::begin(kRuleKeys), std::end(kRuleKeys), [&](const RuleKey& k) {
        return k.takes == Takes::kReattach && k.differs(a, b);
    });
}

uint64_t rule_digest(const WatchRule& rule) {
    std::string text;
    for (const auto& k : kRuleKeys)
        if (k.takes == Takes::kReattach) k.describe(rule, text);
    return stable_hash(text);
}

bool Reload::changed_key(std::string_view name) const {
    return std::find(changed.begin(), changed.end(), name) != changed.end();
}

Reload reload_config(const Config& running, const Config& fresh) {
    Reload r{fresh, {}, {}};
    auto changed = changed_keys(running, fresh);
    for (const ConfigKey* k : changed) {
        r.changed.push_back(k->name);
        if (k->takes == Takes::kRestart) k->keep(r.config, running);
    }
    for (std::string_view warning : kWarningOrder)
        if (std::any_of(changed.begin(), changed.end(),
                        [&](const ConfigKey* k) { return k->warning == warning; }))
            r.warnings.push_back(warning);
    return r;
}

}  // namespace leakwatch
