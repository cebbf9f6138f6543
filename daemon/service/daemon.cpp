#include "service/daemon.h"

#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "aggregate/kernel.h"
#include "detect/follow.h"
#include "http/metrics.h"
#include "leakwatch.h"
#include "loader/kernel_probes.h"
#include "proc/jvm_attach.h"
#include "proc/kernel_memory.h"
#include "service/privileges.h"
#include "symbols/kernel_symbols.h"
#include "unwind/snapshots.h"
#include "util/clock.h"

namespace leakwatch {

namespace {

using Clock = std::chrono::steady_clock;

// How long one sample waits for files of watched processes, in all.
constexpr std::chrono::milliseconds kSampleWaitBudget{1000};

// The comm and unit of a process if it is still the one that started at start_ns (boot-time
// ns), for the kernel aggregator; /proc/PID/stat counts the start in clock ticks since boot.
ProcessLookup identity_if_started_at(const ProcReader& proc) {
    const uint64_t ns_per_tick = 1000000000ull / static_cast<uint64_t>(sysconf(_SC_CLK_TCK));
    return
        [&proc, ns_per_tick](uint32_t tgid, uint64_t start_ns) -> std::optional<ProcessIdentity> {
            // Without its command line: reading it takes the process's memory map lock, which
            // the process can hold up (tracker/cmdline_reads.h).
            auto info = proc.process(static_cast<int>(tgid), false);
            if (!info || info->start_time != start_ns / ns_per_tick) return std::nullopt;
            return ProcessIdentity{info->comm, unit_label(info->cgroup)};
        };
}

}  // namespace

// Kernel allocations: system-wide tracepoints, symbolized from /proc/kallsyms (read again as
// modules come and go, symbols/kernel_symbols.h).
struct Daemon::Kernel : KernelNamer {
    std::unique_ptr<KernelProbes> probes;
    KernelSymbols symbols;
    KernelAggregator aggregator;

    Kernel(std::unique_ptr<KernelProbes> p, KernelSymbols k, const ProcReader& proc)
        : probes(std::move(p)),
          symbols(std::move(k)),
          aggregator(*probes, *this, identity_if_started_at(proc)) {}

    Frame name(uint64_t address, uint32_t modules) override {
        return symbols.symbolize(address, modules);
    }
    uint64_t refresh() override { return symbols.refresh(); }

    // kernel.tracking: escalate: the counters followed, and what is escalated of them.
    bool escalates = false;
    std::array<bool, kKernelKinds.size()> kinds{};
    EscalationPolicy policy;
    std::map<std::string, double> escalated;  // counter name -> unix seconds since
    std::map<std::string, uint64_t> sizes;    // slab cache name -> object size, as last read

    static KernelCounterView counter(const std::string& name, uint64_t bytes) {
        KernelCounterView c;
        c.name = name;
        c.bytes = static_cast<int64_t>(bytes);
        return c;
    }

    // The kernel's own counters, with their escalation state.
    std::vector<KernelCounterView> counters(const ProcReader& proc, RateLimiter& limiter) {
        std::vector<KernelCounterView> out;
        auto m = read_kernel_memory(proc.root());
        if (!m) {
            log_limited(limiter, "kernel_memory", spdlog::level::warn, "kernel counters: {}",
                        m.error().message);
            return out;
        }
        sizes.clear();
        for (const auto& c : m->caches) {
            sizes[c.name] = c.object_size;
            out.push_back(counter(c.name, c.bytes()));
        }
        out.push_back(counter("percpu", m->percpu));
        out.push_back(counter("page", m->pages));
        out.push_back(counter("vmalloc", m->vmalloc));
        for (auto& c : out) {
            auto e = escalated.find(c.name);
            c.escalated = e != escalated.end();
            c.escalated_at = c.escalated ? e->second : 0;
        }
        std::stable_sort(out.begin(), out.end(),
                         [](const auto& a, const auto& b) { return a.bytes > b.bytes; });
        return out;
    }

