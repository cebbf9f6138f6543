#!/usr/bin/env bash
# What leakwatchd costs itself at scale (docs/performance.md, "The daemon at scale"). A
# benchmark, not a test: it prints measured figures next to the targets and fails only when
# the setup does not come up. Run as root on an otherwise idle machine:
#
#   bench/daemon_scale.sh
#
# It starts leakwatchd on a free port of 127.0.0.1 with limits that hold the load, then PROCS
# processes of bench/hold, each keeping BLOCKS live allocations from STACKS distinct call
# stacks and churning CHURN malloc/free pairs a second; waits until the daemon lists them all
# and counts PROCS x BLOCKS outstanding allocations; then, over WINDOW seconds with no HTTP
# request, records the daemon's CPU time (utime + stime, /proc/PID/stat) and RSS; then times
# SCRAPES requests each of /metrics, /api/v1/stacks, /api/v1/processes, /debug/pprof/heap and
# /api/v1/folded.
#
# Environment: BUILD (build directory, default ./build), PROCS (100), BLOCKS (10000), STACKS
# (100, at most 1000), CHURN (pairs per second per process, 100), INTERVAL (the daemon's
# interval, 5s), WINDOW (seconds, 60), SCRAPES (20), LEAK_DETECTION (true; false to see what
# the detector's share is), UNWIND (the rule's unwind: auto, frame-pointer or dwarf; default
# auto), DAEMON_FLAGS (more leakwatchd flags, e.g.
# "--probe-mode multi"), DAEMON_WRAPPER (a command leakwatchd runs under, e.g.
# "heaptrack -o /tmp/lw-heap": heaptrack's preloaded form; the figures are then the wrapped
# daemon's), TRACKING (the rule's tracking, full; escalate for the watch tier:
# no allocator probe, so the allocations are not counted and the daemon's cost is the tier's
# own), SKIP_BUILD=1 (use the binaries already built), PYTHON (default
# /usr/bin/python3 if present).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
PROCS=${PROCS:-100}
BLOCKS=${BLOCKS:-10000}
STACKS=${STACKS:-100}
CHURN=${CHURN:-100}
INTERVAL=${INTERVAL:-5s}
WINDOW=${WINDOW:-60}
SCRAPES=${SCRAPES:-20}
LEAK_DETECTION=${LEAK_DETECTION:-true}
UNWIND=${UNWIND:-auto}
TRACKING=${TRACKING:-full}
read -r -a DAEMON_FLAGS <<<"${DAEMON_FLAGS:-}"
read -r -a DAEMON_WRAPPER <<<"${DAEMON_WRAPPER:-}"
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    [[ -x /usr/bin/python3 ]] && PYTHON=/usr/bin/python3
fi

# The targets of the overhead issue.
TARGET_CPU_PCT=2
TARGET_RSS_MIB=64
TARGET_METRICS_MS=50

# Everything this script starts is a background job of this shell; bench_cleanup stops them.
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_require daemon_scale.sh curl "$PYTHON"

# --- build ---------------------------------------------------------------------------------
bench_build "$BUILD" leakwatchd hold
DAEMON=$BUILD/bin/leakwatchd
HOLD=$BUILD/bin/hold
[[ -x $HOLD ]] || HOLD=$BUILD/bench/hold
for bin in "$DAEMON" "$HOLD"; do
    [[ -x $bin ]] || { echo "daemon_scale.sh: $bin is not built" >&2; exit 1; }
done

bench_workdir leakwatch-scale
trap 'exit 130' INT TERM

# --- helpers -------------------------------------------------------------------------------
HZ=$(getconf CLK_TCK)

