#!/usr/bin/env bash
# Kernel-mode overhead (docs/performance.md): pipe2 + write + close in a loop, untraced and
# with leakwatchd tracing kernel allocations (kernel.enabled: true, every kind), the median of
# REPS runs each, alternating. A benchmark, not a test: it prints figures. Run as root on an
# otherwise idle machine. Environment: BUILD (default ./build), ITERATIONS (200000), REPS (5).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
ITERATIONS=${ITERATIONS:-200000}
REPS=${REPS:-5}
[[ $(id -u) -eq 0 ]] || { echo "kernel.sh: must run as root" >&2; exit 1; }
cmake --build "$BUILD" --target leakwatchd pipe_bench -j"$(nproc)" >/dev/null

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_workdir leakwatch-kbench

run_bench() { "$BUILD/bin/pipe_bench" "$ITERATIONS" | sed -n 's/.*ns_per_iter=\([0-9.]*\) cpu_ns_per_iter=\([0-9.]*\)/\1 \2/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'interval: 1s\nkernel:\n  enabled: true\n  tracking: full\n' >"$WORK/leakwatch.yaml"

untraced=() traced=() untraced_cpu=() traced_cpu=()
for _ in $(seq "$REPS"); do
    read -r w c < <(run_bench); untraced+=("$w"); untraced_cpu+=("$c")
    "$BUILD/bin/leakwatchd" --config "$WORK/leakwatch.yaml" --web.listen-address "127.0.0.1:$port" \
        --log-level warn >"$WORK/daemon.log" 2>&1 &
    daemon=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$port/metrics" >/dev/null && break; sleep 0.1; done
    read -r w c < <(run_bench); traced+=("$w"); traced_cpu+=("$c")
    kill -TERM "$daemon"; wait "$daemon" || true
done
u=$(printf '%s\n' "${untraced[@]}" | median); t=$(printf '%s\n' "${traced[@]}" | median)
uc=$(printf '%s\n' "${untraced_cpu[@]}" | median); tc=$(printf '%s\n' "${traced_cpu[@]}" | median)
echo "kernel mode: pipe2 + 1-byte write + close x2, $ITERATIONS iterations, median of $REPS"
printf '%-12s %12s %14s %12s\n' case ns/iter "cpu ns/iter" ratio
printf '%-12s %12.0f %14.0f %12s\n' untraced "$u" "$uc" 1.00
printf '%-12s %12.0f %14.0f %12.2f\n' leakwatchd "$t" "$tc" "$(awk -v a="$t" -v b="$u" 'BEGIN{print a/b}')"
printf 'added per iteration: %.0f ns\n' "$(awk -v a="$t" -v b="$u" 'BEGIN{print a-b}')"
