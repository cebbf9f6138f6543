// Reads of a watched (or candidate) process's /proc files that take its memory map's lock
// (/proc/PID/maps before 6.x's per-VMA locks, cmdline, pagemap), off the caller's thread.
//
// Any process can hold that lock up for as long as it likes, without privileges: one of its
// threads reads its own page of a FUSE file that never answers (the lock held for reading while
// the fault waits), another calls mmap (a writer, queued), and every later reader queues behind
// that writer. So:
// - each read runs on a pool of threads of its own (ProcReadPool: never the threads that load
//   ELF and DWARF files), one read in flight per process, of any file;
// - the caller waits for a read at most as long as its `wait_for` says (the symbolizer's wait,
//   250 ms, once per read), and nothing when reads of the same user are stuck already;
// - what a read gave last is kept per process (ProcFileReads), and a later call picks up a read
//   that ended since;
// - a read longer than the symbolizer's `slow` is refused (files_refused{reason="slow"}, logged
//   once) and not waited for again;
// - reads in flight are bounded per user and in all: a user whose processes hold up `per_uid`
//   reads, or a pool holding up `total`, gets no new read (files_refused{reason="busy"}, logged
//   once) until one ends, so that such processes hold up neither all the pool's threads nor
//   the reads of other users' processes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "proc/files.h"
#include "proc/proc.h"
#include "util/bounded_loader.h"
#include "util/result.h"

namespace leakwatch {

// The bounds of a ProcReadPool.
struct ProcReadLimits {
    size_t per_uid = 4;  // reads in flight of one user's processes
    size_t total = 24;   // reads in flight in all (the pool's threads)
    // Of those, reads done on their caller's own thread (ProcReadPool::gate): the symbolizer's
    // loader has 8 threads, which such reads must never hold all of.
    size_t on_caller = 4;
};

// The threads that run /proc reads, and what is in flight on them.
class ProcReadPool {
  public:
    using Clock = std::chrono::steady_clock;
    using Limits = ProcReadLimits;
    static constexpr uint32_t kUnknownUid = UINT32_MAX;

    explicit ProcReadPool(Limits limits = Limits());
    ProcReadPool(const ProcReadPool&) = delete;
    ProcReadPool& operator=(const ProcReadPool&) = delete;

    enum class Admission {
        kStarted,  // the read may start
        kPid,      // a read of this process is in flight already: ask again later
        kUid,      // its user has `per_uid` reads in flight
        kTotal,    // the pool has `total` reads in flight
    };
    // Held by a read admitted, for as long as it runs (it may outlive the pool).
    using Flight = std::shared_ptr<void>;
    // Admits a read of pid (of user uid): the flight (when started) ends when it is let go.
    std::pair<Admission, Flight> admit(pid_t pid, uint32_t uid);
    // Whether uid has a read in flight that has run longer than `after` (a first read of its
    // next process is then not waited for: each would cost the caller that wait again).
    bool stuck(uint32_t uid, std::chrono::milliseconds after) const;
    size_t in_flight() const;

    // Admission for a read that cannot leave its caller's thread (an open through
    // /proc/PID/map_files, the symbolizer's reads of /proc/PID/mem: both take the memory map's
    // lock, on the ELF loader's threads). The same bounds as admit(), and `on_caller` of them
    // at most at once; a read of the same process in flight (a maps read, usually over in
    // microseconds) is waited for up to `wait`. Returns the flight to hold while reading, or
    // nullopt: refused (the caller counts and logs it). It keeps what it needs: it may be
    // called after the pool is gone (a load that outlives it).
    using Gate = ProcGate;
    Gate gate(const ProcReader& proc, std::chrono::milliseconds wait) const;

    BoundedLoader& loader() { return loader_; }
    const Limits& limits() const { return limits_; }

    struct Flights;  // what is in flight (proc_reads.cpp)

