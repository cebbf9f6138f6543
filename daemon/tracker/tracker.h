// Which processes are watched: matches rules against /proc and exec/fork/exit events,
// attaches and detaches their probes, and keeps what symbolization needs of each.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "aggregate/aggregator.h"
#include "config/config.h"
#include "proc/files.h"
#include "proc/proc.h"
#include "symbols/cfi.h"
#include "symbols/lru.h"
#include "symbols/python.h"
#include "symbols/python_namer.h"
#include "symbols/symbolizer.h"
#include "tracker/attach_queue.h"
#include "tracker/attacher.h"
#include "tracker/cmdline_reads.h"
#include "tracker/placement.h"
#include "tracker/reaper.h"

struct lw_event;

namespace leakwatch {

// Also the aggregator's FrameResolver: it names addresses with each process's own maps.
class Tracker : public FrameResolver {
  public:
    using Clock = std::chrono::steady_clock;

    Tracker(Attacher& attacher, const ProcReader& proc, Symbolizer& symbolizer,
            std::vector<WatchRule> rules, Escalation escalation = {});

    // Attaches every running process a rule matches that is not attached yet, and drops
    // processes that are gone (backs up the events, which can be lost).
    void scan();
    void on_event(const lw_event& event);
    // Retries attaches that wait for the dynamic loader, and purges the maps of processes
    // that went away. Returns how long until it wants to run again (ms).
    int tick();
    // Replaces the rules: processes keep their probes and data when the rule they match is
    // the same (config/reload.h, same_rule); others are detached, and newly matching ones
    // attached.
    void set_rules(std::vector<WatchRule> rules);

    // How long the main loop waits for an attach it starts (AttachQueue) before it asks again
    // at the next tries: most take milliseconds; one waiting in the kernel for a memory map lock
    // takes as long as the process holding it likes. Tests lengthen it.
    void set_attach_wait(std::chrono::milliseconds wait) { attach_wait_ = wait; }

    // The watch tier's settings (a reload): the sampling of processes that enter it from now on.
    void set_escalation(const Escalation& escalation) { escalation_ = escalation; }

    // A process of the watch tier gets its allocator probes (its rule's sample_bytes), until
    // release(). Errors when it is not in the watch tier or the probes cannot be attached. An
    // attach that waits in the kernel (attach_queue.h) ends at a later tick(), which logs how
    // it ended; meanwhile it counts in escalated() and escalations_pending(), and asking again
    // changes nothing.
    Result<void> escalate(pid_t pid, std::string_view reason);
    // Its probes go and what they recorded; it stays in the watch tier.
    void release(pid_t pid, std::string_view reason);

    // Detaches every process at once, in parallel (at shutdown). False when a detach or an
    // attach has been stuck in the kernel for `stuck` (attach_queue.h): the daemon then exits
    // without waiting for it.
    bool detach_all(std::chrono::seconds stuck = std::chrono::seconds(10));

    // Attaches and detaches waiting in the kernel (attach_queue.h, reaper.h), for the metrics.
    struct ProbeOperations {
        size_t attaches_in_flight = 0;
        size_t attaches_stuck = 0;  // running for more than 10 s
        size_t detaches_queued = 0;
        size_t detaches_stuck = 0;  // the one under way, running for more than 10 s
    };
    ProbeOperations probe_operations();
    // Lets go of every process without detaching it (at a shutdown that handed the probes
    // over to the next run): no process stops being recorded. Attaches under way are
    // forgotten (their probes detached when they end); false as detach_all says.
    bool release_all(std::chrono::seconds stuck = std::chrono::seconds(10));

    // Takes over the probes a previous run left attached, each under the tag it was kept with
    // (kept_tag). A process is adopted when it is the same process (pid and start time), is
    // still recorded (it has not exec'ed since: the BPF side stops recording at exec), and a
    // rule equal to the one it was attached for matches it; it keeps its attached_at, so its
    // series go on. A process of the watch tier kept with the probes of its escalation is
    // adopted escalated since the same moment (its duration goes on), and back in the watch
    // tier; the detector's history, restored from the state directory, carries its suspicion.
    // The probes of the others are detached. Returns the adopted pids.
    std::set<uint32_t> adopt(std::vector<std::pair<std::string, std::unique_ptr<Attachment>>> kept);

