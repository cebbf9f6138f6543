// leakwatchd: loads the BPF programs, watches the processes the config names, and serves
// their outstanding allocations on /metrics and /api/v1.
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include "aggregate/aggregator.h"
#include "aggregate/loss.h"
#include "config/config.h"
#include "config/reload.h"
#include "detect/follow.h"
#include "http/server.h"
#include "leakwatch.h"
#include "loader/kernel_probes.h"
#include "loader/probes.h"
#include "proc/proc.h"
#include "service/logging.h"
#include "service/notify.h"
#include "symbols/kallsyms.h"
#include "symbols/symbolizer.h"
#include "tracker/tracker.h"
#include "unwind/snapshots.h"
#include "unwind/unwinder.h"
#include "util/clock.h"

namespace {

constexpr const char* kDefaultConfig = "/etc/leakwatch/leakwatch.yaml";
std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};

void on_signal(int sig) {
    if (sig == SIGHUP)
        g_reload = true;
    else
        g_stop = true;
}

void log_new_losses(const leakwatch::LostCounters& lost, leakwatch::LostCounters& reported) {
    for (const leakwatch::LossReason& reason : leakwatch::kLossReasons) {
        if (lost[reason.id] == 0 || reported[reason.id] != 0) continue;
        reported[reason.id] = lost[reason.id];
        spdlog::log(reason.expected ? spdlog::level::info : spdlog::level::warn,
                    "lost events ({}): {} so far; {} (logged once, counted in "
                    "leakwatch_lost_events_total)",
                    reason.name, lost[reason.id], reason.advice);
    }
}

std::string status_line(size_t attached, size_t rules, bool kernel) {
    return "watching " + std::to_string(attached) + " processes for " + std::to_string(rules) +
           " rules" + (kernel ? ", and kernel allocations" : "");
}

