// What outlives leakwatchd (docs/operations.md, "Restarts, crashes and upgrades"): the maps of
// its BPF objects and the links of their probes, pinned in a bpffs directory while it runs, and
// handed to the service manager's file descriptor store at a stop that a start may follow. The
// next leakwatchd takes them back, so the probes count while no leakwatchd runs.
//
// Everything one BPF object keeps is named under "<object>-<layout>/": "maps/<map>",
// "links/<name>"; <layout> is a hash of the format of the kept maps (state_layout), so a
// leakwatchd never reads maps of another format: those are dropped, and the log says so. (No
// '.' in these names: bpffs refuses them.)
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/result.h"

struct bpf_object;

namespace leakwatch {

struct KeepOptions {
    // A directory on a bpffs (default /sys/fs/bpf/leakwatch); empty: nothing is pinned, and a
    // crash loses the state.
    std::string pin_dir;
    // The service manager keeps file descriptors for the next start ($FDSTORE, set by systemd
    // 254+ and by the unit): a stop hands everything over instead of detaching.
    bool fd_store = false;
};

// One BPF object's kept maps and links.
class KeptSet {
  public:
    KeptSet(std::string name, std::string dir, std::map<std::string, int> found);
    ~KeptSet();  // closes what was found and not taken
    const std::string& name() const { return name_; }

    // What the previous run kept under `rel` (the caller owns the descriptor), or -1.
    int take(const std::string& rel);
    // Everything the previous run kept under names starting with `prefix`, by name.
    std::vector<std::pair<std::string, int>> take_all(std::string_view prefix);
    // Pins `fd` as `rel` (replacing what is pinned there) and hands it over at a stop. The caller
    // still owns fd, and calls forget(rel) before closing it.
    Result<void> keep(const std::string& rel, int fd);
    void forget(const std::string& rel);
    size_t kept() const;

  private:
    friend class Keeper;
    const std::string name_;
    const std::string dir_;  // where its pins go; empty: no pins
    mutable std::mutex mu_;
    std::map<std::string, int> found_;  // from the previous run, not taken yet
    std::map<std::string, int> kept_;   // rel -> fd (not owned)
};

class Keeper {
  public:
    // Takes the descriptors the service manager handed back, and finds the pin directory.
    explicit Keeper(KeepOptions options);
    ~Keeper();

    // The kept set of a BPF object with this layout: what the previous run kept of it, when it
    // had the same layout; a kept set of another layout is dropped (and logged).
    std::shared_ptr<KeptSet> set(const std::string& object, uint64_t layout);
    // Once every set is made: drops what no set claimed (objects no longer loaded, such as the
    // kernel's when kernel tracking was turned off) and empties the service manager's store,
    // whose descriptors the sets now hold (the next stop hands them over again).
    void settle();

    bool pinning() const { return !pin_dir_.empty(); }
    bool hands_over() const { return options_.fd_store; }
    // At a stop a start may follow: every kept descriptor to the service manager, then no pin
    // stays. False when there is no store (nothing was handed over).
    bool hand_over();
    // At a stop for good: no pin stays.
    void clear();

  private:
    KeepOptions options_;
    std::string pin_dir_;                // empty when pins are off
    int lock_fd_ = -1;                   // the pin directory, locked while this process runs
    std::map<std::string, int> stored_;  // from the service manager: name -> fd
    std::vector<std::string> received_;  // their names, to empty the store
    std::vector<std::shared_ptr<KeptSet>> sets_;
};

// The layout of a BPF object's kept maps: their names, types, sizes and flags, and the BTF
// layout of their keys and values (struct members, offsets, types), hashed. Maps added to the
// object later are part of it (and kept) unless `scratch` names them.
uint64_t state_layout(bpf_object* obj, const std::set<std::string>& scratch);
// The maps of `obj` that hold state: all but libbpf's internal ones and the scratch ones.
bool kept_map(const char* name, bool internal, const std::set<std::string>& scratch);

// Before load: the maps of `obj` reuse what the set kept. After load: every kept map is kept
// (pinned) again. Errors name the map.
Result<void> reuse_kept_maps(KeptSet& set, bpf_object* obj, const std::set<std::string>& scratch);
Result<void> keep_maps(KeptSet& set, bpf_object* obj, const std::set<std::string>& scratch);
// Keeps the links of a newly loaded object's programs under "links/ev_<name>", in place of what
// the previous run kept there, which is then closed: for a moment both count, which the programs
// attached this way tolerate (an event seen twice is recorded once). Called again with the links
// attached now, as they change: what is no longer attached is no longer pinned.
void keep_links(KeptSet* set, const std::vector<std::pair<std::string, int>>& links);

}  // namespace leakwatch
