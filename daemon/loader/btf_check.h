// Whether the running kernel's BTF can be had: leakwatchd's BPF is compiled once (CO-RE) and
// relocated against it at load time, so without it nothing can be loaded.
#pragma once

#include <optional>
#include <string>

namespace leakwatch {

// nullopt when libbpf finds the kernel's BTF (/sys/kernel/btf/vmlinux, or a file in one of
// the places libbpf searches, e.g. /boot/vmlinux-RELEASE); otherwise what an operator reads:
// what is missing and where to put a BTF file for this kernel.
std::optional<std::string> kernel_btf_problem();

}  // namespace leakwatch