    std::vector<ProcessMeta> processes() const;
    size_t attached() const { return tracked_.size(); }
    // Processes lost to their own short lives (the loss reasons attach_dropped and
    // exec_unread): a rule matched them but they were gone before their probes were
    // attached; they were gone before the rules could be tried (and might have matched).
    // Each process counts once, in one of the two, when it exits.
    uint64_t attaches_dropped() const { return attaches_dropped_; }
    // Processes whose command line is being read for a `cmdline` rule (tracker/cmdline_reads.h).
    size_t cmdlines_held() const { return cmdlines_.size(); }
    uint64_t execs_unread() const { return execs_unread_; }
    // Processes whose allocator's file was too slow to read at their first attach, and so were
    // tried again later (each counted once, however many tries it took).
    uint64_t attaches_retried() const { return attaches_retried_; }
    size_t escalated() const;
    // The processes whose escalation waits for its probes, and since when (unix seconds): the
    // escalation policy counts them as escalated.
    std::map<pid_t, double> escalations_pending() const;
    // Symbolizes an address of a watched process with its own maps.
    Frame resolve(uint32_t pid, uint64_t address) override;
    Frame resolve_python(uint32_t pid, uint64_t code, uint32_t instruction) override;
    // CPython processes whose version has no offsets (their stacks have native frames only),
    // counted once each.
    uint64_t python_unsupported() const { return python_.unsupported(); }
    // Python frames read per allocation, at most (python.max_frames).
    void set_python_max_frames(uint32_t max) { python_max_frames_ = max; }
    uint64_t jit_generation(uint32_t pid) override;

    // How the functions of one mapped file use the frame pointer, and the ELF address its
    // executable mapping's file offset is loaded at (unwind: auto).
    struct FramePointerFile {
        FramePointerUse use;
        uint64_t vaddr = 0;  // ELF address of the mapping's file offset
        bool readable = false;
    };
    // Shared with the loads that fill it (they may outlive the tracker).
    struct FramePointerFiles {
        std::mutex mu;
        LruCache<std::string, FramePointerFile> files{256};
    };
    // Where each allocator function of a process's allocator library is probed, read from the
    // very file the process maps: the symbols from its parse (shared only with files of the
    // same content), the instructions from its bytes. Made on the loader.
    struct ProbePlan {
        std::string error;               // when nothing can be probed
        bool slow = false;               // its file took too long to read: tried again later
        std::shared_ptr<OpenFile> file;  // held until the probes are attached: their path
        struct Probe {
            const char* function;
            uint64_t offset;  // file offset of the probed instruction
            Placement placement;
        };
        std::vector<Probe> probes;
        std::vector<std::string> refused;  // functions not probed at all, and why
    };
    struct PlanSlot {
        std::string key;
        std::mutex mu;
        std::optional<ProbePlan> plan;
    };
    // The tag a process's probes are kept under: pid, start time, attached_at (µs), rule digest,
    // and for a process of the watch tier escalated, when it was (µs).
    static std::string kept_tag(pid_t pid, uint64_t start_time, double attached_at,
                                const WatchRule& rule, double escalated_at = 0);

