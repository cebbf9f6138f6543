#!/usr/bin/env bash
# What the watch tier costs processes that fault (docs/performance.md): its page-fault program
# (watch_fault) runs on every user page fault of the machine while the tier holds any process,
# and returns after one map lookup for a process not in the tier. bench/fault_bench writes one
# byte in each page of fresh anonymous mappings (a first-touch write fault each), CPU ns per
# fault, the median of REPS runs per case, cases alternating:
#   untraced     no leakwatchd
#   watch-other  leakwatchd with one process (bench/hold, idle) in the watch tier; the
#                faulting process is not watched: what every other process on the host pays
#   watch-self   the faulting process itself in the watch tier (a stack walk for one fault in
#                escalation.watch_sample_bytes / 4 KiB, 1 in 128 by default)
# Then one pass of each traced case with kernel.bpf_stats_enabled: watch_fault's runs and run
# time per fault. A benchmark, not a test: it prints figures. As root, on a quiet machine.
# Environment: BUILD (default ./build), SKIP_BUILD=1, FAULTS (per run, 2000000), REPS (5),
# CPU (the CPU the faulting process is pinned to, default 0), DAEMON (the leakwatchd to run,
# default $BUILD/bin/leakwatchd: another build's, to compare two in turn).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
FAULTS=${FAULTS:-2000000}
REPS=${REPS:-5}
CPU=${CPU:-0}
DAEMON=${DAEMON:-$BUILD/bin/leakwatchd}
[[ $(id -u) -eq 0 ]] || { echo "faults.sh: must run as root" >&2; exit 1; }
[[ ${SKIP_BUILD:-} == 1 ]] || cmake --build "$BUILD" --target leakwatchd fault_bench hold -j"$(nproc)" >/dev/null

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_workdir leakwatch-faults
PY=/usr/bin/python3
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
STATS_BEFORE=$(sysctl -n kernel.bpf_stats_enabled)
restore_stats() { sysctl -q -w kernel.bpf_stats_enabled="$STATS_BEFORE" || true; }
BENCH_CLEANUP_HOOK=restore_stats

# The idle process that keeps the tier (and so watch_fault) in place.
"$BUILD/bin/hold" 100 10 >"$WORK/hold.out" 2>&1 &
HOLD=$!

tracking_of() {  # tracking_of PID: the daemon's tracking of PID (watch, escalated, ...) or ""
    curl -sf --max-time 2 "http://127.0.0.1:$PORT/api/v1/processes" | "$PY" -c 'import json, sys
for p in json.load(sys.stdin)["processes"]:
    if p["pid"] == int(sys.argv[1]):
        print(p.get("tracking", "?"))' "$1" 2>/dev/null || true
}

wait_in_tier() {  # wait_in_tier PID: until the daemon lists PID in the watch tier (30 s at most)
    local i
    for ((i = 0; i < 300; i++)); do
        [[ $(tracking_of "$1") == watch ]] && return 0
        sleep 0.1
    done
    echo "faults.sh: pid $1 never entered the watch tier; the daemon's log:" >&2
    cat "$WORK/daemon.log" >&2
    exit 1
}

start_daemon() {  # start_daemon CASE
    {
        echo "interval: 1s"
        echo "watch:"
        echo "  - name: hold"
        echo "    match: {pid: $HOLD}"
        if [[ $1 == watch-self ]]; then
            echo "  - name: faulter"
            echo "    match: {comm: fault_bench}"
        fi
    } >"$WORK/leakwatch.yaml"
    "$DAEMON" --config "$WORK/leakwatch.yaml" --web.listen-address "127.0.0.1:$PORT" \
        --log-level info >"$WORK/daemon.log" 2>&1 &
    DAEMON_PID=$!
    wait_for_daemon faults.sh
    wait_in_tier "$HOLD"
}

stop_daemon() {
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=""
}

# run_case CASE: one fault_bench run; prints "wall_ns cpu_ns" per fault
run_case() {
    local go=$WORK/go pid
    rm -f "$go"
    FAULT_GO=$go taskset -c "$CPU" "$BUILD/bin/fault_bench" "$FAULTS" >"$WORK/fb.out" 2>&1 &
    local fb=$!
    for ((i = 0; i < 100; i++)); do grep -q '^pid ' "$WORK/fb.out" && break; sleep 0.05; done
    pid=$(sed -n 's/^pid //p' "$WORK/fb.out")
    [[ $1 == watch-self ]] && wait_in_tier "$pid"
    touch "$go"
    wait "$fb"
    sed -n 's/.*ns_per_fault=\([0-9.]*\) cpu_ns_per_fault=\([0-9.]*\)/\1 \2/p' "$WORK/fb.out"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

CASES=(untraced watch-other watch-self)
declare -A WALL CPUNS
DAEMON_PID=""
echo "# bench/faults.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, kernel $(uname -r)"
echo "# $FAULTS first-touch write faults per run, pinned to CPU $CPU; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$REPS"); do
    for c in "${CASES[@]}"; do
        [[ $c != untraced ]] && start_daemon "$c"
        read -r w cpu < <(run_case "$c")
        [[ -n $DAEMON_PID ]] && stop_daemon
        WALL[$c]+="$w " CPUNS[$c]+="$cpu "
        echo "# rep $rep $c: wall $w ns, CPU $cpu ns per fault" >&2
    done
done

# The program's own time, per fault of the bench (stats on, one run per traced case).
fault_prog_stats() {  # fault_prog_stats IDS...: "run_cnt run_time_ns" of watch_fault among them
    bpftool -j prog show | "$PY" -c 'import json, sys
ids = set(int(x) for x in sys.argv[1:])
r = n = 0
for p in json.load(sys.stdin):
    if p["id"] in ids and p.get("name") == "watch_fault":
        r += p.get("run_cnt", 0)
        n += p.get("run_time_ns", 0)
print(r, n)' "$@"
}
declare -A BPF
sysctl -q -w kernel.bpf_stats_enabled=1
for c in watch-other watch-self; do
    start_daemon "$c"
    mapfile -t ids < <(grep -h '^prog_id:' /proc/"$DAEMON_PID"/fdinfo/* 2>/dev/null | awk '{ print $2 }' | sort -u)
    read -r r0 n0 < <(fault_prog_stats "${ids[@]}")
    run_case "$c" >/dev/null
    read -r r1 n1 < <(fault_prog_stats "${ids[@]}")
    stop_daemon
    BPF[$c]="$((r1 - r0)) $((n1 - n0))"
done
restore_stats

base=$(echo "${CPUNS[untraced]}" | tr ' ' '\n' | grep . | median)
echo
echo "| case | wall ns per fault | CPU ns per fault | CPU vs untraced | watch_fault runs per fault | its ns per fault (stats on) |"
echo "|---|---:|---:|---:|---:|---:|"
for c in "${CASES[@]}"; do
    w=$(echo "${WALL[$c]}" | tr ' ' '\n' | grep . | median)
    cpu=$(echo "${CPUNS[$c]}" | tr ' ' '\n' | grep . | median)
    read -r runs ns <<<"${BPF[$c]:-0 0}"
    awk -v c="$c" -v w="$w" -v cpu="$cpu" -v base="$base" -v runs="$runs" -v ns="$ns" -v n="$FAULTS" 'BEGIN {
        printf "| %s | %.1f | %.1f | %+.1f%% | %s | %s |\n", c, w, cpu, 100 * (cpu - base) / base,
               (c == "untraced" ? "—" : sprintf("%.3f", runs / n)), (c == "untraced" ? "—" : sprintf("%.1f", ns / n)) }'
done
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
