#include "http/metrics.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "util/text.h"

namespace leakwatch {

namespace {

// The exposition is written straight into text: with 10,000 stacks it has some 30,000
// samples, and building a metric object with a vector of label strings for each of them
// before serializing cost more than everything else a scrape does. It goes out in pieces, so
// a scrape holds one piece, not the whole exposition (3.8 MB at 10,000 stacks).

// Label values escape backslash, double quote and newline (text format 0.0.4). They must be
// valid UTF-8, or Prometheus rejects the whole scrape: what comes from a watched process is
// shown text already (util/text.h), and anything that is not is made so here.
void append_escaped(std::string& out, std::string_view v) {
    if (!is_shown_text(v, kMaxShownPath)) {
        const std::string shown = shown_text(v, kMaxShownPath);
        append_escaped(out, shown);
        return;
    }
    size_t start = 0;
    for (size_t i = 0; i < v.size(); i++) {
        char c = v[i];
        if (c != '\\' && c != '"' && c != '\n') continue;
        out.append(v.substr(start, i - start));
        out += '\\';
        out += c == '\n' ? 'n' : c;
        start = i + 1;
    }
    out.append(v.substr(start));
}

// Shortest form up to 16 significant digits, as %.16g; NaN and infinities as Prometheus
// spells them.
void append_value(std::string& out, double v) {
    if (std::isnan(v)) {
        out += "Nan";
        return;
    }
    if (std::isinf(v)) {
        out += v < 0 ? "-Inf" : "+Inf";
        return;
    }
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general, 16);
    if (ec == std::errc()) {
        out.append(buf, static_cast<size_t>(end - buf));
    } else {
        int n = std::snprintf(buf, sizeof(buf), "%.16g", v);
        out.append(buf, static_cast<size_t>(n));
    }
}

void append_hex_id(std::string& out, uint64_t id) {
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
    out.append(buf, 16);
}

// `key="value"` pairs, escaped, comma-separated, without braces.
class LabelSet {
  public:
    LabelSet& add(std::string_view key, std::string_view value) {
        if (!text_.empty()) text_ += ',';
        text_.append(key);
        text_ += "=\"";
        append_escaped(text_, value);
        text_ += '"';
        return *this;
    }
    LabelSet& add(const LabelSet& other) {
        if (other.text_.empty()) return *this;
        if (!text_.empty()) text_ += ',';
        text_ += other.text_;
        return *this;
    }
    LabelSet& add_hex_id(std::string_view key, uint64_t id) {
        if (!text_.empty()) text_ += ',';
        text_.append(key);
        text_ += "=\"";
        append_hex_id(text_, id);
        text_ += '"';
        return *this;
    }
    void clear() { text_.clear(); }
    const std::string& text() const { return text_; }

  private:
    std::string text_;
};

class Writer {
  public:
    Writer(std::string& out, const MetricsSink* sink, size_t piece)
        : out_(out), sink_(sink), piece_(piece) {}
    // Hands what is written so far to the sink.
    void flush() {
        if (!sink_ || out_.empty()) return;
        (*sink_)(out_);
        out_.clear();
    }

    // Starts a family: its HELP and TYPE lines. `help` holds no backslash or newline.
    void family(std::string_view name, std::string_view help, std::string_view type) {
        name_ = name;
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }
    // One sample of the current family.
    void sample(const LabelSet& labels, double value) {
        out_ += name_;
        if (!labels.text().empty()) {
            out_ += '{';
            out_ += labels.text();
            out_ += '}';
        }
        out_ += ' ';
        append_value(out_, value);
        out_ += '\n';
        if (out_.size() >= piece_) flush();
    }
    void sample(double value) { sample(LabelSet(), value); }