    // The kind a counter's allocations are traced as, if they can be (vmalloc cannot).
    std::optional<size_t> kind_of(const std::string& name) const {
        size_t kind;
        if (name == "percpu")
            kind = LW_K_PERCPU;
        else if (name == "page")
            kind = LW_K_PAGE;
        else if (name == "vmalloc")
            return std::nullopt;
        else
            kind = name.starts_with("kmalloc-") || name.starts_with("dma-kmalloc-")
                       ? LW_K_KMALLOC
                       : LW_K_KMEM_CACHE;
        return kinds[kind] ? std::optional<size_t>(kind) : std::nullopt;
    }

    // Escalates the counters the detector suspects to their tracepoints, releases them as for
    // processes (escalation.duration, a quiet window), and marks the view.
    void escalate_and_release(KernelView& view, const Config& config, DaemonStatus& status,
                              double now) {
        std::vector<EscalationCandidate> candidates;
        for (const auto& c : view.counters)
            candidates.push_back(
                {c.name, c.escalated, kind_of(c.name).has_value(), c.escalated_at, c.growth});
        bool changed = false;
        for (const auto& a :
             policy.decide(candidates, config.escalation, config.leak_detection, now)) {
            if (a.kind == EscalationAction::kRelease) {
                escalated.erase(a.key);
                status.releases["kernel_" + a.label]++;
                spdlog::info("kernel: released {}: {}; its tracepoints off", a.key, a.reason);
            } else {
                escalated[a.key] = now;
                status.escalations["kernel_" + a.label]++;
                spdlog::info("kernel: escalated {}: {}; tracing its allocations", a.key, a.reason);
            }
            changed = true;
        }
        if (changed) {
            KernelTargets targets;
            for (const auto& [name, since] : escalated) {
                auto kind = kind_of(name);
                if (!kind) continue;
                targets.kinds[*kind] = true;
                if (*kind == LW_K_KMALLOC || *kind == LW_K_KMEM_CACHE)
                    targets.sizes.push_back(sizes[name]);
            }
            if (auto ok = probes->set_targets(targets); !ok)
                spdlog::warn("kernel: {}", ok.error().message);
        }
        for (auto& c : view.counters) {
            auto e = escalated.find(c.name);
            c.escalated = e != escalated.end();
            c.escalated_at = c.escalated ? e->second : 0;
        }
    }

