// The daemon's own pid namespace, for the BPF programs (bpf/pidns.bpf.h): in a container the pids
// the daemon sees in /proc are not the kernel's global ones.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>

namespace leakwatch {

struct PidNamespace {
    uint64_t dev = 0;
    uint64_t ino = 0;
};

// nullopt in the initial pid namespace (global pids are ours: the cheaper helper will do).
inline std::optional<PidNamespace> own_pid_namespace() {
    constexpr uint64_t kInitialPidNamespaceInode = 0xEFFFFFFCu;  // PROC_PID_INIT_INO
    struct stat st {};
    if (stat("/proc/self/ns/pid", &st) != 0 || st.st_ino == kInitialPidNamespaceInode)
        return std::nullopt;
    return PidNamespace{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

}  // namespace leakwatch
