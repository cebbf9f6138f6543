#include "http/metrics.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <chrono>
#include <cstdio>

namespace leakwatch {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

MetricFamily family(std::string name, std::string help, MetricType type) {
    MetricFamily f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
}

void add(MetricFamily& f, Labels labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter)
        m.counter.value = value;
    else
        m.gauge.value = value;
    f.metric.push_back(std::move(m));
}

std::string hex_id(uint64_t id) {
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
    return buf;
}

}  // namespace

template <class View>
bool holds(const View& s) {
    return s.bytes > 0 || s.count > 0;
}

// leakwatch_growth_bytes_per_second and leakwatch_leak_suspected share one label set, so a
// series keeps its labels from its first sample on (Prometheus `for:` needs that).
void add_growth(MetricFamily& growth, MetricFamily& suspected, const char* scope,
                const Labels& owner, const std::string& stack_id, const std::string& site,
                const Growth& g) {
    if (!g.followed) return;
    Labels l = {{"scope", scope}};
    l.insert(l.end(), owner.begin(), owner.end());
    l.push_back({"stack_id", stack_id});
    l.push_back({"site", site});
    add(growth, l, g.rate);
    add(suspected, std::move(l), g.suspected ? 1 : 0);
}

std::string render_metrics(const Snapshot& snap, const DaemonStatus& status) {
    auto growth = family("leakwatch_growth_bytes_per_second",
                         "Growth of outstanding bytes over the leak detection window (robust "
                         "slope), per process (scope=process) and per stack (scope=stack).",
                         MetricType::Gauge);
    auto suspected =
        family("leakwatch_leak_suspected",
               "1 while the leak detector holds the series to be leaking.", MetricType::Gauge);
    auto outstanding =
        family("leakwatch_outstanding_bytes",
               "Bytes allocated and not yet freed, per watched process.", MetricType::Gauge);
    auto outstanding_allocs =
        family("leakwatch_outstanding_allocations",
               "Allocations not yet freed, per watched process.", MetricType::Gauge);
    auto allocated = family("leakwatch_allocated_bytes_total",
                            "Bytes allocated since the process was attached.", MetricType::Counter);
    auto freed = family("leakwatch_freed_bytes_total",
                        "Bytes of tracked allocations freed since the process was attached.",
                        MetricType::Counter);
    auto allocations = family("leakwatch_allocations_total",
                              "Allocations since the process was attached.", MetricType::Counter);
    auto frees =
        family("leakwatch_frees_total",
               "Frees of tracked allocations since the process was attached.", MetricType::Counter);
    auto stack_bytes = family(
        "leakwatch_stack_outstanding_bytes",
        "Outstanding bytes per allocation stack, for the top stacks of each process; site is "
        "the first frame outside the allocator.",
        MetricType::Gauge);

    for (const auto& p : snap.processes) {
        Labels labels = {{"watch", p.watch}, {"pid", std::to_string(p.pid)}, {"comm", p.comm}};
        add(outstanding, labels, static_cast<double>(p.totals.bytes));
        add(outstanding_allocs, labels, static_cast<double>(p.totals.count));
        add(allocated, labels, static_cast<double>(p.totals.alloc_bytes));
        add(freed, labels, static_cast<double>(p.totals.free_bytes));
        add(allocations, labels, static_cast<double>(p.totals.alloc_count));
        add(frees, labels, static_cast<double>(p.totals.free_count));
        add_growth(growth, suspected, "process", labels, {}, {}, p.growth);
        size_t n = 0;
        for (const auto& s : p.stacks) {
            if (!holds(s)) break;  // the rest hold nothing now
            bool top = n++ < status.top_stacks;
            if (top) {
                Labels sl = labels;
                sl.push_back({"stack_id", hex_id(s.id)});
                sl.push_back({"site", s.site});
                add(stack_bytes, std::move(sl), static_cast<double>(s.bytes));
            }
            // A suspected stack stays exported whatever its rank, so alerts keep their series.
            if (top || s.growth.suspected)
                add_growth(growth, suspected, "stack", labels, hex_id(s.id), s.site, s.growth);
        }
    }
    std::vector<MetricFamily> kernel_families;
    if (snap.kernel) {
        const KernelView& k = *snap.kernel;
        auto kbytes = family("leakwatch_kernel_outstanding_bytes",
                             "Kernel memory allocated and not yet freed, by kind (pages that back "
                             "slab objects or large kmallocs count once, as those objects).",
                             MetricType::Gauge);
        auto kcount = family("leakwatch_kernel_outstanding_allocations",
                             "Kernel allocations not yet freed, by kind.", MetricType::Gauge);
        for (size_t i = 0; i < kKernelKinds.size(); i++) {
            Labels kind = {{"kind", std::string(kKernelKinds[i])}};
            add(kbytes, kind, static_cast<double>(k.bytes[i]));
            add(kcount, kind, static_cast<double>(k.count[i]));
        }
        auto backing = family("leakwatch_kernel_slab_backing_bytes",
                              "Pages that back slab objects or large kmallocs, outstanding; not "
                              "in leakwatch_kernel_outstanding_bytes (their objects are).",
                              MetricType::Gauge);
        add(backing, {}, static_cast<double>(k.backing_bytes));
        const Labels kernel_owner = {{"watch", "kernel"}, {"pid", ""}, {"comm", ""}};
        size_t n = 0;
        for (const auto& s : k.stacks) {
            if (!holds(s)) break;
            bool top = n++ < status.top_stacks;
            if (top) {
                Labels sl = kernel_owner;
                sl.push_back({"stack_id", hex_id(s.id)});
                sl.push_back({"site", s.site});
                add(stack_bytes, std::move(sl), static_cast<double>(s.bytes));
            }
            if (top || s.growth.suspected)
                add_growth(growth, suspected, "stack", kernel_owner, hex_id(s.id), s.site,
                           s.growth);
        }
        // Per process: the kernel bytes allocated in its context, for the largest ones.
        n = 0;
        for (const auto& p : k.processes) {
            bool top = n++ < status.top_processes;
            Labels labels = {{"watch", "kernel"}, {"pid", std::to_string(p.pid)}, {"comm", p.comm}};
            if (top) {
                add(outstanding, labels, static_cast<double>(p.bytes));
                add(outstanding_allocs, labels, static_cast<double>(p.count));
            }
            if (top || p.growth.suspected)
                add_growth(growth, suspected, "process", labels, {}, {}, p.growth);
        }
        kernel_families = {kbytes, kcount, backing};
    }

    auto build =
        family("leakwatch_build_info", "Version of the running leakwatchd.", MetricType::Gauge);
    add(build, {{"version", status.version}}, 1);
    auto reload_ok =
        family("leakwatch_config_last_reload_successful",
               "1 if the last configuration load or reload succeeded.", MetricType::Gauge);
    add(reload_ok, {}, status.last_reload_ok ? 1 : 0);
    auto reload_time =
        family("leakwatch_config_last_reload_success_timestamp_seconds",
               "When the configuration was last loaded successfully.", MetricType::Gauge);
    add(reload_time, {}, status.last_reload_time);
    auto attached = family("leakwatch_attached_processes",
                           "Processes whose allocator is probed now.", MetricType::Gauge);
    add(attached, {}, static_cast<double>(status.attached));
    auto lost = family("leakwatch_lost_events_total",
                       "Allocations, frees and events leakwatch could not account for, by reason.",
                       MetricType::Counter);
    for (size_t i = 0; i < kLostReasonNames.size(); i++)
        add(lost, {{"reason", kLostReasonNames[i]}}, static_cast<double>(snap.lost[i]));
    auto entries =
        family("leakwatch_bpf_map_entries", "Entries in use per BPF map.", MetricType::Gauge);
    auto capacity = family("leakwatch_bpf_map_capacity", "Capacity per BPF map (from limits).",
                           MetricType::Gauge);
    for (const auto& u : snap.usage) {
        add(entries, {{"map", u.map}}, static_cast<double>(u.entries));
        add(capacity, {{"map", u.map}}, static_cast<double>(u.capacity));
    }
    auto sampled = family("leakwatch_last_sample_timestamp_seconds",
                          "When the BPF maps were last read.", MetricType::Gauge);
    add(sampled, {}, std::chrono::duration<double>(snap.taken.time_since_epoch()).count());

    std::vector<MetricFamily> families = {
        outstanding, outstanding_allocs, allocated, freed,     allocations, frees,    stack_bytes,
        growth,      suspected,          build,     reload_ok, reload_time, attached, lost,
        entries,     capacity,           sampled};
    families.insert(families.end(), kernel_families.begin(), kernel_families.end());
    return prometheus::TextSerializer().Serialize(families);
}

}  // namespace leakwatch
