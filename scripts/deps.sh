#!/usr/bin/env bash
# Installs the Debian 12 packages leakwatch needs to build, run and test it: only the ones
# that are missing, with one `apt-get update` before, and nothing at all when none is.
set -euo pipefail

# The kernel/architecture matrix's own: QEMU, the aarch64 cross compiler, arm64 libraries.
"$(dirname "$0")/matrix-deps.sh"

packages=(
    # build
    cmake g++ make pkg-config clang llvm bpftool
    libbpf-dev libelf-dev libdw-dev zlib1g-dev
    libcivetweb-dev libspdlog-dev libyaml-cpp-dev libsystemd-dev
    nlohmann-json3-dev libcli11-dev catch2 libcapstone-dev
    # tests: a fixture linked against jemalloc (its own API and C++ operators); a JVM leaking
    # direct buffers (java, jcmd)
    libjemalloc2 openjdk-17-jdk-headless
    # tests: the fixtures' helpers, promtool and alertmanager, bpftool's map dumps
    python3 prometheus prometheus-alertmanager curl
    # packaging and the service tests: systemd-analyze, dpkg-shlibdeps, rpmbuild, a Debian
    # rootfs booted with systemd-nspawn
    systemd dpkg-dev rpm debootstrap systemd-container
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]} == 0)); then
    exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
    sudo="sudo"
fi
echo "deps.sh: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
