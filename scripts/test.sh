#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite: unit tests (no root) and
# the root tests on real BPF and real programs. As root; `ctest -LE root` in build/ runs only
# what needs no root. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
cd build
ctest --output-on-failure "$@"
