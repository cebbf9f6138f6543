// The loaded kmem BPF object: kernel allocation tracepoints and their maps.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "aggregate/kernel_source.h"
#include "config/config.h"
#include "util/result.h"

struct kmem_bpf;
struct bpf_link;
struct bpf_program;

namespace leakwatch {

class KernelProbes : public KernelSource {
  public:
    // Loads and attaches the tracepoints of the enabled kinds that this kernel has.
    static Result<std::unique_ptr<KernelProbes>> load(const KernelConfig& config,
                                                      const Limits& limits);
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
    kmem_bpf* skel_ = nullptr;
    std::vector<bpf_link*> links_;
    std::vector<bpf_program*> programs_;  // attached
    std::vector<std::string> attached_;
    Limits limits_;
    int ncpus_ = 1;
    bool modules_counted_ = false;
};

}  // namespace leakwatch
