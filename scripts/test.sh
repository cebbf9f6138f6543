#!/usr/bin/env bash
# Installs what is missing (the daemon's, the tests', the benchmarks' and the kernel matrix's
# packages), builds everything with warnings as errors, and runs the whole test suite: unit
# tests (no root) and the root tests on real BPF and real programs. As root; `ctest -LE root`
# in build/ runs only what needs no root. Exits non-zero when any test fails.
#   scripts/test.sh [CTEST ARGS...]   e.g. -L unit, -R integration.steady
#   scripts/test.sh --build-only      installs and builds, runs no test
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh all
LEAKWATCH_WERROR=${LEAKWATCH_WERROR:-ON} scripts/build.sh all
if [[ "${1:-}" == --build-only ]]; then
    exit 0
fi
cd "${BUILD_DIR:-build}"
ctest --output-on-failure "$@"
