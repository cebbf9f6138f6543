// The loaded kmem BPF object: kernel allocation tracepoints and their maps.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "aggregate/kernel_source.h"
#include "config/config.h"
#include "loader/keep.h"
#include "util/result.h"

struct kmem_bpf;
struct bpf_link;

namespace leakwatch {

class KernelProbes : public KernelSource {
  public:
    // Loads and attaches the tracepoints of the enabled kinds that this kernel has. With a
    // keeper, its maps and links are kept across restarts, as the user-space ones (keep.h).
    static Result<std::unique_ptr<KernelProbes>> load(const KernelConfig& config,
                                                      const Limits& limits,
                                                      Keeper* keeper = nullptr);
    ~KernelProbes() override;

    std::vector<KernelTotals> kernel_totals() override;
    std::optional<std::vector<uint64_t>> kernel_stack(uint64_t id) override;
    void remove_kernel_totals(const std::vector<KernelTotals>& keys) override;
    LostCounters lost() override;
    std::vector<MapUsage> usage(uint64_t live_records, uint64_t totals_entries) override;
    const std::vector<std::string>& attached() const { return attached_; }

  private:
    KernelProbes() = default;
    kmem_bpf* skel_ = nullptr;
    std::shared_ptr<KeptSet> kept_;
    std::vector<bpf_link*> links_;
    std::vector<std::string> attached_;
    Limits limits_;
    int ncpus_ = 1;
};

}  // namespace leakwatch
