// Capabilities leakwatchd lets go of once it knows it does not need them (docs/packaging.md,
// "Capabilities"). The unit grants CAP_SYS_ADMIN for classic perf-event uprobes, which kernels
// before 6.6 need (and whose uprobe PMU requires CAP_SYS_ADMIN since the CVE-2025-38466 fix);
// with multi-uprobe or session-uprobe links nothing the daemon does needs it.
#pragma once

#include "loader/probes.h"
#include "util/result.h"

namespace leakwatch {

// Drops CAP_SYS_ADMIN from the effective, permitted and inheritable sets (and so the ambient
// one) when the probes are attached with `mode` links and do not need it. Capabilities are per
// thread: called before the daemon starts any thread. Returns whether it was dropped.
Result<bool> drop_unneeded_capabilities(ProbeMode mode);

}  // namespace leakwatch
