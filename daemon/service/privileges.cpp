#include "service/privileges.h"

#include <cap-ng.h>
#include <linux/capability.h>
#include <spdlog/spdlog.h>

namespace leakwatch {

Result<bool> drop_unneeded_capabilities(ProbeMode mode) {
    if (mode == ProbeMode::kClassic) {
        spdlog::debug("keeping CAP_SYS_ADMIN: classic perf-event uprobes need it");
        return false;
    }
    if (capng_get_caps_process() != 0) return fail("reading the process's capabilities failed");
    if (!capng_have_capability(CAPNG_PERMITTED, CAP_SYS_ADMIN)) return false;
    capng_update(CAPNG_DROP,
                 static_cast<capng_type_t>(CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_INHERITABLE),
                 CAP_SYS_ADMIN);
    // Not the bounding set: that takes CAP_SETPCAP, and a thread without the capability in its
    // permitted set cannot get it back but by exec, which leakwatchd never does.
    if (int err = capng_apply(CAPNG_SELECT_CAPS); err != 0)
        return fail("dropping CAP_SYS_ADMIN failed (capng_apply: " + std::to_string(err) + ")");
    spdlog::info("dropped CAP_SYS_ADMIN: {} uprobes do not need it", probe_mode_name(mode));
    return true;
}

}  // namespace leakwatch
