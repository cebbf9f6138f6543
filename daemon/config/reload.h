// What a reload may change in the running daemon and what waits for a restart: one table of
// every configuration key, read by the daemon (which applies a change or says it waits), by the
// tracker (a process keeps its probes while the keys of its rule are unchanged), by a unit test
// that names every field of the config structs, and by docs/operations.md ("Reloading").
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace leakwatch {

enum class Takes {
    kLive,      // applied at the reload
    kReattach,  // a key of a watch rule: the processes the rule matches are attached anew
    kRestart,   // the running value stays until a restart, and a warning says so
    kNothing,   // not a setting: where the config was read from, a rule's line, derived forms
};

struct ConfigKey {
    // As written in the YAML, e.g. "limits.kernel_stacks"; what is not a setting is described.
    std::string_view name;
    Takes takes;
    // For kRestart: the warning a reload that changes this key logs (once per reload).
    std::string_view warning;
    bool (*differs)(const Config& a, const Config& b);
    void (*keep)(Config& to, const Config& from);  // copies this key's value
};

struct RuleKey {
    std::string_view name;  // e.g. "watch.match.comm"
    Takes takes;            // kReattach or kNothing
    bool (*differs)(const WatchRule& a, const WatchRule& b);
    // Appends the key's value as text, for rule_digest (kReattach keys).
    void (*describe)(const WatchRule& rule, std::string& out);
};

// Every key of Config (watch rules as one key, "watch") and of WatchRule, in struct order.
std::span<const ConfigKey> config_keys();
std::span<const RuleKey> rule_keys();

// The keys whose values differ, in table order.
std::vector<const ConfigKey*> changed_keys(const Config& a, const Config& b);
std::vector<const RuleKey*> changed_rule_keys(const WatchRule& a, const WatchRule& b);

// Whether a process attached for rule `a` may stay attached under rule `b`: no kReattach key
// differs.
bool same_rule(const WatchRule& a, const WatchRule& b);
// A digest of a rule's kReattach keys, the same in every run and build: two rules with equal
// digests are the same rule for same_rule. Kept with the probes of a process that outlive the
// daemon, so that the next run adopts them only for the rule they were attached for.
uint64_t rule_digest(const WatchRule& rule);

struct Reload {
    Config config;  // the new config, with the running value of every key that waits
    std::vector<std::string_view> changed;   // names of the keys that changed
    std::vector<std::string_view> warnings;  // what waits for a restart, each once
    bool changed_key(std::string_view name) const;
};

// What the running daemon becomes on reloading `fresh`.
Reload reload_config(const Config& running, const Config& fresh);

}  // namespace leakwatch