  private:
    const Limits limits_;
    std::shared_ptr<Flights> flights_;  // shared with the flights, which may outlive the pool
    // Last: destroyed first, its idle threads joined while the rest lives.
    BoundedLoader loader_;
};

// The real uid of pid from its /proc/PID/status (which takes no memory map lock), or
// ProcReadPool::kUnknownUid.
uint32_t process_uid(const ProcReader& proc, pid_t pid);

// Reads of one /proc file (`file`: "maps", "cmdline", "pagemap") of many processes, on a
// ProcReadPool; per process, the newest result is kept until forget().
template <class T>
class ProcFileReads {
  public:
    using Value = std::shared_ptr<const T>;
    using Load = std::function<Result<T>()>;
    // How long to wait for the load of a key now; nullopt: it has run too long (refused).
    using WaitFor = std::function<std::optional<std::chrono::milliseconds>(const std::string&)>;
    struct Options {
        std::string file;     // the file's name under /proc/PID
        std::string refused;  // what a refusal as slow means for the process (logged)
        // The wait after which a read counts as stuck for ProcReadPool::stuck.
        std::chrono::milliseconds stuck_after{250};
        // Reads of this file in flight at most (0: only the pool's bounds), so that an exec
        // storm piles up neither loads nor memory.
        size_t max_in_flight = 0;
        // A read that ended since the last call is handed out as it is, no new one started
        // (a command line does not change without an exec); else a new read is started and
        // waited for, the ended one's result standing in when it does not end in time.
        bool hand_out_ended = false;
    };

    ProcFileReads(const ProcReader& proc, ProcReadPool& pool, WaitFor wait_for, Options options)
        : proc_(proc),
          pool_(pool),
          wait_for_(std::move(wait_for)),
          options_(std::move(options)),
          state_(std::make_shared<State>()) {}
    ProcFileReads(const ProcFileReads&) = delete;
    ProcFileReads& operator=(const ProcFileReads&) = delete;

    struct Read {
        Value value;           // the newest result (nullptr: none yet, or the last read failed)
        bool fresh = false;    // `value` was read since the last call
        bool pending = false;  // a read of pid is under way, or could not start yet
        bool refused = false;  // ... and is refused: slow (too long) or busy (bounds reached)
        bool busy = false;     // refused as busy: ask again later
        bool gone = false;     // the last read failed (the process exited); `error` says why
        std::string error;
    };

    // Asks for pid's file as it is now by `load`: starts a read unless one of pid is under
    // way, and waits for it as `wait_for` says. `generation` tells processes at one pid apart
    // (its start time; 0 when the caller forgets exited ones itself): a different one drops
    // what was kept.
    Read read(pid_t pid, uint64_t generation, Load load) {
        uint64_t epoch = 0;
        std::string key;
        uint32_t uid = 0;
        bool start = false;
        {
            std::lock_guard lock(state_->mu);
            auto it = state_->entries.find(pid);
            if (it != state_->entries.end() && it->second.generation != generation) {
                state_->entries.erase(it);
                it = state_->entries.end();
            }
            if (it == state_->entries.end()) {
                it = state_->entries.emplace(pid, Entry{}).first;
                it->second.generation = generation;
                it->second.epoch = ++state_->epochs;
                it->second.uid = ProcReadPool::kUnknownUid;
                it->second.uid_known = false;
            }
            Entry& e = it->second;
            epoch = e.epoch;
            if (options_.hand_out_ended && e.done) {
                Read out;
                out.fresh = pick_up(e);
                out.value = e.kept;
                out.gone = e.gone;
                out.error = e.error;
                return out;
            }
            if (e.key.empty() || !e.in_flight) {
                start = true;
                e.key = options_.file + ":" + std::to_string(pid) + ":" + std::to_string(epoch) +
                        ":" + std::to_string(++e.reads);
            }
            key = e.key;
            if (!e.uid_known) {
                e.uid_known = true;
                e.uid = process_uid(proc_, pid);  // status: takes no memory map lock
            }
            uid = e.uid;
        }
        Read out;
        auto wait = wait_for_(key);
        if (!wait) {
            refuse_file(Refusal::kSlow, path(pid),
                        "reading it takes too long (the process holds up its memory map's "
                        "lock); " +
                            options_.refused);
            out = kept(pid);
            out.pending = out.refused = true;
            return out;
        }
        if (start) {
            auto not_started = [&](bool busy) {
                Read r = kept(pid);
                r.pending = true;
                r.refused = r.busy = busy;
                drop_if_empty(pid, epoch);
                return r;
            };
            if (options_.max_in_flight > 0 && in_flight() >= options_.max_in_flight)
                return not_started(false);
            auto [admission, flight] = pool_.admit(pid, uid);
            switch (admission) {
                case ProcReadPool::Admission::kStarted:
                    break;
                case ProcReadPool::Admission::kPid:
                    return not_started(false);
                case ProcReadPool::Admission::kUid:
                case ProcReadPool::Admission::kTotal:
                    refuse_file(Refusal::kBusy, path(pid),
                                "reads of /proc files of its user's processes (or of all) are "
                                "held up already; " +
                                    options_.refused);
                    return not_started(true);
            }
            // No first wait for a read of a user whose other reads are stuck: each process of
            // theirs would cost the caller that wait again.
            if (pool_.stuck(uid, options_.stuck_after)) *wait = std::chrono::milliseconds(0);
            {
                std::lock_guard lock(state_->mu);
                auto it = state_->entries.find(pid);
                if (it != state_->entries.end() && it->second.epoch == epoch)
                    it->second.in_flight = true;
                state_->in_flight++;
            }
            auto run = [state = state_, pid, epoch, flight = std::move(flight),
                        load = std::move(load)]() mutable {
                Result<T> got = load();
                flight.reset();
                std::lock_guard lock(state->mu);
                state->in_flight--;
                auto it = state->entries.find(pid);
                if (it == state->entries.end() || it->second.epoch != epoch) return;
                Entry& e = it->second;
                e.in_flight = false;
                e.done = true;
                if (got) {
                    e.result = std::make_shared<const T>(std::move(*got));
                    e.result_error.clear();
                } else {
                    e.result = nullptr;
                    e.result_error = got.error().message;
                }
            };
            pool_.loader().run(key, std::move(run), *wait);
        } else if (wait->count() > 0) {
            pool_.loader().wait(key, *wait);  // under way: only waited for
        }
        return kept(pid);
    }

