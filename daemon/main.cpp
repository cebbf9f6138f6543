// leakwatchd: loads the BPF programs, watches the processes the config names, and serves
// their outstanding allocations on /metrics and /api/v1. The work is the Daemon's
// (service/daemon.h); here are the flags and the exit codes.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "config/config.h"
#include "http/web_config.h"
#include "loader/probes.h"
#include "service/daemon.h"
#include "service/logging.h"

namespace {

constexpr const char* kDefaultConfig = "/etc/leakwatch/leakwatch.yaml";
leakwatch::Requests g_requests;

void on_signal(int sig) {
    (sig == SIGHUP ? g_requests.reload : g_requests.stop) = true;
}

// --check-config: the config (and the web config, if given) is valid; do the BPF programs
// load with it?
int check_config(const leakwatch::Config& config, const std::string& web_config) {
    if (!web_config.empty()) {
        auto web = leakwatch::load_web_config(web_config);
        if (!web) {
            std::printf("web config is invalid: %s\n", web.error().message.c_str());
            return 1;
        }
        std::printf("web config %s is valid (%s, %zu users)\n", web_config.c_str(),
                    web->tls ? "TLS" : "plain HTTP", web->users.size());
    }
    if (auto problem = leakwatch::programs_load_problem(config)) {
        std::printf("configuration %s is valid, but %s\n", config.source.c_str(), problem->c_str());
        return 1;
    }
    std::printf("configuration %s is valid (%zu watch rules); BPF programs load\n",
                config.source.c_str(), config.watch.size());
    return 0;
}

// The first directory of $STATE_DIRECTORY (systemd's StateDirectory=, colon-separated).
std::string state_directory_from_env() {
    const char* env = std::getenv("STATE_DIRECTORY");
    if (!env) return {};
    std::string dirs = env;
    return dirs.substr(0, dirs.find(':'));
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"leakwatchd: finds memory leaks in running processes with BPF"};
    std::string config_path = kDefaultConfig;
    std::string listen;
    std::string log_level = "info";
    bool check = false;
    bool version = false;
    auto* config_opt =
        app.add_option("--config", config_path, "YAML configuration file")->capture_default_str();
    app.add_option("--web.listen-address", listen,
                   "HOST:PORT for /metrics and the API (overrides listen_address)");
    std::string web_config;
    app.add_option("--web.config.file", web_config,
                   "TLS and basic authentication, in the Prometheus exporter-toolkit format "
                   "(re-read when it changes)");
    app.add_flag("--check-config", check,
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
    std::string pin_dir = "/sys/fs/bpf/leakwatch";
    app.add_option("--bpf-pin-dir", pin_dir,
                   "bpffs directory where the BPF maps and probe links are pinned, so that they "
                   "outlive a crash (empty: not pinned)")
        ->capture_default_str();
    std::string state_dir;
    auto* state_opt =
        app.add_option("--state-dir", state_dir,
                       "directory for the leak detector's history across restarts (default: "
                       "$STATE_DIRECTORY, which systemd sets; neither: not kept)");
    CLI11_PARSE(app, argc, argv);

    if (version) {
        std::printf("leakwatchd %s\n", LEAKWATCH_VERSION);
        return 0;
    }
    leakwatch::setup_logging(log_level);

    leakwatch::DaemonOptions options;
    options.version = LEAKWATCH_VERSION;
    options.config_path = config_path;
    options.explicit_config = config_opt->count() > 0;
    options.listen_override = listen;
    options.web_config_file = web_config;
    options.log_level_from_flag = log_opt->count() > 0;
    options.probe_mode = probe_mode == "session"   ? leakwatch::ProbeMode::kSession
                         : probe_mode == "multi"   ? leakwatch::ProbeMode::kMulti
                         : probe_mode == "classic" ? leakwatch::ProbeMode::kClassic
                                                   : leakwatch::ProbeMode::kAuto;
    options.pin_dir = pin_dir;
    options.state_dir = state_opt->count() ? state_dir : state_directory_from_env();
    // systemd 254+ exports $FDSTORE when the unit has a file descriptor store; the unit sets it
    // for older ones.
    const char* fdstore = std::getenv("FDSTORE");
    options.fd_store = fdstore && std::atoi(fdstore) > 0 && std::getenv("NOTIFY_SOCKET");
    auto config = leakwatch::read_config(config_path, options.explicit_config);
    if (!config) {
        std::fprintf(stderr, "leakwatchd: invalid configuration: %s\n",
                     config.error().message.c_str());
        return 1;
    }
    if (check) return check_config(*config, web_config);

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaction(sig, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    // The config's log_level applies unless the flag was given.
    if (!options.log_level_from_flag) spdlog::set_level(spdlog::level::from_str(config->log_level));

    auto daemon = leakwatch::Daemon::start(std::move(*config), std::move(options));
    if (!daemon) {
        spdlog::critical("{}", daemon.error().message);
        return 1;
    }
    (*daemon)->run(g_requests);
    if ((*daemon)->stuck_in_kernel()) {
        // The process still ends only once the kernel lets the stuck thread go (exit waits for
        // every thread); nothing of the daemon waits for it before.
        spdlog::error("stopped with probes still waiting in the kernel");
        spdlog::shutdown();
        std::_Exit(0);
    }
    return 0;
}
