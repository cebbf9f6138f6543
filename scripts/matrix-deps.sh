#!/usr/bin/env bash
# Installs what the kernel/architecture matrix (tests/matrix) needs, only what is missing:
# QEMU for x86_64 and aarch64 guests, Debian's aarch64 cross compiler, and the arm64 libraries
# leakwatchd links against. arm64 is added as a dpkg foreign architecture; only Multi-Arch:
# same packages are installed for it (apt-get --no-remove: never at the cost of an amd64
# package). libyaml-cpp-dev cannot be co-installed for two architectures, so its arm64 .deb
# is unpacked into a sysroot overlay instead
# (LEAKWATCH_ARM64_OVERLAY, default /var/cache/leakwatch-matrix/arm64-overlay), which
# cmake/aarch64-linux-gnu.cmake searches. Kernel images and the guests' busybox are fetched by
# tests/matrix/kernels.py into its own cache.
set -euo pipefail

host_packages=(
    qemu-system-x86 qemu-system-arm
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
)
arm64_packages=(
    libc6-dev libstdc++-12-dev
    libbpf-dev libelf-dev libdw-dev zlib1g-dev
    libcivetweb-dev libspdlog-dev libfmt-dev libsystemd-dev libcap-ng-dev
    libre2-dev libssl-dev libprotobuf-dev libcurl4-openssl-dev libcrypt-dev
    libyaml-cpp0.7
    libjemalloc2
)
overlay_packages=(libyaml-cpp-dev)
overlay=${LEAKWATCH_ARM64_OVERLAY:-/var/cache/leakwatch-matrix/arm64-overlay}

# shellcheck source=apt.sh
source "$(dirname "$0")/apt.sh"

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "matrix-deps.sh: adding arm64 as a dpkg foreign architecture"
    $lw_sudo dpkg --add-architecture arm64
    lw_apt_updated=0
fi
lw_install_missing matrix-deps.sh "$lw_native_arch" "${host_packages[@]}"
lw_install_missing matrix-deps.sh arm64 "${arm64_packages[@]}"

# The overlay: the arm64 -dev packages that are not Multi-Arch: same, unpacked, with their
# library links pointing at the runtime libraries installed above.
want=()
for p in "${overlay_packages[@]}"; do
    v=$(apt-cache policy "$p:arm64" | awk '/Candidate:/ {print $2}')
    if [[ -z "$v" || "$v" == "(none)" ]]; then
        lw_apt_update
        v=$(apt-cache policy "$p:arm64" | awk '/Candidate:/ {print $2}')
    fi
    want+=("$p:arm64=$v")
done
if [[ "$(cat "$overlay/.packages" 2>/dev/null)" != "${want[*]}" ]]; then
    echo "matrix-deps.sh: unpacking ${want[*]} into $overlay"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "${want[@]}")
    $lw_sudo rm -rf "$overlay"
    $lw_sudo mkdir -p "$overlay"
    for deb in "$tmp"/*.deb; do
        $lw_sudo dpkg-deb -x "$deb" "$overlay"
    done
    # their CMake files name the versioned libraries: link those of the installed runtime
    for lib in /usr/lib/aarch64-linux-gnu/libyaml-cpp.so.*; do
        $lw_sudo ln -sfn "$lib" "$overlay/usr/lib/aarch64-linux-gnu/$(basename "$lib")"
    done
    echo "${want[*]}" | $lw_sudo tee "$overlay/.packages" >/dev/null
fi