cpu_ticks() {  # utime + stime of a process (all its threads), in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

status_kib() {  # status_kib PID FIELD: a kB field of /proc/PID/status
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

busy_ticks() {  # CPU time the whole machine spent busy, in clock ticks (all CPUs)
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

now_s() {
    date +%s.%N
}

api() {  # api PATH: the body, or nothing
    curl -sf --max-time 10 "http://127.0.0.1:$PORT$1" || true
}

# Totals over the processes of /api/v1/processes: "PROCESSES ALLOCATIONS STACKS BYTES".
api_totals() {
    api /api/v1/processes | "$PYTHON" -c '
import json, sys
try:
    ps = [p for p in json.load(sys.stdin)["processes"] if p["watch"] == "hold"]
except ValueError:
    ps = []
print(len(ps), sum(p["outstanding_allocations"] for p in ps), sum(p["stacks"] for p in ps),
      sum(p["outstanding_bytes"] for p in ps))'
}

# Times COUNT requests of each URL (cycling through them) with curl; prints
# "MEDIAN_MS MAX_MS BYTES" (BYTES: the size of the slowest response), or nothing when a request
# failed.
time_requests() {  # time_requests COUNT URL...
    local count=$1 i url
    shift
    local urls=("$@")
    : >"$WORK/times"
    for ((i = 0; i < count; i++)); do
        url=${urls[i % ${#urls[@]}]}
        curl -sf --max-time 30 -o "$WORK/body" -w '%{time_total} %{size_download}\n' \
            "http://127.0.0.1:$PORT$url" >>"$WORK/times" ||
            { echo "daemon_scale.sh: GET $url failed" >&2; return 1; }
    done
    sort -g "$WORK/times" | awk '{ t[NR] = $1 * 1000; b = $2 }
        END { m = NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
              printf "%.1f %.1f %d\n", m, t[NR], b }'
}

# The BPF maps the daemon holds open (its map fds, each map once): "KIB COUNT", KIB the sum
# of their memlock, the kernel memory they are charged.
bpf_map_kib() {
    local f
    for f in /proc/"$1"/fdinfo/*; do
        awk '$1 == "map_id:" { id = $2 } $1 == "memlock:" { m = $2 }
             END { if (id != "") print id, m }' "$f" 2>/dev/null || true
    done | sort -u | awk '{ kib += $2 / 1024; n++ } END { printf "%d %d\n", kib, n }'
}

# --- the daemon ----------------------------------------------------------------------------
SERIES=$((PROCS * STACKS))
# Room for every live block, stack and series, with headroom; each within the config maxima.
LIVE_LIMIT=$((PROCS * BLOCKS * 11 / 10 + 65536))
STACK_LIMIT=$((SERIES * 2 + 4096))
TOTALS_LIMIT=$((SERIES * 4 + 4096))
PROC_LIMIT=$((PROCS * 2 + 64))
TOP_STACKS=$((STACKS < 1000 ? STACKS : 1000))
MAX_SERIES=$((SERIES * 2 + PROCS * 2 + 1000))

PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/leakwatch.yaml" <<EOF
interval: $INTERVAL
log_level: warn
leak_detection:
  enabled: $LEAK_DETECTION
  max_series: $MAX_SERIES
limits:
  live_allocations: $LIVE_LIMIT
  stacks: $STACK_LIMIT
  stack_totals: $TOTALS_LIMIT
  processes: $PROC_LIMIT
  top_stacks: $TOP_STACKS
watch:
  - name: hold
    tracking: $TRACKING
    match:
      comm: hold
      exe: $(readlink -f "$HOLD")  # this tree's hold only: never another run's processes
    unwind: $UNWIND
EOF

echo "# leakwatchd at scale, $(date -u '+%Y-%m-%d %H:%M UTC'), tracking: $TRACKING"
echo "# $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "# $PROCS processes x $BLOCKS live blocks from $STACKS stacks each, churn $CHURN pairs/s each;" \
     "interval $INTERVAL, window ${WINDOW}s, $SCRAPES requests per endpoint"
echo "# limits: live_allocations $LIVE_LIMIT, stacks $STACK_LIMIT, stack_totals $TOTALS_LIMIT," \
     "processes $PROC_LIMIT, top_stacks $TOP_STACKS; leak_detection.enabled $LEAK_DETECTION," \
     "max_series $MAX_SERIES; unwind $UNWIND"
echo "# leakwatchd: $DAEMON ${DAEMON_FLAGS[*]+${DAEMON_FLAGS[*]}} (built $(date -u -r "$DAEMON" '+%Y-%m-%d %H:%M UTC'))"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

${DAEMON_WRAPPER[@]+"${DAEMON_WRAPPER[@]}"} \
    "$DAEMON" --config "$WORK/leakwatch.yaml" --web.listen-address "127.0.0.1:$PORT" \
    --log-level warn ${DAEMON_FLAGS[@]+"${DAEMON_FLAGS[@]}"} >"$WORK/daemon.log" 2>&1 &
DAEMON_JOB=$!
DAEMON_PID=$DAEMON_JOB
if ((${#DAEMON_WRAPPER[@]})); then  # the wrapper's child is the daemon
    for ((i = 0; i < 100; i++)); do
        DAEMON_PID=$(pgrep -P "$DAEMON_JOB" -x leakwatchd || true)
        [[ -n $DAEMON_PID ]] && break
        sleep 0.1
    done
    [[ -n $DAEMON_PID ]] || { echo "daemon_scale.sh: no leakwatchd under ${DAEMON_WRAPPER[*]}" >&2
                              cat "$WORK/daemon.log" >&2; exit 1; }
fi
wait_for_daemon daemon_scale.sh
IDLE_RSS=$(status_kib "$DAEMON_PID" VmRSS)

# --- the watched processes -----------------------------------------------------------------
T_START=$(now_s)
HOLD_PIDS=()
for ((n = 0; n < PROCS; n++)); do
    HOLD_GO=$WORK/go HOLD_STOP=$WORK/stop "$HOLD" "$BLOCKS" "$STACKS" "$CHURN" \
        >"$WORK/hold.$n.out" 2>&1 &
    HOLD_PIDS+=($!)
done
for ((i = 0; i < 1200; i++)); do
    read -r seen _ _ _ <<<"$(api_totals)"
    ((seen >= PROCS)) && break
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.5
done
if ((seen < PROCS)); then
    echo "daemon_scale.sh: leakwatchd lists $seen of $PROCS hold processes after 10 minutes; its log:" >&2
    cat "$WORK/daemon.log" >&2
    exit 1
fi
T_ATTACHED=$(now_s)
CPU_BEFORE_LOAD=$(cpu_ticks "$DAEMON_PID")
touch "$WORK/go"
WANT=$((PROCS * BLOCKS))
# The watch tier counts no allocation: nothing to wait for beyond the processes.
[[ $TRACKING == full ]] || WANT=0 SERIES=0
for ((i = 0; i < 1200; i++)); do
    read -r seen allocs stacks _ <<<"$(api_totals)"
    ((allocs >= WANT * 99 / 100 && stacks >= SERIES)) && break
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.5
done
if ((allocs < WANT * 99 / 100 || stacks < SERIES)); then
    echo "daemon_scale.sh: leakwatchd counts $allocs of $WANT allocations and $stacks of $SERIES" \
         "stacks after 10 minutes; its log:" >&2
    cat "$WORK/daemon.log" >&2
    exit 1
fi
T_LOADED=$(now_s)
CPU_LOAD=$(($(cpu_ticks "$DAEMON_PID") - CPU_BEFORE_LOAD))
ready=$(grep -l '^ready ' "$WORK"/hold.*.out | wc -l)
echo "# all $PROCS attached after $(awk -v a="$T_START" -v b="$T_ATTACHED" 'BEGIN { printf "%.1f", b - a }') s;" \
     "$ready ready; $allocs allocations and $stacks stacks counted" \
     "$(awk -v a="$T_ATTACHED" -v b="$T_LOADED" 'BEGIN { printf "%.1f", b - a }') s after the go" \
     "(daemon CPU meanwhile $(awk -v t="$CPU_LOAD" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }') s)"

# Two more samples, so the first symbolization of every stack is behind us.
sleep "$(awk -v i="${INTERVAL%s}" 'BEGIN { print 2 * i + 1 }')"

# --- measured window: no HTTP request, only /proc ------------------------------------------
CPU0=$(cpu_ticks "$DAEMON_PID")
BUSY0=$(busy_ticks)
T0=$(now_s)
RSS_MAX=0 RSS_SUM=0 RSS_N=0
T_END=$(awk -v t="$T0" -v w="$WINDOW" 'BEGIN { printf "%.3f", t + w }')
while awk -v n="$(now_s)" -v e="$T_END" 'BEGIN { exit !(n < e) }'; do
    rss=$(status_kib "$DAEMON_PID" VmRSS)
    ((rss > RSS_MAX)) && RSS_MAX=$rss
    RSS_SUM=$((RSS_SUM + rss)) RSS_N=$((RSS_N + 1))
    sleep 1
done
CPU1=$(cpu_ticks "$DAEMON_PID")
BUSY1=$(busy_ticks)
T1=$(now_s)
# The CPUs the rest of the machine kept busy meanwhile (this script's polling included).
OTHERS=$(awk -v b=$((BUSY1 - BUSY0 - CPU1 + CPU0)) -v hz="$HZ" -v a="$T0" -v e="$T1" \
             'BEGIN { printf "%.2f", b / hz / (e - a) }')
RSS_AVG=$((RSS_SUM / RSS_N))
CPU_PCT=$(awk -v t=$((CPU1 - CPU0)) -v hz="$HZ" -v a="$T0" -v b="$T1" \
              'BEGIN { printf "%.2f", 100 * t / hz / (b - a) }')
CPU_S=$(awk -v t=$((CPU1 - CPU0)) -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
WALL_S=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }')
HWM_WINDOW=$(status_kib "$DAEMON_PID" VmHWM)
read -r BPF_KIB BPF_MAPS <<<"$(bpf_map_kib "$DAEMON_PID")"

# --- requests ------------------------------------------------------------------------------
api /metrics >"$WORK/metrics.txt"
METRIC_SERIES=$(grep -cv '^#' "$WORK/metrics.txt" || true)
STACK_SERIES=$(grep -c '^leakwatch_stack_outstanding_bytes{' "$WORK/metrics.txt" || true)
GROWTH_SERIES=$(grep -c '^leakwatch_growth_bytes_per_second{scope="stack"' "$WORK/metrics.txt" || true)
LOST=$(awk '/^leakwatch_lost_events_total\{/ && $2 > 0 { sub(/^.*reason="/, "", $1);
            sub(/".*$/, "", $1); printf "%s%s=%s", sep, $1, $2; sep = ", " }' "$WORK/metrics.txt")

CPU_R0=$(cpu_ticks "$DAEMON_PID")
BUSY_R0=$(busy_ticks)
T_R0=$(now_s)
read -r METRICS_MED METRICS_MAX METRICS_BYTES <<<"$(time_requests "$SCRAPES" /metrics)"
CPU_R1=$(cpu_ticks "$DAEMON_PID")
BUSY_R1=$(busy_ticks)
T_R1=$(now_s)
OTHERS_R=$(awk -v b=$((BUSY_R1 - BUSY_R0 - CPU_R1 + CPU_R0)) -v hz="$HZ" -v a="$T_R0" \
               -v e="$T_R1" 'BEGIN { printf "%.2f", b / hz / (e - a) }')
stack_urls=()
for ((n = 0; n < PROCS && n < SCRAPES; n++)); do
    stack_urls+=("/api/v1/stacks?pid=${HOLD_PIDS[n]}&top=$TOP_STACKS")
done
read -r STACKS_MED STACKS_MAX STACKS_BYTES <<<"$(time_requests "$SCRAPES" "${stack_urls[@]}")"
read -r PROCS_MED PROCS_MAX PROCS_BYTES <<<"$(time_requests "$SCRAPES" /api/v1/processes)"
HWM_BEFORE_PROFILES=$(status_kib "$DAEMON_PID" VmHWM)
# The whole host's heap profile, as Parca and Pyroscope scrape it, and one process's folded stacks.
read -r HEAP_MED HEAP_MAX HEAP_BYTES <<<"$(time_requests "$SCRAPES" /debug/pprof/heap)"
read -r FOLDED_MED FOLDED_MAX FOLDED_BYTES <<<"$(time_requests "$SCRAPES" \
    "/api/v1/folded?pid=${HOLD_PIDS[0]}")"
if [[ -z $METRICS_MED || -z $STACKS_MED || -z $PROCS_MED || -z $HEAP_MED || -z $FOLDED_MED ]]; then
    echo "daemon_scale.sh: requests failed; the daemon's log:" >&2
    cat "$WORK/daemon.log" >&2
    exit 1
fi
CPU_PER_SCRAPE_MS=$(awk -v t=$((CPU_R1 - CPU_R0)) -v hz="$HZ" -v n="$SCRAPES" \
                        'BEGIN { printf "%.0f", 1000 * t / hz / n }')
HWM_END=$(status_kib "$DAEMON_PID" VmHWM)
RSS_END=$(status_kib "$DAEMON_PID" VmRSS)
read -r seen allocs stacks _ <<<"$(api_totals)"

# --- report --------------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
verdict() {  # verdict VALUE TARGET: whether VALUE <= TARGET
    awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t ? "yes" : "NO") }'
}
echo
printf '| %-52s | %14s | %8s | %4s |\n' figure measured target met
printf '|%s|%s|%s|%s|\n' ------------------------------------------------------ \
    ---------------: ---------: ------
row() { printf '| %-52s | %14s | %8s | %4s |\n' "$@"; }
row "watched processes / outstanding allocations" "$seen / $allocs" "" ""
row "stacks with outstanding bytes (API)" "$stacks" "" ""
row "daemon CPU over ${WALL_S} s, % of one core" "$CPU_PCT" "$TARGET_CPU_PCT" \
    "$(verdict "$CPU_PCT" "$TARGET_CPU_PCT")"
row "daemon CPU time over the window, s" "$CPU_S" "" ""
row "daemon RSS in the window, max (avg), MiB" "$(mib "$RSS_MAX") ($(mib "$RSS_AVG"))" \
    "$TARGET_RSS_MIB" "$(verdict "$(mib "$RSS_MAX")" "$TARGET_RSS_MIB")"
row "daemon VmHWM after the window, MiB" "$(mib "$HWM_WINDOW")" "" ""
row "daemon VmHWM before the pprof and folded requests, MiB" "$(mib "$HWM_BEFORE_PROFILES")" \
    "$TARGET_RSS_MIB" "$(verdict "$(mib "$HWM_BEFORE_PROFILES")" "$TARGET_RSS_MIB")"
row "daemon VmHWM after the requests, MiB" "$(mib "$HWM_END")" "$TARGET_RSS_MIB" \
    "$(verdict "$(mib "$HWM_END")" "$TARGET_RSS_MIB")"
row "daemon RSS after the requests, MiB" "$(mib "$RSS_END")" "" ""
row "daemon RSS before any process, MiB" "$(mib "$IDLE_RSS")" "" ""
row "BPF maps of the daemon (kernel memory), MiB" "$(mib "$BPF_KIB") in $BPF_MAPS maps" "" ""
row "/metrics latency, median, ms" "$METRICS_MED" "$TARGET_METRICS_MS" \
    "$(verdict "$METRICS_MED" "$TARGET_METRICS_MS")"
row "/metrics latency, max, ms" "$METRICS_MAX" "$TARGET_METRICS_MS" \
    "$(verdict "$METRICS_MAX" "$TARGET_METRICS_MS")"
row "/metrics size, bytes" "$METRICS_BYTES" "" ""
row "/metrics series, all (stack_outstanding_bytes)" "$METRIC_SERIES ($STACK_SERIES)" "" ""
row "/metrics growth series of stacks" "$GROWTH_SERIES" "" ""
row "daemon CPU per /metrics request, ms" "$CPU_PER_SCRAPE_MS" "" ""
row "other CPUs busy: window / /metrics requests" "$OTHERS / $OTHERS_R" "" ""
row "/api/v1/stacks?top=$TOP_STACKS latency, median (max), ms" "$STACKS_MED ($STACKS_MAX)" "" ""
row "/api/v1/stacks size, bytes" "$STACKS_BYTES" "" ""
row "/api/v1/processes latency, median (max), ms" "$PROCS_MED ($PROCS_MAX)" "" ""
row "/api/v1/processes size, bytes" "$PROCS_BYTES" "" ""
row "/debug/pprof/heap (every process) latency, median (max), ms" "$HEAP_MED ($HEAP_MAX)" "" ""
row "/debug/pprof/heap size, bytes (gzipped)" "$HEAP_BYTES" "" ""
row "/api/v1/folded?pid= latency, median (max), ms" "$FOLDED_MED ($FOLDED_MAX)" "" ""
row "/api/v1/folded size, bytes" "$FOLDED_BYTES" "" ""
echo
echo "CPU: utime + stime of leakwatchd (all threads) over the window, no HTTP request meanwhile."
echo "RSS: VmRSS sampled once a second; VmHWM is the peak since start. The BPF maps are kernel"
echo "memory (the memlock of each map leakwatchd holds, from /proc/PID/fdinfo), not in RSS."
echo "Latency: curl time_total over 127.0.0.1, $SCRAPES requests each, one at a time. Other CPUs"
echo "busy: the rest of the machine's CPU use (/proc/stat less the daemon's) over $(nproc) CPUs;"
echo "above ~0.5 the latencies' maxima are mostly waiting for a CPU."
echo "lost events: ${LOST:-none}"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

touch "$WORK/stop"
for pid in "${HOLD_PIDS[@]}"; do
    wait "$pid" || true
done
kill -TERM "$DAEMON_PID"
wait "$DAEMON_JOB" || { echo "daemon_scale.sh: leakwatchd exited with status $?; its log:" >&2
                        cat "$WORK/daemon.log" >&2; exit 1; }
