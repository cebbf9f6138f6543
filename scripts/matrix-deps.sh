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
    libcivetweb-dev libspdlog-dev libfmt-dev libsystemd-dev
    libyaml-cpp0.7
    libjemalloc2
)
overlay_packages=(libyaml-cpp-dev)
overlay=${LEAKWATCH_ARM64_OVERLAY:-/var/cache/leakwatch-matrix/arm64-overlay}

sudo=""
if [[ $(id -u) -ne 0 ]]; then
    sudo="sudo"
fi

updated=0
apt_update() {
    if ((!updated)); then
        $sudo apt-get update -qq
        updated=1
    fi
}

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "matrix-deps.sh: adding arm64 as a dpkg foreign architecture"
    $sudo dpkg --add-architecture arm64
    apt_update
fi

missing=()
for p in "${host_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
for p in "${arm64_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p:arm64" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p:arm64")
    fi
done
if ((${#missing[@]} > 0)); then
    echo "matrix-deps.sh: installing ${missing[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        --no-remove "${missing[@]}"
fi

# The overlay: the arm64 -dev packages that are not Multi-Arch: same, unpacked, with their
# library links pointing at the runtime libraries installed above.
want=()
for p in "${overlay_packages[@]}"; do
    v=$(apt-cache policy "$p:arm64" | awk '/Candidate:/ {print $2}')
    if [[ -z "$v" || "$v" == "(none)" ]]; then
        apt_update
        v=$(apt-cache policy "$p:arm64" | awk '/Candidate:/ {print $2}')
    fi
    want+=("$p:arm64=$v")
done
if [[ "$(cat "$overlay/.packages" 2>/dev/null)" != "${want[*]}" ]]; then
    echo "matrix-deps.sh: unpacking ${want[*]} into $overlay"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "${want[@]}")
    $sudo rm -rf "$overlay"
    $sudo mkdir -p "$overlay"
    for deb in "$tmp"/*.deb; do
        $sudo dpkg-deb -x "$deb" "$overlay"
    done
    # their CMake files name the versioned libraries: link those of the installed runtime
    for lib in /usr/lib/aarch64-linux-gnu/libyaml-cpp.so.*; do
        $sudo ln -sfn "$lib" "$overlay/usr/lib/aarch64-linux-gnu/$(basename "$lib")"
    done
    echo "${want[*]}" | $sudo tee "$overlay/.packages" >/dev/null
fi