  private:
    struct Tracked {
        ProcessInfo info;
        WatchRule rule;
        std::unique_ptr<Attachment> attachment;  // the allocator probes, when it has them
        std::vector<MapEntry> maps;
        Clock::time_point maps_read;
        double attached_at;  // unix seconds, when it was first watched
        TrackingState state = TrackingState::kFull;
        double escalated_at = 0;  // unix seconds, while escalated
        // Escalated, its probes still being attached (attach_queue.h): why, for the log, and
        // since when (unix seconds).
        std::optional<std::string> escalating = std::nullopt;
        double escalating_since = 0;
        uint64_t fault_sample_bytes = 0;  // the watch tier's sampling when it entered it
    };
    struct Pending {
        ProcessInfo info;
        WatchRule rule;
        int attempts = 0;
        Clock::time_point next;
        int slow_retries = 0;  // tries after its allocator's file was too slow to read
    };
    // kNotYet: its allocator is not mapped yet (a fresh exec); kLoading: its files are still
    // being read (on the symbolizer's loader); kSlow: reading its allocator's file has taken
    // longer than the symbolizer's `slow` (a busy machine, or a file that never answers).
    enum class Outcome { kAttached, kNotYet, kLoading, kSlow, kFailed };
    // A process whose allocator's file was too slow to read: tried again later, at doubling
    // intervals, a bounded number of times (logged and counted once); then given up on.
    // Returns whether it stays pending.
    bool retry_slow(pid_t pid, Pending& p);

    // The plan for a process, nullopt while its files are read.
    std::optional<ProbePlan> probe_plan(const ProcessInfo& info, const WatchRule& rule,
                                        const std::vector<MapEntry>& maps, const MapEntry& mapping);

    // How a process came to be considered: found by a scan (or at start), forked, or exec'd.
    enum class Seen { kScan, kFork, kExec };
    // `comm`: at an exec event, the new image's comm (the event's), else null.
    void consider(pid_t pid, Seen seen, const char* comm = nullptr);
    // A short-lived process not watched, known to be gone: counted (an exec unread, or an
    // attach dropped), once per process whatever its events' order: `start_time` when its
    // /proc entry was read, else 0 (it was gone before).
    enum class Missed { kUnread, kDropped };
    void miss(Missed why, pid_t pid, uint64_t start_time);
    // A failed attach of a process that is no longer there: an attach dropped.
    void miss_if_gone(pid_t pid, uint64_t start_time);
    // Its attach is given up until it execs (or its pid is reused).
    void give_up(pid_t pid, uint64_t start_time);
    Outcome try_attach(const ProcessInfo& info, const WatchRule& rule, bool log_not_yet);
    // Why a process could not be attached: a warning, or a debug line when it has exited.
    void log_failure(const ProcessInfo& info, const std::string& message);
    // The allocator probes of a process and its recording, started; `out` gets them.
    // `attached_at`: when the process was first watched (a kept probe's tag carries it).
    // `escalated_at`: when a process of the watch tier was escalated (its kept tag says so).
    // Both times are those of the attempt that started the attach, when it waited in the
    // kernel (kLoading in between).
    Outcome attach_probes(const ProcessInfo& info, const WatchRule& rule,
                          const std::vector<MapEntry>& maps, double& attached_at, bool log_not_yet,
                          std::unique_ptr<Attachment>& out, double& escalated_at);
    // Plans the probes of a process and starts their attach (AttachQueue): its result when it
    // ended within the wait, nullopt while its files are read or it waits, or why it cannot.
    std::expected<std::optional<AttachQueue::Done>, Outcome> start_attach(
        const ProcessInfo& info, const WatchRule& rule, const std::vector<MapEntry>& maps,
        const MapEntry& mapping, uint64_t load_bias, const std::string& owner, double attached_at,
        double escalated_at);
    // An escalation whose probes were still being attached: done, failed, or still waiting.
    void finish_escalation(pid_t pid, Tracked& t);
    // At a stop: waits for the attaches and detaches under way while they make progress;
    // false (logged) when one has waited `stuck` in the kernel.
    bool drain_probe_operations(std::chrono::seconds stuck);
    // Its probes attached: escalated since `escalated_at` (logged).
    void mark_escalated(pid_t pid, Tracked& t, double escalated_at, std::string_view reason);
    // How the process's stacks are walked (its rule's unwind, and its code ranges).
    // A HotSpot JVM (libjvm.so mapped): its structures are read (its interpreted frames named),
    // and its perf map asked for if its rule lets it.
    void watch_jvm(pid_t pid, const WatchRule& rule, const std::vector<MapEntry>& maps);
    Recording stack_recording(const ProcessInfo& info, const WatchRule& rule,
                              const std::vector<MapEntry>& maps);
    // Its probes go in the background (reaper.h); new probes for the same pid (an exec, a rule
    // changed) wait until they are gone, or the new image would be counted twice.
    void detach(pid_t pid, const char* why);
    // The code of a process that stacks may cross by the frame pointer (files whose
    // functions keep one), and inside it what must be walked by rules: `unwind: auto`.
    void add_frame_pointer_code(pid_t pid, const std::vector<MapEntry>& maps,
                                const std::string& exe, Recording& recording);
    void flush_purges();
    // The CPython runtime of a process, found once per process (logged when it has no
    // offsets), on the loader; nullptr when it runs none or one without offsets, or while it
    // is being read (then *pending).
    std::shared_ptr<const PythonRuntime> python_runtime(const ProcessInfo& info,
                                                        const std::vector<MapEntry>& maps,
                                                        bool* pending = nullptr);
    // Whether the CPython runtime of a process is still being looked for (then the attach
    // waits: Outcome::kLoading).
    bool python_loading(const ProcessInfo& info, const std::vector<MapEntry>& maps);
    // Matches a watched process again with its cgroup and uids as they are now (a process can
    // be moved, or change its uid): under another rule, or none, it is detached (and attached
    // for the other rule).
    void rematch(pid_t pid);

