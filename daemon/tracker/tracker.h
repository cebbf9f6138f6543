// Which processes are watched: matches rules against /proc and exec/fork/exit events,
// attaches and detaches their probes, and keeps what symbolization needs of each.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "aggregate/aggregator.h"
#include "config/config.h"
#include "proc/proc.h"
#include "symbols/cfi.h"
#include "symbols/lru.h"
#include "symbols/symbolizer.h"
#include "tracker/attacher.h"
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

    // The watch tier's settings (a reload): the sampling of processes that enter it from now on.
    void set_escalation(const Escalation& escalation) { escalation_ = escalation; }

    // A process of the watch tier gets its allocator probes (its rule's sample_bytes), until
    // release(). Errors when it is not in the watch tier or the probes cannot be attached.
    Result<void> escalate(pid_t pid, std::string_view reason);
    // Its probes go and what they recorded; it stays in the watch tier.
    void release(pid_t pid, std::string_view reason);

    // Detaches every process at once, in parallel (at shutdown).
    void detach_all();

    std::vector<ProcessMeta> processes() const;
    size_t attached() const { return tracked_.size(); }
    size_t escalated() const;
    // Symbolizes an address of a watched process with its own maps.
    Frame resolve(uint32_t pid, uint64_t address) override;
    uint64_t jit_generation(uint32_t pid) override;

  private:
    struct Tracked {
        ProcessInfo info;
        WatchRule rule;
        std::unique_ptr<Attachment> attachment;  // the allocator probes, when it has them
        std::vector<MapEntry> maps;
        Clock::time_point maps_read;
        double attached_at;  // unix seconds, when it was first watched
        TrackingState state = TrackingState::kFull;
        double escalated_at = 0;          // unix seconds, while escalated
        uint64_t fault_sample_bytes = 0;  // the watch tier's sampling when it entered it
    };
    struct Pending {
        ProcessInfo info;
        WatchRule rule;
        int attempts = 0;
        Clock::time_point next;
    };
    enum class Outcome { kAttached, kNotYet, kFailed };

    void consider(pid_t pid, bool fresh_exec);
    Outcome try_attach(const ProcessInfo& info, const WatchRule& rule, bool log_not_yet);
    // The allocator probes of a process and its recording, started; `out` gets them.
    Outcome attach_probes(const ProcessInfo& info, const WatchRule& rule,
                          const std::vector<MapEntry>& maps, bool log_not_yet,
                          std::unique_ptr<Attachment>& out);
    // How the process's stacks are walked (its rule's unwind, and its code ranges).
    Recording stack_recording(pid_t pid, const WatchRule& rule, const std::vector<MapEntry>& maps,
                              const std::string& exe);
    // `in_background`: only when the process is gone for good (exit). Otherwise the old
    // probes must be gone before new ones attach, or the new image would be counted twice.
    void detach(pid_t pid, const char* why, bool in_background = false);
    // The code of a process that stacks may cross by the frame pointer (files whose
    // functions keep one), and inside it what must be walked by rules: `unwind: auto`.
    void add_frame_pointer_code(pid_t pid, const std::vector<MapEntry>& maps,
                                const std::string& exe, Recording& recording);
    void flush_purges();

    Attacher& attacher_;
    const ProcReader& proc_;
    Symbolizer& symbolizer_;
    std::vector<WatchRule> rules_;
    Escalation escalation_;
    pid_t self_;
    std::map<pid_t, Tracked> tracked_;
    std::map<pid_t, Pending> pending_;
    std::map<pid_t, uint64_t> failed_;  // pid -> start_time of a process that cannot be attached
    std::set<std::string> single_stepped_;  // "path:function" already logged as single-stepped
    std::set<uint32_t> purge_;
    // Per mapped file (path, device, inode, offset of its executable mapping): how its
    // functions use the frame pointer, and the ELF address that offset is loaded at.
    struct FramePointerFile {
        FramePointerUse use;
        uint64_t vaddr = 0;  // ELF address of the mapping's file offset
        bool readable = false;
    };
    LruCache<std::string, FramePointerFile> frame_pointer_files_{256};
    Reaper reaper_;  // last: destroyed first, detaching what is still queued
};

}  // namespace leakwatch
