#!/usr/bin/env bash
# Builds the unit tests with AddressSanitizer and UndefinedBehaviorSanitizer (in
# build-sanitize/, LEAKWATCH_SANITIZE) and runs them: any report (a memory error, undefined
# behaviour, a leak) fails the test that made it. The root tests stay in build/ (a sanitized
# daemon is several times slower, and BPF does not care).
#   scripts/sanitize.sh [CTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${SANITIZE_BUILD_DIR:-build-sanitize}
source scripts/ccache.sh
# -O1 -g1 (line tables, no variables): what the sanitizers' reports need (file and line of each
# frame), and half the compile of -O2 -g (symbols/symbolizer.cpp instrumented: 19.0 s against
# 38.9 s with GCC 12).
cmake -S . -B "$dir" "${launcher[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEAKWATCH_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    -DLEAKWATCH_WERROR="${LEAKWATCH_WERROR:-ON}" -DBUILD_TESTING=ON -DLEAKWATCH_BENCH=OFF \
    >/dev/null
# Only the unit test executables (and what they link): no fixtures, no daemon.
targets=()
while read -r t; do targets+=(--target "$t"); done < <(
    sed -n 's/^leakwatch_unit_test(\([a-z_]*\).*/unit_\1/p' tests/CMakeLists.txt)
cmake --build "$dir" -j"$(nproc)" "${targets[@]}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$dir"
# Left out here (run in build/ as usual): a test that copies its own thread's stack, redzones
# included, to unwind it as the BPF side would, which AddressSanitizer reports by design.
echo "not run under ASan: unit.unwind.unwinding this process's own stack agrees with glibc's backtrace()"
# Also left out: the checks of the built programs and files (label "programs": the man pages
# against `--help`, the Kubernetes manifests), which are not unit binaries and need the
# programs this build does not make.
ctest --output-on-failure -L unit -LE "root|programs" -j"$(nproc)" \
    -E "unit[.]unwind[.]unwinding this process.s own stack agrees" "$@"
