#!/usr/bin/env bash
# Kernel-mode overhead (docs/performance.md): pipe2 + write + close in a loop, untraced, with
# leakwatchd's kernel watch tier (kernel.enabled: true, the default tracking: escalate) and
# with it tracing every kernel allocation (tracking: full), the median of REPS runs each,
# alternating. A benchmark, not a test: it prints figures. Run as root on an
# otherwise idle machine. Environment: BUILD (default ./build), ITERATIONS (200000), REPS (5),
# BASELINE (another leakwatchd, e.g. main's build: adds the case full-baseline, tracking: full
# with it, to compare two builds in one run).
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
# watch: the default kernel.tracking (escalate): the kernel's counters read every interval, no
# allocation tracepoint unless a counter keeps growing (the bench's pipes are freed at once,
# so none does). full: every kmalloc/kfree, kmem_cache, page and percpu event traced.
printf 'interval: 1s\nkernel:\n  enabled: true\n' >"$WORK/watch.yaml"
printf 'interval: 1s\nkernel:\n  enabled: true\n  tracking: full\n' >"$WORK/full.yaml"
CASES=(untraced watch full)
if [[ -n ${BASELINE:-} ]]; then
    cp "$WORK/full.yaml" "$WORK/full-baseline.yaml"
    CASES+=(full-baseline)
fi

declare -A WALL CPU
for _ in $(seq "$REPS"); do
    for c in "${CASES[@]}"; do
        daemon=""
        if [[ $c != untraced ]]; then
            bin=$BUILD/bin/leakwatchd
            [[ $c == full-baseline ]] && bin=$BASELINE
            "$bin" --config "$WORK/$c.yaml" --web.listen-address "127.0.0.1:$port" \
                --log-level warn >"$WORK/daemon.log" 2>&1 &
            daemon=$!
            for _ in $(seq 600); do curl -sf "127.0.0.1:$port/metrics" >/dev/null && break; sleep 0.1; done
            curl -sf "127.0.0.1:$port/metrics" >/dev/null || { echo "kernel.sh: leakwatchd did not start:" >&2; cat "$WORK/daemon.log" >&2; exit 1; }
        fi
        read -r w cpu < <(run_bench)
        WALL[$c]+="$w " CPU[$c]+="$cpu "
        if [[ -n $daemon ]]; then
            escalated=$(curl -sf "127.0.0.1:$port/metrics" | grep -c '^leakwatch_kernel_counter_escalated' || true)
            [[ $c == watch && $escalated != 0 ]] && echo "# watch: $escalated kernel counters were escalated during the run" >&2
            kill -TERM "$daemon"; wait "$daemon" || true
        fi
    done
done
med() { tr ' ' '\n' | grep . | median; }
u=$(med <<<"${WALL[untraced]}")
echo "kernel mode: pipe2 + 1-byte write + close x2, $ITERATIONS iterations, median of $REPS (cases alternate)"
printf '%-12s %12s %14s %12s %14s\n' case ns/iter "cpu ns/iter" ratio "added ns/iter"
for c in "${CASES[@]}"; do
    w=$(med <<<"${WALL[$c]}") cpu=$(med <<<"${CPU[$c]}")
    printf '%-12s %12.0f %14.0f %12.3f %14.0f\n' "$c" "$w" "$cpu" \
        "$(awk -v a="$w" -v b="$u" 'BEGIN{print a/b}')" "$(awk -v a="$w" -v b="$u" 'BEGIN{print a-b}')"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
