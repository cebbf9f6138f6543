#!/usr/bin/env bash
# Installs what is missing (the daemon's, the tests', the benchmarks' and the kernel matrix's
# packages), builds everything with warnings as errors, and runs the whole test suite: unit
# tests (no root) and the root tests on real BPF and real programs. As root; `ctest -LE root`
# in build/ runs only what needs no root. Without arguments, the unit tests are also run
# under ASan+UBSan (scripts/sanitize.sh) and every fuzz target for 30 s (scripts/fuzz.sh).
# Exits non-zero when any test fails.
#   scripts/test.sh [CTEST ARGS...]   e.g. -L unit, -R integration.steady
#   scripts/test.sh --build-only      installs and builds, runs no test
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh all
LEAKWATCH_WERROR=${LEAKWATCH_WERROR:-ON} scripts/build.sh all
if [[ "${1:-}" == --build-only ]]; then
    exit 0
fi
if (($# > 0)); then
    cd "${BUILD_DIR:-build}"
    exec ctest --output-on-failure "$@"
fi
# The whole suite (no ctest arguments, as CI runs it): then the unit tests under ASan and
# UBSan and each fuzz target for FUZZ_SECONDS (default 30, FUZZ_JOBS at a time), each in a
# build tree of its own.
failed=()
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure) || failed+=(ctest)
scripts/sanitize.sh || failed+=(sanitize)
scripts/fuzz.sh || failed+=(fuzz)
if ((${#failed[@]})); then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
