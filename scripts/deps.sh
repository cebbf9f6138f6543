#!/usr/bin/env bash
# Installs the Debian 12 packages leakwatch needs, only the ones that are missing (one
# `apt-get update` before, nothing at all when none is):
#   scripts/deps.sh daemon   what building and running leakwatchd needs (scripts/run.sh)
#   scripts/deps.sh all      that, the test suite's, the benchmarks' and the kernel matrix's
#                            (scripts/test.sh); the default
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=apt.sh
source "$here/apt.sh"

set_name=${1:-all}
case "$set_name" in
    daemon | all) ;;
    *)
        echo "usage: scripts/deps.sh [daemon|all]" >&2
        exit 2
        ;;
esac

daemon_packages=(
    cmake g++ make pkg-config clang llvm bpftool
    libbpf-dev libelf-dev libdw-dev zlib1g-dev
    libcivetweb-dev libspdlog-dev libyaml-cpp-dev libsystemd-dev
    nlohmann-json3-dev libcli11-dev libcapstone-dev
    # cmdline rules in linear time (RE2); SHA-256 of ELF symbol tables (OpenSSL's libcrypto)
    libre2-dev libssl-dev
    # dropping CAP_SYS_ADMIN at start where the kernel's uprobe links do not need it
    libcap-ng-dev
    # civetweb's CMake config (civetweb-targets.cmake) names /usr/bin/civetweb, which only this
    # package holds; libcivetweb-dev merely recommends it
    civetweb
    # pprof profiles: google/pprof's profile.proto (the Go package ships it), compiled by
    # protoc for protobuf's lite runtime
    libprotobuf-dev protobuf-compiler golang-github-google-pprof-dev
    # TLS (OpenSSL 3) and bcrypt passwords (libcrypt) of the web config; the client's HTTP
    # (libcurl); the man pages (scdoc)
    libssl-dev libcrypt-dev libcurl4-openssl-dev scdoc
)
test_packages=(
    catch2
    # a fixture linked against jemalloc (its own API and C++ operators); a JVM leaking direct
    # buffers (java, jcmd)
    libjemalloc2 openjdk-17-jdk-headless
    # the fixtures' helpers, promtool and alertmanager, bpftool's map dumps
    python3 prometheus prometheus-alertmanager curl
    # packaging and the service tests: systemd-analyze, dpkg-shlibdeps, rpmbuild, Debian root
    # file systems (the unit under systemd-nspawn, the install from nothing)
    systemd dpkg-dev rpm debootstrap systemd-container
    # libFuzzer targets (tests/fuzz): clang 16 builds the daemon's C++23 (clang 14 cannot use
    # libstdc++ 12's <expected>), with its fuzzer, ASan and UBSan runtimes
    clang-16 libclang-rt-16-dev
    # a compiler cache for the sanitized and fuzz builds (scripts/ccache.sh)
    ccache
    # go tool pprof reads the profiles; headless Chromium and its WebDriver draw the landing
    # page; the Kubernetes manifests are parsed with PyYAML; certificates for the TLS tests
    golang-go chromium chromium-driver python3-yaml openssl
)

packages=("${daemon_packages[@]}")
if [[ "$set_name" == all ]]; then
    packages+=("${test_packages[@]}")
fi
lw_install_missing deps.sh "$lw_native_arch" "${packages[@]}"

if [[ "$set_name" == all ]]; then
    # The kernel/architecture matrix's own, after the native packages: QEMU, the aarch64 cross
    # compiler, arm64 libraries.
    "$here/matrix-deps.sh"
fi