    static Result<std::unique_ptr<Kernel>> load(const Config& config, const ProcReader& proc,
                                                Keeper* keeper) {
        auto probes = KernelProbes::load(config.kernel, config.limits, keeper);
        if (!probes) return std::unexpected(probes.error());
        KernelProbes* counter = probes->get();
        auto symbols = KernelSymbols::load(
            {.module_generation = [counter] { return counter->module_generation(); }});
        if (!symbols) return std::unexpected(symbols.error());
        std::string names;
        for (const auto& n : (*probes)->attached()) names += (names.empty() ? "" : ", ") + n;
        auto kernel = std::make_unique<Kernel>(std::move(*probes), std::move(*symbols), proc);
        kernel->kinds = config.kernel.kinds;
        kernel->escalates = config.kernel.tracking == WatchRule::Tracking::kEscalate;
        if (kernel->escalates) {
            if (auto m = read_kernel_memory(proc.root()); !m)
                return fail("kernel.tracking: escalate follows the kernel's own counters: " +
                            m.error().message);
            spdlog::info(
                "kernel allocations: following the kernel's counters (slab caches, "
                "percpu, pages, vmalloc); a cache or kind that keeps growing gets its "
                "tracepoints ({} kernel symbols)",
                kernel->symbols.size());
        } else {
            spdlog::info("kernel allocations: tracing {} ({} kernel symbols)", names,
                         kernel->symbols.size());
        }
        return kernel;
    }
};

std::optional<std::string> programs_load_problem(const Config& config) {
    auto probes = Probes::load(config.limits);
    if (!probes) return "the BPF programs do not load: " + probes.error().message;
    if (config.kernel.enabled) {
        auto kernel = KernelProbes::load(config.kernel, config.limits);
        if (!kernel) return "the kernel BPF programs do not load: " + kernel.error().message;
    }
    return std::nullopt;
}

Daemon::Daemon(Config config, DaemonOptions options, std::unique_ptr<Keeper> keeper,
               std::unique_ptr<Probes> probes)
    : config_(std::move(config)),
      options_(std::move(options)),
      keeper_(std::move(keeper)),
      state_dir_(options_.state_dir),
      probes_(std::move(probes)),
      symbolizer_(proc_,
                  SymbolizerOptions{.max_files = config_.limits.symbol_files,
                                    .max_source_entries = config_.limits.symbol_cache_entries,
                                    .max_file_bytes = config_.limits.file_size}),
      tracker_(*probes_, proc_, symbolizer_, config_.watch, config_.escalation),
      memory_reader_(proc_, symbolizer_),
      aggregator_(*probes_, tracker_, memory_reader_),
      unwinder_(proc_, symbolizer_),
      detector_(config_.leak_detection) {
    tracker_.set_python_max_frames(config_.python.max_frames);
    probes_->set_event_handler([this](const lw_event& e) { tracker_.on_event(e); });
    probes_->set_snapshot_handler(
        [this](const lw_snapshot& s) { complete_snapshot(*probes_, unwinder_, s); });
    unwinding_ = std::jthread([this](std::stop_token stop) {
        while (!stop.stop_requested()) {
            int n = probes_->poll_snapshots(200);
            if (n < 0 && n != -EINTR) {
                spdlog::error("polling unwind snapshots: {}", strerror(-n));
                break;
            }
        }
    });
    status_.version = options_.version;
    status_.top_stacks = config_.limits.top_stacks;
    status_.top_processes = config_.limits.top_processes;
    status_.expose_kernel_addresses = config_.expose_kernel_addresses;
    status_.last_reload_time = unix_seconds();
}

Daemon::~Daemon() = default;

Result<std::unique_ptr<Daemon>> Daemon::start(Config config, DaemonOptions options) {
    auto keeper = std::make_unique<Keeper>(KeepOptions{options.pin_dir, options.fd_store});
    auto probes = Probes::load(config.limits, options.probe_mode, keeper.get());
    if (!probes) return std::unexpected(probes.error());
    // Before the first thread: capabilities are per thread.
    if (auto dropped = drop_unneeded_capabilities((*probes)->mode()); !dropped)
        return std::unexpected(dropped.error());
    std::unique_ptr<Daemon> d(
        new Daemon(std::move(config), std::move(options), std::move(keeper), std::move(*probes)));
#if !defined(__x86_64__)
    for (const auto& rule : d->config_.watch)
        if (rule.unwind == WatchRule::Unwind::kDwarf)
            spdlog::warn(
                "rule {}: unwind: dwarf is implemented on x86-64 only; stacks are walked "
                "by frame pointers",
                rule.name);
#endif
    if (d->config_.kernel.enabled) {
        auto kernel = Kernel::load(d->config_, d->proc_, d->keeper_.get());
        if (!kernel) return std::unexpected(kernel.error());
        d->kernel_ = std::move(*kernel);
    }
    d->keeper_->settle();
    d->restore_state();
    d->adopt_kept();
    d->tracker_.scan();
    const std::string& listen = d->options_.listen_override.empty() ? d->config_.listen_address
                                                                    : d->options_.listen_override;
    auto server = HttpServer::start(listen, d->state_, d->options_.web_config_file);
    if (!server) return std::unexpected(server.error());
    d->server_ = std::move(*server);
    spdlog::info(
        "leakwatchd {} listening on {} (port {}{}), {} rules, {} processes watched, {} uprobes",
        d->options_.version, listen, d->server_->port(), d->server_->tls() ? ", TLS" : "",
        d->config_.watch.size(), d->tracker_.attached(), probe_mode_name(d->probes_->mode()));
    return d;
}

void Daemon::run(Requests& requests) {
    sample();
    // Probes of the running processes are attached and HTTP listens: ready.
    notifier_.ready(status_line());
    // Rescans back up the exec/exit events (which a full ring buffer can drop).
    const auto rescan_every = std::max<Duration>(config_.interval * 6, std::chrono::seconds(10));
    auto next_sample = Clock::now() + config_.interval;
    auto next_scan = Clock::now() + rescan_every;
    while (!requests.stop) {
        notifier_.keepalive();
        poll_events(next_sample);
        if (requests.reload.exchange(false)) reload();
        auto now = Clock::now();
        if (now >= next_scan) {
            tracker_.scan();
            next_scan = now + rescan_every;
        }
        if (now >= next_sample) {
            sample();
            rescan_if_events_lost();
            next_sample = now + config_.interval;
            notifier_.status(status_line());
        }
    }
    stop();
}

void Daemon::poll_events(Clock::time_point next_sample) {
    int wait_ms = std::min<int>(tracker_.tick(), static_cast<int>(notifier_.max_wait().count()));
    auto until_sample =
        std::chrono::duration_cast<std::chrono::milliseconds>(next_sample - Clock::now());
    wait_ms = static_cast<int>(std::clamp<int64_t>(until_sample.count(), 0, wait_ms));
    int n = probes_->poll_events(wait_ms);
    if (n < 0 && n != -EINTR)
        log_limited(limiter_, "poll", spdlog::level::warn, "polling process events: {}",
                    strerror(-n));
}

void Daemon::adopt_kept() {
    auto adopted = tracker_.adopt(probes_->take_kept());
    std::set<uint32_t> orphans;
    for (uint32_t tgid : probes_->recorded_processes())
        if (!adopted.count(tgid)) orphans.insert(tgid);
    if (!adopted.empty() || !orphans.empty())
        spdlog::info(
            "{} processes adopted with their records; the records of {} others dropped (their "
            "probes did not outlive the previous leakwatchd)",
            adopted.size(), orphans.size());
    probes_->purge(orphans);
}

// The detector's history: written after a sample, as often as writing at most kSaveBytes per
// sample on average allows (every sample up to ~5,000 series), and at stop; read at start.
constexpr const char* kDetectorState = "detector.state";
constexpr size_t kSaveBytes = 1u << 20;
constexpr size_t kMaxDetectorState = 256u << 20;  // bytes; 10,000 full series take 21 MB

void Daemon::save_state() {
    samples_since_save_ = 0;
    if (!state_dir_.enabled() || !config_.leak_detection.enabled) return;
    std::string bytes = detector_.save();
    save_every_ = std::max<uint64_t>(1, bytes.size() / kSaveBytes);
    if (auto ok = state_dir_.write(kDetectorState, bytes); !ok)
        log_limited(limiter_, "state", spdlog::level::warn, "keeping the detector's history: {}",
                    ok.error().message);
}

void Daemon::restore_state() {
    if (!state_dir_.enabled()) return;
    auto bytes = state_dir_.read(kDetectorState, kMaxDetectorState);
    if (!bytes) {
        spdlog::warn("the detector's history is not restored: {}", bytes.error().message);
        return;
    }
    if (!*bytes) return;
    auto restored = detector_.restore(**bytes);
    if (restored)
        spdlog::info("restored the detector's history of {} series from {}", *restored,
                     state_dir_.path());
    else
        spdlog::warn("the detector's history in {} is not restored: {}", state_dir_.path(),
                     restored.error().message);
}

void Daemon::sample() {
    // Files of watched processes are read on the symbolizer's loader; this sample waits for
    // them no longer than this in all (the rest are named in a later sample).
    symbolizer_.begin_sample(kSampleWaitBudget);
    auto snap =
        std::make_shared<Snapshot>(aggregator_.sample(tracker_.processes(), monotonic_ns()));
    symbolizer_.end_sample();
    snap->lost[LW_LOST_ATTACH_DROPPED] += tracker_.attaches_dropped();
    snap->lost[LW_LOST_EXEC_UNREAD] += tracker_.execs_unread();
    snap->lost[LW_LOST_PYTHON_UNSUPPORTED] += tracker_.python_unsupported();
    // DWARF is held only while new stacks are symbolized; give its memory back.
    if (symbolizer_.release_debug_info()) malloc_trim(0);
    if (kernel_) {
        snap->kernel = kernel_->aggregator.sample();
        if (kernel_->escalates) snap->kernel->counters = kernel_->counters(proc_, limiter_);
        add_lost(snap->lost, kernel_->probes->lost());
        for (auto& u :
             kernel_->probes->usage(snap->kernel->live_records, snap->kernel->totals_entries))
            snap->usage.push_back(std::move(u));
    }
    if (config_.leak_detection.enabled) follow_growth(detector_, *snap, unix_seconds());
    escalate_and_release(*snap);
    if (kernel_ && kernel_->escalates && config_.leak_detection.enabled)
        kernel_->escalate_and_release(*snap->kernel, config_, status_, unix_seconds());
    log_new_losses(snap->lost);
    status_.attached = tracker_.attached();
    status_.escalated = tracker_.escalated();
    status_.max_escalated = config_.escalation.max_processes;
    status_.symbol_caches = symbolizer_.cache_stats();
    status_.unwind = unwinder_.stats();
    status_.files_refused = refused_files();
    status_.file_loads_stuck = symbolizer_.loader().stats().stuck;
    status_.attach_retries = tracker_.attaches_retried();
    status_.jvm_attaches_queued = symbolizer_.jvm_attaches_queued();
    const auto ops = tracker_.probe_operations();
    status_.attaches_in_flight = ops.attaches_in_flight;
    status_.attaches_stuck = ops.attaches_stuck;
    status_.detaches_queued = ops.detaches_queued;
    status_.detaches_stuck = ops.detaches_stuck;
    auto exposition = std::make_shared<const std::string>(render_metrics(*snap, status_, false));
    state_.publish(std::move(snap), status_, std::move(exposition));
    if (++samples_since_save_ >= save_every_) save_state();
}

void Daemon::escalate_and_release(const Snapshot& snap) {
    for (const auto& r : state_.take_requests()) {
        const auto pid = static_cast<pid_t>(r.pid);
        if (r.kind == OperatorRequest::kEscalate) {
            if (auto ok = tracker_.escalate(pid, "an operator asked (POST /api/v1/escalate)"))
                status_.escalations["operator"]++;
            else
                spdlog::warn("escalation asked for pid {}: {}", r.pid, ok.error().message);
        } else {
            tracker_.release(pid, "an operator asked (POST /api/v1/release)");
            escalation_.released_by_operator(std::to_string(r.pid));
            status_.releases["operator"]++;
        }
    }
    if (!config_.leak_detection.enabled) return;
    auto candidates = process_candidates(snap);
    // An escalation whose probes wait in the kernel is one already (tracker/attach_queue.h): not
    // asked for again, and within escalation.max_processes.
    const auto pending = tracker_.escalations_pending();
    for (auto& c : candidates)
        if (auto it = pending.find(static_cast<pid_t>(std::stoul(c.key))); it != pending.end()) {
            c.escalated = true;
            c.eligible = false;
            c.escalated_at = it->second;
        }
    for (const auto& a : escalation_.decide(candidates, config_.escalation, config_.leak_detection,
                                            unix_seconds())) {
        const auto pid = static_cast<pid_t>(std::stoul(a.key));
        if (a.kind == EscalationAction::kRelease) {
            tracker_.release(pid, a.reason);
            status_.releases[a.label]++;
        } else if (auto ok = tracker_.escalate(pid, a.reason)) {
            status_.escalations[a.label]++;
        } else {
            log_limited(limiter_, "escalate", spdlog::level::warn, "escalating pid {}: {}", a.key,
                        ok.error().message);
            status_.escalations["failed"]++;
        }
    }
}

void Daemon::rescan_if_events_lost() {
    auto lost_events = state_.read().first->lost[LW_LOST_EVENTS_FULL];
    if (lost_events == events_lost_seen_) return;
    spdlog::warn("process events were lost ({} so far); rescanning /proc", lost_events);
    events_lost_seen_ = lost_events;
    tracker_.scan();
}

void Daemon::reload() {
    notifier_.reloading();
    spdlog::info("reloading {}", options_.config_path);
    auto fresh = read_config(options_.config_path, options_.explicit_config);
    status_.last_reload_ok = fresh.has_value();
    if (fresh)
        apply(reload_config(config_, *fresh));
    else
        spdlog::error("reload failed, keeping the running configuration: {}",
                      fresh.error().message);
    sample();
    notifier_.ready(status_line());
}

void Daemon::apply(Reload reload) {
    for (auto warning : reload.warnings) spdlog::warn("{}", warning);
    config_ = std::move(reload.config);
    symbolizer_.set_limits(config_.limits.symbol_files, config_.limits.symbol_cache_entries,
                           config_.limits.file_size);
    tracker_.set_escalation(config_.escalation);
    tracker_.set_python_max_frames(config_.python.max_frames);
    detector_.reconfigure(config_.leak_detection);
    status_.top_stacks = config_.limits.top_stacks;
    status_.top_processes = config_.limits.top_processes;
    status_.expose_kernel_addresses = config_.expose_kernel_addresses;
    status_.last_reload_time = unix_seconds();
    if (!options_.log_level_from_flag && reload.changed_key("log_level"))
        spdlog::set_level(spdlog::level::from_str(config_.log_level));
    tracker_.set_rules(config_.watch);
    spdlog::info("reloaded: {} rules, {} processes watched", config_.watch.size(),
                 tracker_.attached());
}

void Daemon::log_new_losses(const LostCounters& lost) {
    for (const LossReason& reason : kLossReasons) {
        if (lost[reason.id] == 0 || reported_[reason.id] != 0) continue;
        reported_[reason.id] = lost[reason.id];
        spdlog::log(reason.expected ? spdlog::level::info : spdlog::level::warn,
                    "lost events ({}): {} so far; {} (logged once, counted in "
                    "leakwatch_lost_events_total)",
                    reason.name, lost[reason.id], reason.advice);
    }
}

std::string Daemon::status_line() const {
    return "watching " + std::to_string(tracker_.attached()) + " processes for " +
           std::to_string(config_.watch.size()) + " rules" +
           (config_.kernel.enabled ? ", and kernel allocations" : "");
}

void Daemon::stop() {
    notifier_.stopping();
    // First, so that no attach starts after: an attach still waiting for its JVM's listener
    // would leave its trigger file in the JVM's /tmp when the process exits.
    if (size_t n = remove_attach_triggers(true))
        spdlog::info("stopping: removed {} JVM attach trigger file(s) of attaches in flight", n);
    save_state();
    // civetweb takes up to 2 s to stop its listener; detaching uprobes takes a kernel grace
    // period each. Both at once.
    std::thread http_stop([this] { server_.reset(); });
    if (keeper_->hands_over()) {
        // The service manager keeps the maps and links: a restart (or an upgrade) takes them
        // back, a stop closes them, which detaches every probe.
        spdlog::info("stopping: handing the probes of {} processes to the service manager",
                     tracker_.attached());
        keeper_->hand_over();
        stuck_in_kernel_ = !tracker_.release_all();
    } else {
        spdlog::info("stopping: detaching from {} processes", tracker_.attached());
        stuck_in_kernel_ = !tracker_.detach_all();
        keeper_->clear();
    }
    http_stop.join();
}

}  // namespace leakwatch