int run(leakwatch::Config config, const std::string& config_path, bool explicit_path,
        const std::string& listen_override, bool log_level_from_flag,
        leakwatch::ProbeMode probe_mode) {
    using namespace leakwatch;
    ServiceNotifier notifier;
    RateLimiter limiter;
    auto probes = Probes::load(config.limits, probe_mode);
    if (!probes) {
        spdlog::critical("{}", probes.error().message);
        return 1;
    }
    ProcReader proc;
    SymbolizerOptions symbol_options;
    symbol_options.max_files = config.limits.symbol_files;
    symbol_options.max_source_entries = config.limits.symbol_cache_entries;
    Symbolizer symbolizer(proc, symbol_options);
    Tracker tracker(**probes, proc, symbolizer, config.watch);
    Aggregator aggregator(**probes, tracker);
    (*probes)->set_event_handler([&](const lw_event& e) { tracker.on_event(e); });
    Unwinder unwinder(proc, symbolizer);
    (*probes)->set_snapshot_handler(
        [&](const lw_snapshot& s) { complete_snapshot(**probes, unwinder, s); });
    std::atomic<bool> stop_unwinding{false};
    std::thread unwinding([&] {
        while (!stop_unwinding) {
            int n = (*probes)->poll_snapshots(200);
            if (n < 0 && n != -EINTR) {
                spdlog::error("polling unwind snapshots: {}", strerror(-n));
                break;
            }
        }
    });
    struct Joiner {
        std::atomic<bool>& stop;
        std::thread& thread;
        ~Joiner() {
            stop = true;
            thread.join();
        }
    } join_unwinding{stop_unwinding, unwinding};
#if !defined(__x86_64__)
    for (const auto& rule : config.watch)
        if (rule.unwind == WatchRule::Unwind::kDwarf)
            spdlog::warn(
                "rule {}: unwind: dwarf is implemented on x86-64 only; stacks are walked "
                "by frame pointers",
                rule.name);
#endif

    // Kernel allocations: system-wide tracepoints, symbolized from /proc/kallsyms.
    std::unique_ptr<KernelProbes> kernel_probes;
    std::unique_ptr<Kallsyms> kallsyms;
    std::unique_ptr<KernelAggregator> kernel_aggregator;
    if (config.kernel.enabled) {
        auto kp = KernelProbes::load(config.kernel, config.limits);
        if (!kp) {
            spdlog::critical("{}", kp.error().message);
            return 1;
        }
        auto ks = Kallsyms::load();
        if (!ks) {
            spdlog::critical("{}", ks.error().message);
            return 1;
        }
        kernel_probes = std::move(*kp);
        kallsyms = std::make_unique<Kallsyms>(std::move(*ks));
        std::string names;
        for (const auto& n : kernel_probes->attached()) names += (names.empty() ? "" : ", ") + n;
        spdlog::info("kernel allocations: tracing {} ({} kernel symbols)", names, kallsyms->size());
        const auto ns_per_tick = 1000000000ull / static_cast<uint64_t>(sysconf(_SC_CLK_TCK));
        kernel_aggregator = std::make_unique<KernelAggregator>(
            *kernel_probes, [&](uint64_t addr) { return kallsyms->symbolize(addr); },
            [&proc, ns_per_tick](uint32_t tgid, uint64_t start_ns) -> std::optional<std::string> {
                // /proc/PID/stat counts the start in clock ticks since boot
                auto info = proc.process(static_cast<int>(tgid));
                if (!info || info->start_time != start_ns / ns_per_tick) return std::nullopt;
                return info->comm;
            });
    }

    PublishedState state;
    DaemonStatus status;
    status.version = LEAKWATCH_VERSION;
    status.top_stacks = config.limits.top_stacks;
    status.top_processes = config.limits.top_processes;
    status.last_reload_time = unix_seconds();

    tracker.scan();
    const std::string listen = listen_override.empty() ? config.listen_address : listen_override;
    auto server = HttpServer::start(listen, state);
    if (!server) {
        spdlog::critical("{}", server.error().message);
        return 1;
    }
    spdlog::info(
        "leakwatchd {} listening on {} (port {}), {} rules, {} processes watched, {} uprobes",
        LEAKWATCH_VERSION, listen, (*server)->port(), config.watch.size(), tracker.attached(),
        leakwatch::probe_mode_name((*probes)->mode()));

    Detector detector(config.leak_detection);
    LostCounters reported{};
    auto sample = [&] {
        auto snap = std::make_shared<Snapshot>(
            aggregator.sample(tracker.processes(), leakwatch::monotonic_ns()));
        // DWARF is held only while new stacks are symbolized; give its memory back.
        if (symbolizer.release_debug_info()) malloc_trim(0);
        if (kernel_aggregator) {
            snap->kernel = kernel_aggregator->sample();
            add_lost(snap->lost, kernel_probes->lost());
            for (auto& u :
                 kernel_probes->usage(snap->kernel->live_records, snap->kernel->totals_entries))
                snap->usage.push_back(std::move(u));
        }
        if (config.leak_detection.enabled) follow_growth(detector, *snap, unix_seconds());
        log_new_losses(snap->lost, reported);
        status.attached = tracker.attached();
        status.symbol_caches = symbolizer.cache_stats();
        status.unwind = unwinder.stats();
        state.publish(std::move(snap), status);
    };
    sample();
    // Probes of the running processes are attached and HTTP listens: ready.
    notifier.ready(status_line(tracker.attached(), config.watch.size(), config.kernel.enabled));

    using Clock = std::chrono::steady_clock;
    auto next_sample = Clock::now() + config.interval;
    // Rescans back up the exec/exit events (which a full ring buffer can drop).
    const auto rescan_every = std::max<Duration>(config.interval * 6, std::chrono::seconds(10));
    auto next_scan = Clock::now() + rescan_every;
    uint64_t events_lost_seen = 0;
    while (!g_stop) {
        notifier.keepalive();
        int wait_ms = std::min<int>(tracker.tick(), static_cast<int>(notifier.max_wait().count()));
        auto until_sample =
            std::chrono::duration_cast<std::chrono::milliseconds>(next_sample - Clock::now());
        wait_ms = static_cast<int>(std::clamp<int64_t>(until_sample.count(), 0, wait_ms));
        int n = (*probes)->poll_events(wait_ms);
        if (n < 0 && n != -EINTR)
            log_limited(limiter, "poll", spdlog::level::warn, "polling process events: {}",
                        strerror(-n));

        if (g_reload.exchange(false)) {
            notifier.reloading();
            spdlog::info("reloading {}", config_path);
            auto fresh = read_config(config_path, explicit_path);
            status.last_reload_ok = fresh.has_value();
            if (!fresh) {
                spdlog::error("reload failed, keeping the running configuration: {}",
                              fresh.error().message);
            } else {
                auto reload = reload_config(config, *fresh);
                for (auto warning : reload.warnings) spdlog::warn("{}", warning);
                config = std::move(reload.config);
                symbolizer.set_limits(config.limits.symbol_files,
                                      config.limits.symbol_cache_entries);
                detector.reconfigure(config.leak_detection);
                status.top_stacks = config.limits.top_stacks;
                status.top_processes = config.limits.top_processes;
                status.last_reload_time = unix_seconds();
                if (!log_level_from_flag && reload.changed_key("log_level"))
                    spdlog::set_level(spdlog::level::from_str(config.log_level));
                tracker.set_rules(config.watch);
                spdlog::info("reloaded: {} rules, {} processes watched", config.watch.size(),
                             tracker.attached());
            }
            sample();
            notifier.ready(
                status_line(tracker.attached(), config.watch.size(), config.kernel.enabled));
        }
        auto now = Clock::now();
        if (now >= next_scan) {
            tracker.scan();
            next_scan = now + rescan_every;
        }
        if (now >= next_sample) {
            sample();
            auto lost_events = state.read().first->lost[LW_LOST_EVENTS_FULL];
            if (lost_events != events_lost_seen) {
                spdlog::warn("process events were lost ({} so far); rescanning /proc", lost_events);
                events_lost_seen = lost_events;
                tracker.scan();
            }
            next_sample = now + config.interval;
            notifier.status(
                status_line(tracker.attached(), config.watch.size(), config.kernel.enabled));
        }
    }
    notifier.stopping();
    spdlog::info("stopping: detaching from {} processes", tracker.attached());
    // civetweb takes up to 2 s to stop its listener; detaching uprobes takes a kernel grace
    // period each. Both at once.
    std::thread http_stop([&server] { server->reset(); });
    tracker.detach_all();
    http_stop.join();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"leakwatchd: finds memory leaks in running processes with BPF"};
    std::string config_path = kDefaultConfig;
    std::string listen;
    std::string log_level = "info";
    bool check_config = false;
    bool version = false;
    auto* config_opt =
        app.add_option("--config", config_path, "YAML configuration file")->capture_default_str();
    app.add_option("--web.listen-address", listen,
                   "HOST:PORT for /metrics and the API (overrides listen_address)");
    app.add_flag("--check-config", check_config,
                 "validate the configuration and that the BPF programs load, then exit 0/1");
    auto* log_opt =
        app.add_option("--log-level", log_level,
                       "trace, debug, info, warn, error or critical (overrides "
                       "log_level in the config)")
            ->capture_default_str()
            ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical"}));
    app.add_flag("--version", version, "print the version and exit");
    std::string probe_mode = "auto";
    app.add_option("--probe-mode", probe_mode,
                   "how uprobes are attached: session (one link per process, returns only "
                   "where needed, 6.13+), multi (two links per process, 6.6+), classic (one "
                   "link per probe) or auto (the newest the kernel has)")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "session", "multi", "classic"}));
    CLI11_PARSE(app, argc, argv);

    if (version) {
        std::printf("leakwatchd %s\n", LEAKWATCH_VERSION);
        return 0;
    }
    leakwatch::setup_logging(log_level);

    const bool explicit_path = config_opt->count() > 0;
    auto config = leakwatch::read_config(config_path, explicit_path);
    if (!config) {
        std::fprintf(stderr, "leakwatchd: invalid configuration: %s\n",
                     config.error().message.c_str());
        return 1;
    }
    if (check_config) {
        auto probes = leakwatch::Probes::load(config->limits);
        if (!probes) {
            std::printf("configuration %s is valid, but the BPF programs do not load: %s\n",
                        config->source.c_str(), probes.error().message.c_str());
            return 1;
        }
        if (config->kernel.enabled) {
            auto kernel = leakwatch::KernelProbes::load(config->kernel, config->limits);
            if (!kernel) {
                std::printf(
                    "configuration %s is valid, but the kernel BPF programs do not load: "
                    "%s\n",
                    config->source.c_str(), kernel.error().message.c_str());
                return 1;
            }
        }
        std::printf("configuration %s is valid (%zu watch rules); BPF programs load\n",
                    config->source.c_str(), config->watch.size());
        return 0;
    }

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaction(sig, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    // The config's log_level applies unless the flag was given.
    const bool level_from_flag = log_opt->count() > 0;
    if (!level_from_flag) spdlog::set_level(spdlog::level::from_str(config->log_level));
    auto mode = probe_mode == "session"   ? leakwatch::ProbeMode::kSession
                : probe_mode == "multi"   ? leakwatch::ProbeMode::kMulti
                : probe_mode == "classic" ? leakwatch::ProbeMode::kClassic
                                          : leakwatch::ProbeMode::kAuto;
    return run(std::move(*config), config_path, explicit_path, listen, level_from_flag, mode);
}