    // The value read last of pid, picking up a read ended since; never starts one.
    Value last(pid_t pid) {
        std::lock_guard lock(state_->mu);
        auto it = state_->entries.find(pid);
        if (it == state_->entries.end()) return nullptr;
        pick_up(it->second);
        return it->second.kept;
    }
    // What is held of pid goes (it exited, exec'd, or is no longer wanted). A read of it in
    // flight still counts in the pool until it ends.
    void forget(pid_t pid) {
        std::lock_guard lock(state_->mu);
        state_->entries.erase(pid);
    }
    // What is held of every pid but those `keep` says goes.
    void forget_unless(const std::function<bool(pid_t)>& keep) {
        std::lock_guard lock(state_->mu);
        std::erase_if(state_->entries, [&](const auto& e) { return !keep(e.first); });
    }
    size_t size() const {
        std::lock_guard lock(state_->mu);
        return state_->entries.size();
    }
    // Reads started and not ended (of forgotten processes too).
    size_t in_flight() const {
        std::lock_guard lock(state_->mu);
        return state_->in_flight;
    }
    std::string path(pid_t pid) const {
        return proc_.root() + "/" + std::to_string(pid) + "/" + options_.file;
    }

  private:
    struct Entry {
        uint64_t generation = 0;
        // Which process at this pid the entry is for: a load started for one that was
        // forgotten since (it exited, the pid was reused) drops what it read.
        uint64_t epoch = 0;
        uint64_t reads = 0;
        uint32_t uid = 0;
        bool uid_known = false;
        std::string key;  // of the read started last
        bool in_flight = false;
        Value kept;  // the value read last
        bool gone = false;
        std::string error;
        // What the last load ended with, until a caller picks it up.
        bool done = false;
        Value result;
        std::string result_error;
    };
    struct State {
        std::mutex mu;
        std::map<pid_t, Entry> entries;
        uint64_t epochs = 0;
        size_t in_flight = 0;
    };
    // Lets go of the entry of a read that did not start, when it holds nothing either.
    void drop_if_empty(pid_t pid, uint64_t epoch) {
        std::lock_guard lock(state_->mu);
        auto it = state_->entries.find(pid);
        if (it != state_->entries.end() && it->second.epoch == epoch && !it->second.kept &&
            !it->second.done && !it->second.in_flight && !it->second.gone)
            state_->entries.erase(it);
    }
    // Moves a finished read into what is kept. Caller holds the lock.
    static bool pick_up(Entry& e) {
        if (!e.done) return false;
        e.done = false;
        e.kept = std::move(e.result);
        e.gone = !e.kept;
        e.error = std::move(e.result_error);
        return true;
    }
    Read kept(pid_t pid) {
        std::lock_guard lock(state_->mu);
        Read out;
        auto it = state_->entries.find(pid);
        if (it == state_->entries.end()) return out;
        Entry& e = it->second;
        out.fresh = pick_up(e);
        out.value = e.kept;
        out.gone = e.gone;
        out.error = e.error;
        out.pending = e.in_flight;
        return out;
    }

    ProcReader proc_;  // a copy: loads may outlive the caller's
    ProcReadPool& pool_;
    WaitFor wait_for_;
    Options options_;
    std::shared_ptr<State> state_;  // shared with the loads, which may outlive this
};

}  // namespace leakwatch