  private:
    std::string& out_;
    const MetricsSink* sink_;
    size_t piece_;
    std::string_view name_;
};

template <class View>
bool holds(const View& s) {
    return s.bytes > 0 || s.count > 0;
}

LabelSet process_owner(const ProcessView& p) {
    LabelSet l;
    l.add("watch", p.watch).add("pid", std::to_string(p.pid)).add("comm", p.comm);
    l.add("unit", p.unit);
    return l;
}

LabelSet kernel_process_owner(const KernelProcessView& p) {
    LabelSet l;
    l.add("watch", "kernel").add("pid", std::to_string(p.pid)).add("comm", p.comm);
    l.add("unit", p.unit);
    return l;
}

LabelSet kernel_owner() {
    LabelSet l;
    l.add("watch", "kernel").add("pid", "").add("comm", "").add("unit", "");
    return l;
}

// Which stacks of a list are exported: the top `top` that hold bytes, and (for the growth
// families) any other that holds bytes and is suspected, so alerts keep their series.
template <class Stack, class Fn>
void for_exported_stacks(const std::vector<Stack>& stacks, uint32_t top, bool with_suspects,
                         Fn&& fn) {
    size_t n = 0;
    for (const auto& s : stacks) {
        if (!holds(s)) break;  // the rest hold nothing now
        bool in_top = n++ < top;
        if (in_top || (with_suspects && s.growth.suspected)) fn(s, in_top);
    }
}

// The kernel's counters exported (kernel.tracking: escalate): the `top` largest, and any
// other the detector suspects or that is escalated.
template <class Fn>
void for_exported_counters(const KernelView& k, uint32_t top, Fn&& fn) {
    size_t n = 0;
    for (const auto& c : k.counters)
        if (n++ < top || c.growth.suspected || c.escalated) fn(c);
}

// leakwatch_growth_bytes_per_second and leakwatch_leak_suspected share one label set, so a
// series keeps its labels from its first sample on (Prometheus `for:` needs that). Calls
// fn(labels, growth) for every followed series, in the order of the exposition.
template <class Fn>
void for_growth_series(const Snapshot& snap, const DaemonStatus& status, Fn&& fn) {
    LabelSet labels;
    auto emit = [&](const char* scope, const LabelSet& owner, const uint64_t* stack_id,
                    std::string_view site, const Growth& g) {
        if (!g.followed) return;
        labels.clear();
        labels.add("scope", scope).add(owner);
        if (stack_id)
            labels.add_hex_id("stack_id", *stack_id);
        else
            labels.add("stack_id", "");
        labels.add("site", site);
        fn(labels, g);
    };
    for (const auto& p : snap.processes) {
        LabelSet owner = process_owner(p);
        emit("process", owner, nullptr, {}, p.growth);
        for_exported_stacks(p.stacks, status.top_stacks, true, [&](const StackView& s, bool) {
            emit("stack", owner, &s.id, s.site, s.growth);
        });
        for_exported_stacks(p.growth_stacks, status.top_stacks, true,
                            [&](const StackView& s, bool) {
                                emit("growth_stack", owner, &s.id, s.site, s.growth);
                            });
    }
    if (!snap.kernel) return;
    const KernelView& k = *snap.kernel;
    const LabelSet owner = kernel_owner();
    for_exported_stacks(k.stacks, status.top_stacks, true, [&](const auto& s, bool) {
        emit("stack", owner, &s.id, s.site, s.growth);
    });
    size_t n = 0;
    for (const auto& p : k.processes) {
        bool top = n++ < status.top_processes;
        if (top || p.growth.suspected)
            emit("process", kernel_process_owner(p), nullptr, {}, p.growth);
    }
    for_exported_counters(k, status.top_stacks, [&](const KernelCounterView& c) {
        emit("kernel_counter", owner, nullptr, c.name, c.growth);
    });
}

}  // namespace

std::string escape_label_value(std::string_view value) {
    std::string out;
    append_escaped(out, value);
    return out;
}

