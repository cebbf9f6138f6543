// The daemon as one object: it loads the BPF programs, watches the processes the config names,
// samples them every interval, serves the snapshots over HTTP and reloads its config on request.
// main() parses the flags, starts it and runs it.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "aggregate/aggregator.h"
#include "aggregate/loss.h"
#include "config/config.h"
#include "config/reload.h"
#include "detect/detector.h"
#include "detect/escalation.h"
#include "http/server.h"
#include "http/state.h"
#include "loader/keep.h"
#include "loader/probes.h"
#include "proc/proc.h"
#include "service/logging.h"
#include "service/notify.h"
#include "service/state_dir.h"
#include "symbols/symbolizer.h"
#include "tracker/tracker.h"
#include "unwind/unwinder.h"
#include "util/result.h"

namespace leakwatch {

struct DaemonOptions {
    std::string version;
    std::string config_path;           // what a reload reads
    bool explicit_config = false;      // given with --config: it must exist
    std::string listen_override;       // --web.listen-address, over the config's listen_address
    std::string web_config_file;       // --web.config.file: TLS and basic authentication
    bool log_level_from_flag = false;  // --log-level, over the config's log_level
    ProbeMode probe_mode = ProbeMode::kAuto;
    // What outlives a run (docs/operations.md, "Restarts, crashes and upgrades"): BPF maps and
    // links pinned here (a bpffs directory; empty: not pinned), handed to the service
    // manager's file descriptor store at a stop when it has one, and the detector's history in
    // the state directory (empty: not kept).
    std::string pin_dir = "/sys/fs/bpf/leakwatch";
    bool fd_store = false;
    std::string state_dir;
};

// What the signal handlers ask of the main loop (lock-free atomics, safe to set from them).
struct Requests {
    std::atomic<bool> stop{false};
    std::atomic<bool> reload{false};
};

// Why the BPF programs would not load with this config (the user-space ones, and the kernel
// ones when kernel tracking is on); nullopt when they load. For --check-config.
std::optional<std::string> programs_load_problem(const Config& config);

class Daemon {
  public:
    // Loads the BPF programs, attaches to the running processes that rules match and listens.
    static Result<std::unique_ptr<Daemon>> start(Config config, DaemonOptions options);
    ~Daemon();

    // Samples, tells the service manager it is ready, and loops until requests.stop: process
    // events, rescans, samples every interval, reloads. Then detaches from every process.
    void run(Requests& requests);
    // After run(): a detach or an attach was left waiting in the kernel (tracker.h,
    // detach_all): destroying the daemon would wait for it, so main() exits without doing so.
    bool stuck_in_kernel() const { return stuck_in_kernel_; }
    // Reads every map once and publishes the snapshot to HTTP.
    void sample();
    // Rereads the config; a valid one replaces what may change live (config/reload.h).
    void reload();

  private:
    struct Kernel;
    Daemon(Config config, DaemonOptions options, std::unique_ptr<Keeper> keeper,
           std::unique_ptr<Probes> probes);

    // Waits for process events until the tracker, the watchdog or the next sample is due.
    void poll_events(std::chrono::steady_clock::time_point next_sample);
    void apply(Reload reload);
    // After a sample: a full event ring dropped process events, which a rescan makes up for.
    void rescan_if_events_lost();
    // The watch tier: escalations the policy decides and the operator asks for (HTTP).
    void escalate_and_release(const Snapshot& snap);
    void log_new_losses(const LostCounters& lost);
    // At start: the processes whose probes the previous run kept are adopted, and what the maps
    // hold of any other process is dropped (frees it made while no probe counted are unknown).
    void adopt_kept();
    void save_state();
    void restore_state();
    std::string status_line() const;
    void stop();

    bool stuck_in_kernel_ = false;
    Config config_;
    const DaemonOptions options_;
    ServiceNotifier notifier_;
    RateLimiter limiter_;
    std::unique_ptr<Keeper> keeper_;
    StateDir state_dir_;
    uint64_t samples_since_save_ = 0;  // of the detector's history
    uint64_t save_every_ = 1;
    std::unique_ptr<Probes> probes_;
    ProcReader proc_;
    Symbolizer symbolizer_;
    Tracker tracker_;
    ProcMemoryReader memory_reader_;
    Aggregator aggregator_;
    Unwinder unwinder_;
    // Completes unwind snapshots: the first allocations of a new stack wait for their rules as
    // little as possible, while the main loop may be symbolizing for tens of milliseconds.
    std::jthread unwinding_;
    std::unique_ptr<Kernel> kernel_;  // when kernel tracking is on
    PublishedState state_;
    DaemonStatus status_;
    std::unique_ptr<HttpServer> server_;
    Detector detector_;
    EscalationPolicy escalation_;
    LostCounters reported_{};        // losses logged so far, by reason
    uint64_t events_lost_seen_ = 0;  // process events lost, as of the last rescan
};

}  // namespace leakwatch
