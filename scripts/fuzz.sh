#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan and UBSan on, in build-fuzz/)
# and runs each for FUZZ_SECONDS (default 30) over its seed corpus, printing the executions
# per target. FUZZ_JOBS targets (default: the CPUs this may use, nproc) run at a time, each
# single-threaded, so every target still gets a CPU of its own for its FUZZ_SECONDS while the
# whole run takes ceil(targets / FUZZ_JOBS) x FUZZ_SECONDS. Exits non-zero on any finding (a crash, a sanitizer report, a leak, a timeout
# of one input); the input is kept in build-fuzz/findings/ to reproduce it:
#   build-fuzz/fuzz/fuzz_NAME build-fuzz/findings/crash-...
# A finding, once fixed, goes into tests/fuzz/corpus/fuzz_NAME/ so every run replays it.
#   scripts/fuzz.sh [--build-only] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${FUZZ_BUILD_DIR:-build-fuzz}
seconds=${FUZZ_SECONDS:-30}
build_only=0
if [[ "${1:-}" == --build-only ]]; then
    build_only=1
    shift
fi
# clang 16: Debian 12's clang 14 cannot compile libstdc++ 12's <expected>.
source scripts/ccache.sh
CC=${FUZZ_CC:-clang-16} CXX=${FUZZ_CXX:-clang++-16} cmake -S . -B "$dir" "${launcher[@]}" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEAKWATCH_FUZZ=ON -DBUILD_TESTING=OFF \
    -DLEAKWATCH_BENCH=OFF >/dev/null
cmake --build "$dir" -j"$(nproc)" --target fuzz_all
((build_only)) && exit 0

targets=("$@")
if ((${#targets[@]} == 0)); then
    for f in tests/fuzz/fuzz_*.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi
mkdir -p "$dir/findings"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp}
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer || true)}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
jobs=${FUZZ_JOBS:-$(nproc)}
# One target: its output to $dir/NAME.log, its one-line summary to $dir/NAME.result.
fuzz_one() {
    local t=$1 work="$dir/corpus/$1" log="$dir/$1.log" start status execs cov
    # New inputs go to a work corpus in the build tree; the seeds in the source tree stay as
    # they are (and are all run first, so a fixed finding kept there is replayed).
    mkdir -p "$work"
    start=$(date +%s)
    if "$dir/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$dir/findings/$t-" \
        "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
        status=ok
    else
        status=FINDING
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    printf '%s %-16s %s: %s executions in %ss (%s), corpus %s files\n' "$status" "$t" \
        "$status" "${execs:-?}" "$(($(date +%s) - start))" "${cov:-cov: ?}" \
        "$(ls "$work" | wc -l)" >"$dir/$t.result"
}
echo "fuzzing ${#targets[@]} targets for ${seconds}s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
    rm -f "$dir/$t.result"
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait || true
failed=()
for t in "${targets[@]}"; do
    if [[ ! -f "$dir/$t.result" ]]; then
        echo "$t: no result (the fuzzing job died)" >&2
        failed+=("$t")
        continue
    fi
    read -r status line <"$dir/$t.result"
    echo "$line"
    if [[ $status != ok ]]; then
        failed+=("$t")
        grep -E -m5 "ERROR|SUMMARY|runtime error|deadly signal|Test unit written" \
            "$dir/$t.log" >&2 || true
    fi
done
if ((${#failed[@]})); then
    echo "fuzzing found problems in: ${failed[*]} (logs in $dir/)" >&2
    exit 1
fi