    Attacher& attacher_;
    const ProcReader& proc_;
    Symbolizer& symbolizer_;
    std::vector<WatchRule> rules_;
    Escalation escalation_;
    pid_t self_;
    std::map<pid_t, Tracked> tracked_;
    std::map<pid_t, Pending> pending_;
    // Processes whose command line a `cmdline` rule waits for (tracker/cmdline_reads.h): how
    // they were seen, and when to ask again.
    std::map<pid_t, std::pair<Seen, Clock::time_point>> awaiting_cmdline_;
    CmdlineReads cmdlines_;
    // Processes attached lately and when to look again whether they are still there: one that
    // exited while it was attached sent no exit event (it was not yet in the `watched` map),
    // and would hold its probes' descriptors until the next scan.
    std::deque<std::pair<pid_t, Clock::time_point>> recheck_;
    std::map<pid_t, uint64_t> failed_;  // pid -> start_time of a process that cannot be attached
    std::set<std::string> single_stepped_;  // "path:function" already logged as single-stepped
    std::set<uint32_t> purge_;
    uint64_t attaches_dropped_ = 0;
    uint64_t execs_unread_ = 0;
    uint64_t attaches_retried_ = 0;
    bool detach_stuck_logged_ = false;
    std::chrono::milliseconds attach_wait_{250};
    // The processes counted by miss(), so that none counts twice: a process that exec'ed twice
    // before its events were read, or was counted at a failed attach and then at a late exec
    // event, has more than one event saying it is gone. Forgotten at its exit event, or after
    // kMissedRemembered (5 s, at a tick); a process of that pid read with another start time
    // counts anew meanwhile. (A process of a reused pid gone before it was read, within those
    // 5 s, is taken for the one before: the events carry no start time.)
    struct MissedProcess {
        uint64_t start_time = 0;  // 0: gone before its /proc entry was read
        Clock::time_point at;
    };
    std::map<pid_t, MissedProcess> missed_;
    Clock::time_point missed_expired_{};
    // Per mapped file (path, device, inode, offset of its executable mapping): how its
    // functions use the frame pointer, and the ELF address that offset is loaded at.
    std::shared_ptr<FramePointerFiles> frame_pointer_files_ = std::make_shared<FramePointerFiles>();
    std::map<pid_t, std::shared_ptr<PlanSlot>> plans_;  // probe plans being made
    // CPython processes: their runtime and their code objects, read on the loader.
    PythonNamer python_{proc_, symbolizer_};
    uint32_t python_max_frames_ = 16;
    Reaper reaper_;  // destroyed after the attaches, detaching what is still queued
    // Last: destroyed first (it hands the probes of attaches never taken to the reaper).
    AttachQueue attaches_{attacher_, reaper_};
};

}  // namespace leakwatch
