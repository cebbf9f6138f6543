#include "loader/btf_check.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/utsname.h>

namespace leakwatch {

std::optional<std::string> kernel_btf_problem() {
    if (btf* vmlinux = btf__load_vmlinux_btf()) {
        btf__free(vmlinux);
        return std::nullopt;
    }
    utsname u{};
    uname(&u);
    const std::string release = u.release;
    return "this kernel (" + release + ") exposes no BTF: /sys/kernel/btf/vmlinux is missing (a " +
           "kernel built without CONFIG_DEBUG_INFO_BTF) and no BTF file was found at " +
           "/boot/vmlinux-" + release + ", /lib/modules/" + release + "/vmlinux-" + release +
           " or /usr/lib/debug/boot/vmlinux-" + release +
           ". leakwatchd's BPF programs are relocated against the running kernel's types; put " +
           "this kernel's BTF (raw BTF, or a vmlinux ELF with a .BTF section) at /boot/vmlinux-" +
           release + " (see docs/compatibility.md)";
}

}  // namespace leakwatch