namespace {

// Writes the exposition into `out`, handing it to `sink` (when there is one) every `piece`
// bytes and at the end.
// The families counted live by the HTTP server (not part of a snapshot).
void render_live(const DaemonStatus& status, Writer& w) {
    LabelSet labels;
    w.family("leakwatch_http_handler_failures_total",
             "HTTP requests whose handler failed (answered 500, or cut short), by path.",
             "counter");
    for (const auto& [path, n] : status.http_failures) {
        labels.clear();
        w.sample(labels.add("path", path), static_cast<double>(n));
    }
}

// Writes the exposition into `out`, handing it to `sink` (when there is one) every `piece`
// bytes and at the end; `live`: with the families the HTTP server counts.
void render(const Snapshot& snap, const DaemonStatus& status, std::string& out,
            const MetricsSink* sink, size_t piece, bool live = true) {
    Writer w(out, sink, piece);

    std::vector<LabelSet> owners;
    owners.reserve(snap.processes.size());
    for (const auto& p : snap.processes) owners.push_back(process_owner(p));
    std::vector<LabelSet> kernel_owners;
    if (snap.kernel) {
        size_t n = 0;
        for (const auto& p : snap.kernel->processes) {
            if (n++ >= status.top_processes) break;
            kernel_owners.push_back(kernel_process_owner(p));
        }
    }

    // Per process: a family of one value each, then the kernel's top processes for the two
    // outstanding families.
    auto per_process = [&](std::string_view name, std::string_view help, std::string_view type,
                           auto value, auto kernel_value) {
        w.family(name, help, type);
        for (size_t i = 0; i < snap.processes.size(); i++)
            w.sample(owners[i], static_cast<double>(value(snap.processes[i])));
        if (!snap.kernel) return;
        for (size_t i = 0; i < kernel_owners.size(); i++)
            w.sample(kernel_owners[i],
                     static_cast<double>(kernel_value(snap.kernel->processes[i])));
    };
    auto no_kernel = [](const KernelProcessView&) -> double { return 0; };
    per_process(
        "leakwatch_outstanding_bytes", "Bytes allocated and not yet freed, per watched process.",
        "gauge", [](const ProcessView& p) { return p.totals.bytes; },
        [](const KernelProcessView& p) { return static_cast<double>(p.bytes); });
    per_process(
        "leakwatch_outstanding_allocations", "Allocations not yet freed, per watched process.",
        "gauge", [](const ProcessView& p) { return p.totals.count; },
        [](const KernelProcessView& p) { return static_cast<double>(p.count); });
    kernel_owners.clear();  // only the two families above list the kernel's processes
    per_process(
        "leakwatch_allocated_bytes_total", "Bytes allocated since the process was attached.",
        "counter", [](const ProcessView& p) { return p.totals.alloc_bytes; }, no_kernel);
    per_process(
        "leakwatch_freed_bytes_total",
        "Bytes of tracked allocations freed since the process was attached.", "counter",
        [](const ProcessView& p) { return p.totals.free_bytes; }, no_kernel);
    per_process(
        "leakwatch_allocations_total", "Allocations since the process was attached.", "counter",
        [](const ProcessView& p) { return p.totals.alloc_count; }, no_kernel);
    per_process(
        "leakwatch_frees_total", "Frees of tracked allocations since the process was attached.",
        "counter", [](const ProcessView& p) { return p.totals.free_count; }, no_kernel);

    w.family("leakwatch_stack_outstanding_bytes",
             "Outstanding bytes per allocation stack, for the top stacks of each process; site is "
             "the first frame outside the allocator.",
             "gauge");
    LabelSet labels;
    for (size_t i = 0; i < snap.processes.size(); i++) {
        for_exported_stacks(
            snap.processes[i].stacks, status.top_stacks, false, [&](const StackView& s, bool) {
                labels.clear();
                labels.add(owners[i]).add_hex_id("stack_id", s.id).add("site", s.site);
                w.sample(labels, static_cast<double>(s.bytes));
            });
    }
    if (snap.kernel) {
        const LabelSet owner = kernel_owner();
        for_exported_stacks(snap.kernel->stacks, status.top_stacks, false,
                            [&](const auto& s, bool) {
                                labels.clear();
                                labels.add(owner).add_hex_id("stack_id", s.id).add("site", s.site);
                                w.sample(labels, static_cast<double>(s.bytes));
                            });
    }

    // The watch tier (tracking: escalate): the kernel's accounting per process, how each is
    // tracked now, and the stacks that first touched the memory it still holds.
    w.family("leakwatch_process_memory_bytes",
             "A watched process's memory as the kernel accounts it: kind=anon (resident "
             "anonymous), swap (swapped out), data (private writable mappings, heap included).",
             "gauge");
    for (size_t i = 0; i < snap.processes.size(); i++) {
        const ProcessView& p = snap.processes[i];
        if (!p.memory_known) continue;
        for (auto [kind, bytes] :
             {std::pair{"anon", p.memory.anon}, std::pair{"swap", p.memory.swap},
              std::pair{"data", p.memory.data}}) {
            labels.clear();
            w.sample(labels.add(owners[i]).add("kind", kind), static_cast<double>(bytes));
        }
    }
    w.family("leakwatch_process_tracking",
             "1 for how a watched process is tracked now: mode=watch (the watch tier, no "
             "uprobes), escalated (allocator probes for a while), sampled or full.",
             "gauge");
    for (size_t i = 0; i < snap.processes.size(); i++) {
        labels.clear();
        w.sample(labels.add(owners[i]).add("mode", tracking_name(snap.processes[i].tracking)), 1);
    }
    w.family("leakwatch_stack_growth_bytes",
             "Watch tier: resident bytes per stack that first touched them (sampled page "
             "faults), for the top stacks of each process.",
             "gauge");
    for (size_t i = 0; i < snap.processes.size(); i++) {
        for_exported_stacks(
            snap.processes[i].growth_stacks, status.top_stacks, false,
            [&](const StackView& s, bool) {
                labels.clear();
                labels.add(owners[i]).add_hex_id("stack_id", s.id).add("site", s.site);
                w.sample(labels, static_cast<double>(s.bytes));
            });
    }

    w.family("leakwatch_growth_bytes_per_second",
             "Growth over the leak detection window (robust slope) of a process's outstanding "
             "bytes, or its memory in the watch tier (scope=process), a stack's outstanding "
             "bytes (scope=stack), and a watch-tier stack's resident bytes "
             "(scope=growth_stack).",
             "gauge");
    for_growth_series(snap, status,
                      [&](const LabelSet& l, const Growth& g) { w.sample(l, g.rate); });
    w.family("leakwatch_leak_suspected",
             "1 while the leak detector holds the series to be leaking.", "gauge");
    for_growth_series(snap, status, [&](const LabelSet& l, const Growth& g) {
        w.sample(l, g.suspected ? 1 : 0);
    });

    w.family("leakwatch_build_info", "Version of the running leakwatchd.", "gauge");
    labels.clear();
    w.sample(labels.add("version", status.version), 1);
    w.family("leakwatch_config_last_reload_successful",
             "1 if the last configuration load or reload succeeded.", "gauge");
    w.sample(status.last_reload_ok ? 1 : 0);
    w.family("leakwatch_config_last_reload_success_timestamp_seconds",
             "When the configuration was last loaded successfully.", "gauge");
    w.sample(status.last_reload_time);
    w.family("leakwatch_attached_processes", "Processes watched now, in any tracking mode.",
             "gauge");
    w.sample(static_cast<double>(status.attached));
    w.family("leakwatch_escalated_processes",
             "Processes of the watch tier escalated to allocator probes now.", "gauge");
    w.sample(static_cast<double>(status.escalated));
    w.family("leakwatch_escalated_processes_max", "escalation.max_processes.", "gauge");
    w.sample(static_cast<double>(status.max_escalated));
    w.family("leakwatch_escalations_total",
             "Processes escalated to allocator probes, by reason: suspected (the leak detector), "
             "operator (POST /api/v1/escalate), failed (the probes could not be attached).",
             "counter");
    for (const auto& [reason, n] : status.escalations) {
        labels.clear();
        w.sample(labels.add("reason", reason), static_cast<double>(n));
    }
    w.family("leakwatch_releases_total",
             "Escalated processes given back to the watch tier, by reason: duration, "
             "stopped_growing, operator.",
             "counter");
    for (const auto& [reason, n] : status.releases) {
        labels.clear();
        w.sample(labels.add("reason", reason), static_cast<double>(n));
    }
    w.family("leakwatch_lost_events_total",
             "Allocations, frees and events leakwatch could not account for, by reason.",
             "counter");
    for (const LossReason& reason : kLossReasons) {
        labels.clear();
        w.sample(labels.add("reason", reason.name), static_cast<double>(snap.lost[reason.id]));
    }
    w.family("leakwatch_bpf_map_entries", "Entries in use per BPF map.", "gauge");
    for (const auto& u : snap.usage) {
        labels.clear();
        w.sample(labels.add("map", u.map), static_cast<double>(u.entries));
    }
    w.family("leakwatch_bpf_map_capacity", "Capacity per BPF map (from limits).", "gauge");
    for (const auto& u : snap.usage) {
        labels.clear();
        w.sample(labels.add("map", u.map), static_cast<double>(u.capacity));
    }
    // The symbolizer's caches (symbols/symbolizer.h): ELF files, DWARF files, source lines.
    struct SymbolCacheFamily {
        const char* name;
        const char* help;
        const char* type;
        uint64_t SymbolCacheStats::*value;
    };
    for (const SymbolCacheFamily& f : {
             SymbolCacheFamily{"leakwatch_symbol_cache_hits_total",
                               "Symbolizer cache lookups answered from the cache.", "counter",
                               &SymbolCacheStats::hits},
             SymbolCacheFamily{"leakwatch_symbol_cache_misses_total",
                               "Symbolizer cache lookups that had to read files.", "counter",
                               &SymbolCacheStats::misses},
             SymbolCacheFamily{"leakwatch_symbol_cache_entries", "Entries in a symbolizer cache.",
                               "gauge", &SymbolCacheStats::entries},
             SymbolCacheFamily{"leakwatch_symbol_cache_capacity",
                               "Entries a symbolizer cache holds at most (from limits).", "gauge",
                               &SymbolCacheStats::capacity},
         }) {
        w.family(f.name, f.help, f.type);
        for (const auto& c : status.symbol_caches) {
            labels.clear();
            w.sample(labels.add("cache", c.cache), static_cast<double>(c.*f.value));
        }
    }
    w.family("leakwatch_unwind_snapshots_total",
             "Stack snapshots unwound with CFI (unwind: dwarf): walks that met a return address "
             "without an unwind rule.",
             "counter");
    w.sample(static_cast<double>(status.unwind.snapshots));
    w.family("leakwatch_unwind_rules_total", "Unwind rules read from CFI.", "counter");
    w.sample(static_cast<double>(status.unwind.rules));
    w.family("leakwatch_unwind_seconds_total",
             "Time spent unwinding snapshots, reading CFI included.", "counter");
    w.sample(static_cast<double>(status.unwind.nanoseconds) / 1e9);
    w.family("leakwatch_files_refused_total",
             "Files of watched processes not read (or read in part), by reason; each file once.",
             "counter");
    for (size_t i = 0; i < kRefusalNames.size(); i++) {
        labels.clear();
        w.sample(labels.add("reason", kRefusalNames[i]),
                 static_cast<double>(status.files_refused[i]));
    }
    w.family("leakwatch_file_loads_stuck",
             "Reads of files of watched processes going on for more than 2 seconds now.", "gauge");
    w.sample(static_cast<double>(status.file_loads_stuck));
    w.family("leakwatch_attach_retries_total",
             "Processes whose allocator's file was too slow to read at first, tried again later "
             "(each once).",
             "counter");
    w.sample(static_cast<double>(status.attach_retries));
    w.family("leakwatch_probe_operations_in_flight",
             "Uprobe attaches and detaches started and not ended yet, by operation.", "gauge");
    labels.clear();
    w.sample(labels.add("operation", "attach"), static_cast<double>(status.attaches_in_flight));
    labels.clear();
    w.sample(labels.add("operation", "detach"), static_cast<double>(status.detaches_queued));
    w.family("leakwatch_probe_operations_stuck",
             "Uprobe attaches and detaches waiting in the kernel for more than 10 seconds (for "
             "the memory map lock of a process mapping the probed file), by operation.",
             "gauge");
    labels.clear();
    w.sample(labels.add("operation", "attach"), static_cast<double>(status.attaches_stuck));
    labels.clear();
    w.sample(labels.add("operation", "detach"), static_cast<double>(status.detaches_stuck));
    w.family("leakwatch_jvm_attaches_queued_total",
             "JVM attaches (perf map requests) that waited for one in flight to end.", "counter");
    w.sample(static_cast<double>(status.jvm_attaches_queued));
    if (live) render_live(status, w);
    w.family("leakwatch_last_sample_timestamp_seconds", "When the BPF maps were last read.",
             "gauge");
    w.sample(std::chrono::duration<double>(snap.taken.time_since_epoch()).count());

    if (snap.kernel) {
        const KernelView& k = *snap.kernel;
        w.family("leakwatch_kernel_counter_bytes",
                 "kernel.tracking: escalate: the kernel's own counters, the largest and any "
                 "suspected or escalated: a slab cache's objects in use (counter=its name), "
                 "percpu, vmalloc, and page (an estimate of the pages the kernel holds outside "
                 "the accounted kinds).",
                 "gauge");
        for_exported_counters(k, status.top_stacks, [&](const KernelCounterView& c) {
            labels.clear();
            w.sample(labels.add("counter", c.name), static_cast<double>(c.bytes));
        });
        w.family("leakwatch_kernel_counter_escalated",
                 "1 for a kernel counter whose allocation tracepoints are on now (escalated).",
                 "gauge");
        for (const auto& c : k.counters) {
            if (!c.escalated) continue;
            labels.clear();
            w.sample(labels.add("counter", c.name), 1);
        }
        w.family("leakwatch_kernel_outstanding_bytes",
                 "Kernel memory allocated and not yet freed, by kind (pages that back slab "
                 "objects or large kmallocs count once, as those objects).",
                 "gauge");
        for (size_t i = 0; i < kKernelKinds.size(); i++) {
            labels.clear();
            w.sample(labels.add("kind", kKernelKinds[i]), static_cast<double>(k.bytes[i]));
        }
        w.family("leakwatch_kernel_outstanding_allocations",
                 "Kernel allocations not yet freed, by kind.", "gauge");
        for (size_t i = 0; i < kKernelKinds.size(); i++) {
            labels.clear();
            w.sample(labels.add("kind", kKernelKinds[i]), static_cast<double>(k.count[i]));
        }
        w.family("leakwatch_kernel_slab_backing_bytes",
                 "Pages that back slab objects or large kmallocs, outstanding; not in "
                 "leakwatch_kernel_outstanding_bytes (their objects are).",
                 "gauge");
        w.sample(static_cast<double>(k.backing_bytes));
    }
    w.flush();
}

}  // namespace

void render_metrics(const Snapshot& snap, const DaemonStatus& status, const MetricsSink& sink,
                    size_t piece) {
    std::string out;
    out.reserve(piece + 4096);  // a piece ends past `piece` by at most one sample
    render(snap, status, out, &sink, piece);
}

std::string render_metrics(const Snapshot& snap, const DaemonStatus& status, bool live) {
    std::string out;
    // About 130 bytes a sample: stacks dominate, three samples each when the detector
    // follows them.
    size_t stacks = 0;
    for (const auto& p : snap.processes)
        stacks += std::min<size_t>(p.stacks.size(), status.top_stacks);
    out.reserve(8192 + 400 * snap.processes.size() + 400 * stacks);
    render(snap, status, out, nullptr, SIZE_MAX, live);
    out.shrink_to_fit();  // kept for an interval when published
    return out;
}

std::string render_live_metrics(const DaemonStatus& status) {
    std::string out;
    Writer w(out, nullptr, SIZE_MAX);
    render_live(status, w);
    return out;
}

}  // namespace leakwatch
