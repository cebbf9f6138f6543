#!/usr/bin/env bash
# Configures and builds leakwatch into build/ (binaries in build/bin/):
#   scripts/build.sh daemon   only leakwatchd (scripts/run.sh): no tests, fixtures or benchmarks
#                             are configured in a new build tree, and only the daemon is built
#   scripts/build.sh all      everything: the daemon, the test suite and its fixtures, the
#                             benchmarks (scripts/test.sh); the default
# Environment: BUILD_DIR (default build), BUILD_TYPE (default RelWithDebInfo; Debug and Release
# build too), LEAKWATCH_WERROR=ON|OFF (warnings as errors; scripts/test.sh turns it on, a
# user's or packager's build leaves it off).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
dir=${BUILD_DIR:-build}
args=(-S . -B "$dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}")
if [[ -n "${LEAKWATCH_WERROR:-}" ]]; then
    args+=(-DLEAKWATCH_WERROR="$LEAKWATCH_WERROR")
fi
case "$what" in
    daemon)
        # A tree configured before (by scripts/build.sh all) keeps its tests: only the daemon
        # is built either way.
        if [[ ! -f "$dir/CMakeCache.txt" ]]; then
            args+=(-DBUILD_TESTING=OFF -DLEAKWATCH_BENCH=OFF)
        fi
        targets=(--target leakwatchd)
        ;;
    all)
        args+=(-DBUILD_TESTING=ON -DLEAKWATCH_BENCH=ON)
        targets=()
        ;;
    *)
        echo "usage: scripts/build.sh [daemon|all]" >&2
        exit 2
        ;;
esac
cmake "${args[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)" "${targets[@]}"
