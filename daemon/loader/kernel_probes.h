// The loaded kmem BPF object: kernel allocation tracepoints and their maps.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "aggregate/kernel_source.h"
#include "config/config.h"
#include "loader/keep.h"
#include "util/result.h"

struct kmem_bpf;
struct bpf_link;
struct bpf_program;

namespace leakwatch {

// What the kernel programs record: kinds (indexes of kKernelKinds) and, for the slab kinds,
// object sizes (none: every size).
struct KernelTargets {
    std::array<bool, kKernelKinds.size()> kinds{};
    std::vector<uint64_t> sizes;
    bool operator==(const KernelTargets&) const = default;
};

class KernelProbes : public KernelSource {
  public:
    // Loads the programs of the enabled kinds that this kernel has; with tracking: full
    // attaches them at once for every size, with escalate attaches none until set_targets. With
    // a keeper, its maps and links are kept across restarts, as the user-space ones (keep.h).
    static Result<std::unique_ptr<KernelProbes>> load(const KernelConfig& config,
                                                      const Limits& limits,
                                                      Keeper* keeper = nullptr);
    // Records only `targets` from now on: attaches the tracepoints they need, detaches the
    // others, and forgets what was recorded of the kinds dropped. At most LW_KFILTER_SIZES
    // sizes (the rest are not recorded; a warning says so).
    Result<void> set_targets(const KernelTargets& targets);
    ~KernelProbes() override;

    std::vector<KernelTotals> kernel_totals() override;
    std::optional<KernelStack> kernel_stack(uint64_t id) override;
    void remove_kernel_totals(const std::vector<KernelTotals>& keys) override;
    LostCounters lost() override;
    std::vector<MapUsage> usage(uint64_t live_records, uint64_t totals_entries) override;
    const std::vector<std::string>& attached() const { return attached_; }
    // Module loads and unloads since the probes were loaded, as stacks record them
    // (KernelStack::modules); nullopt when this kernel has no module tracepoints to count them.
    std::optional<uint32_t> module_generation() const;

  private:
    KernelProbes() = default;
    void refresh_attached();
    // Pins the links attached now (keep.h) in place of those pinned before.
    void keep_attached();
    kmem_bpf* skel_ = nullptr;
    std::shared_ptr<KeptSet> kept_;
    // Each tracepoint has two programs, attached first then backup: the backup records what
    // the first could not (the kernel skipped it: it was already running on that CPU).
    struct Tracepoint {
        const char* name;
        bpf_program* prog;
        bpf_program* backup;
        uint32_t kinds;  // the kinds it serves (1 << kind)
        bpf_link* link = nullptr;
        bpf_link* backup_link = nullptr;
    };
    std::vector<Tracepoint> tracepoints_;  // those this kernel has, of the enabled kinds
    KernelTargets targets_;
    std::vector<bpf_link*> module_links_;  // module_load, module_free: always attached
    bool modules_counted_ = false;
    std::vector<std::string> attached_;
    Limits limits_;
    int ncpus_ = 1;
};

}  // namespace leakwatch
