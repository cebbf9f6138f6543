#!/usr/bin/env bash
# Overhead benchmark of leakwatchd (docs/performance.md). A benchmark, not a test: it prints
# figures and judges nothing. Run as root on an otherwise idle machine:
#
#   bench/run.sh
#
# For each mode of bench/alloc_bench (fixed: malloc(64)/free in one thread; random: 16 B..64 KiB
# in 4 threads), the median of REPS runs of each case:
#   untraced        no probes
#   floor           empty BPF programs: uprobe on malloc and free, uretprobe on malloc
#   floor-free+OFF  the same, with free's probe OFF bytes in, past glibc's `test %rdi,%rdi; je`
#                   (only when free starts that way): empty probes where leakwatchd puts them
#   floor-entries   empty uprobes on malloc and free+OFF only, no uretprobe: the floor of a
#                   session uprobe whose entry skips the return (a call that is not sampled)
#   floor-session+OFF  one session-uprobe link (6.13+), empty, at malloc (entry and return)
#                   and free+OFF (entry only): the link type and the sites of leakwatchd's
#                   default probe mode, so the floor full tracking is compared with
#   leakwatchd      the daemon tracking the process (all its allocator probes), interval 1s,
#                   full tracking, session uprobes where the kernel has them (auto)
#   leakwatchd-multi        the same with --probe-mode multi (entry and return links, 6.6+)
#   sampled / sampled-multi the same two with sample_bytes: $SAMPLE (default 512KiB)
#   dwarf           leakwatchd, full tracking, session uprobes, `unwind: dwarf`: stacks walked
#                   in BPF with the rules read from CFI instead of by frame pointers
#   auto            the same with `unwind: auto` (the default): by the frame pointer through
#                   the files whose functions keep one (the bench), by rules elsewhere (libc)
#   watch           leakwatchd with the default tracking (escalate): the process in the watch
#                   tier (its memory read every interval, first-touch page faults sampled), no
#                   allocator probe; N=PAIRS like untraced, since it is as short
# The leakwatchd, multi and sampled cases walk by frame pointers (`unwind: frame-pointer`).
# ns/pair is wall time over the whole loop (all threads) divided by the pairs; cpu ns/pair is
# the bench's CPU time (user + system, where uprobe handling is charged) over the pairs.
#
# Environment: BUILD (default ./build), PAIRS (untraced, default 10000000), TRACED_PAIRS
# (probed cases, default 1000000), REPS (default 3), MODES (default "fixed random"),
# SKIP_BUILD=1 to use the binaries already in $BUILD/bin, SAMPLE (sample_bytes of the sampled
# cases, default 512KiB), CASES (default: all of the above), DEPTH (frames added above the
# fixed mode's loop, default 0: the cost of walking deeper stacks).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
PAIRS=${PAIRS:-10000000}
TRACED_PAIRS=${TRACED_PAIRS:-1000000}
REPS=${REPS:-3}
MODES=${MODES:-fixed random}
SAMPLE=${SAMPLE:-512KiB}
DEPTH=${DEPTH:-0}
CASES=${CASES:-untraced watch floor floor-free floor-entries floor-session leakwatchd leakwatchd-multi sampled sampled-multi dwarf auto}

if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh: must run as root (uprobes and BPF)" >&2
    exit 1
fi
for tool in curl python3 objdump nm; do
    command -v "$tool" >/dev/null || { echo "run.sh: needs $tool" >&2; exit 1; }
done

# --- build ---------------------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    if [[ ! -f $BUILD/CMakeCache.txt ]]; then
        cmake -S "$ROOT" -B "$BUILD" >/dev/null
    fi
    cmake --build "$BUILD" --target leakwatchd alloc_bench floor -j"$(nproc)" >/dev/null
fi
BENCH=$BUILD/bin/alloc_bench
FLOOR=$BUILD/bin/floor
DAEMON=$BUILD/bin/leakwatchd

# --- cleanup -------------------------------------------------------------------------------
# Everything this script starts is a background job of this shell.
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_workdir leakwatch-bench
trap 'exit 130' INT TERM

# --- helpers -------------------------------------------------------------------------------
median() {  # values on stdin, one a line
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                                        else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

field() {  # field NAME LINE: the value of NAME=VALUE in a result line
    tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"
}

wait_for_line() {  # wait_for_line FILE PATTERN SECONDS
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Starts alloc_bench MODE N waiting for a go file; sets BENCH_PID. Output goes to $WORK/bench.out.
start_bench() {
    rm -f "$WORK/go" "$WORK/bench.out"
    BENCH_GO=$WORK/go BENCH_DEPTH=$DEPTH "$BENCH" "$1" "$2" >"$WORK/bench.out" &
    BENCH_PID=$!
    wait_for_line "$WORK/bench.out" '^pid ' 10 || { echo "run.sh: alloc_bench did not start" >&2; exit 1; }
}

busy_ticks() {  # CPU time the whole machine spent busy, in clock ticks (all CPUs)
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# Lets the bench run.
go_bench() {
    BUSY_BEFORE=$(busy_ticks)
    touch "$WORK/go"
}

# Waits for the bench and sets RESULT to its result line. Also sets OTHERS: the CPUs the rest
# of the machine kept busy on average meanwhile (another build on a shared box shows up here and
# spoils wall times, the random mode's most).
finish_bench() {
    local busy_after
    wait "$BENCH_PID"
    busy_after=$(busy_ticks)
    RESULT=$(grep '^result ' "$WORK/bench.out")
    OTHERS=$(awk -v t=$((busy_after - BUSY_BEFORE)) -v hz="$(getconf CLK_TCK)" \
                 -v wall="$(field elapsed_ns "$RESULT")" -v cpu="$(field cpu_ns_per_pair "$RESULT")" \
                 -v n="$(field pairs "$RESULT")" \
                 'BEGIN { o = (t / hz - cpu * n / 1e9) / (wall / 1e9); printf "%.2f", o < 0 ? 0 : o }')
}

# The offset of the instruction after glibc free's leading `test %rdi,%rdi; je ...`, or empty.
free_skip_offset() {
    local libc addr third
    libc=$(ldd "$BENCH" | awk '$1 ~ /^libc\.so/ { print $3 }')
    [[ -n $libc ]] || return 0
    addr=$(nm -D --defined-only "$libc" | awk '$3 ~ /^free(@|$)/ { print $1; exit }')
    [[ -n $addr ]] || return 0
    third=$(objdump -d --no-show-raw-insn --start-address=$((16#$addr)) \
                    --stop-address=$((16#$addr + 32)) "$libc" |
                awk '/^ *[0-9a-f]+:/ { n++; sub(/:$/, "", $1); a[n] = $1; i[n] = $2 " " $3 }
                     END { if (n >= 3 && i[1] ~ /^test %rdi,%rdi/ && i[2] ~ /^je /) print a[3] }')
    [[ -n $third ]] && echo $((16#$third - 16#$addr))
    return 0
}

api_pids() {  # pids in the daemon's /api/v1/processes, space-separated
    curl -sf --max-time 2 "http://127.0.0.1:$PORT/api/v1/processes" |
        python3 -c 'import json, sys; print(" ".join(str(p["pid"]) for p in json.load(sys.stdin)["processes"]))' \
        2>/dev/null || true
}

api_allocations() {  # allocations_total of one pid, or empty
    curl -sf --max-time 2 "http://127.0.0.1:$PORT/api/v1/processes" |
        python3 -c 'import json, sys
for p in json.load(sys.stdin)["processes"]:
    if p["pid"] == int(sys.argv[1]): print(p["allocations_total"])' "$1" 2>/dev/null || true
}

cpu_ticks() {  # utime + stime of a pid, in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# --- cases ---------------------------------------------------------------------------------
run_untraced() {  # MODE
    start_bench "$1" "$PAIRS"
    go_bench
    finish_bench
}

run_floor() {  # MODE PROBES
    start_bench "$1" "$TRACED_PAIRS"
    "$FLOOR" "$BENCH_PID" "$2" >"$WORK/floor.out" 2>&1 &
    local floor_pid=$!
    if ! wait_for_line "$WORK/floor.out" '^attached' 30; then
        cat "$WORK/floor.out" >&2
        exit 1
    fi
    go_bench
    finish_bench
    wait "$floor_pid"  # it exits when the bench is gone, after detaching
}

start_daemon() {  # PROBE_MODE SAMPLE_BYTES [UNWIND]
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$WORK/leakwatch.yaml" <<EOF
interval: 1s
watch:
  - name: bench
    match:
      comm: alloc_bench
$(if [[ $2 == watch ]]; then :; else
    echo "    tracking: $([[ $2 == 0 ]] && echo full || echo sampled)"
    echo "    sample_bytes: $2"
fi)
    unwind: ${3:-frame-pointer}
EOF
    "$DAEMON" --config "$WORK/leakwatch.yaml" --web.listen-address "127.0.0.1:$PORT" \
              --probe-mode "$1" --log-level warn >"$WORK/daemon.log" 2>&1 &
    DAEMON_PID=$!
    wait_for_daemon run.sh
    DAEMON_IDLE_RSS=$(rss_kib "$DAEMON_PID")
}

stop_daemon() {
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || { echo "run.sh: leakwatchd exited with status $?; its log:" >&2
                            cat "$WORK/daemon.log" >&2; exit 1; }
}

run_daemon() {  # MODE [PAIRS]; also sets DAEMON_CPU_S, DAEMON_MAX_RSS, SEEN_ALLOCS
    start_bench "$1" "${2:-$TRACED_PAIRS}"
    local i
    for ((i = 0; i < 600; i++)); do
        [[ " $(api_pids) " == *" $BENCH_PID "* ]] && break
        sleep 0.1
    done
    if [[ " $(api_pids) " != *" $BENCH_PID "* ]]; then
        echo "run.sh: leakwatchd did not attach to pid $BENCH_PID in 60 s; its log:" >&2
        cat "$WORK/daemon.log" >&2
        exit 1
    fi
    local before after seen
    before=$(cpu_ticks "$DAEMON_PID")
    DAEMON_MAX_RSS=$(rss_kib "$DAEMON_PID")
    SEEN_ALLOCS=0
    go_bench
    # Sample the daemon's RSS and the API once a second; notice the end within 0.1 s.
    local tick=0 rss
    while kill -0 "$BENCH_PID" 2>/dev/null && ! grep -q '^result ' "$WORK/bench.out"; do
        if ((tick++ % 10 == 0)); then
            rss=$(rss_kib "$DAEMON_PID")
            ((rss > DAEMON_MAX_RSS)) && DAEMON_MAX_RSS=$rss
            seen=$(api_allocations "$BENCH_PID")
            [[ -n $seen ]] && ((seen > SEEN_ALLOCS)) && SEEN_ALLOCS=$seen
        fi
        sleep 0.1
    done
    after=$(cpu_ticks "$DAEMON_PID")
    finish_bench
    DAEMON_CPU_S=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }')
    # Let the daemon drop the exited process (its links detach in the background) before the
    # next run, so detaching does not overlap a measurement.
    for ((i = 0; i < 600; i++)); do
        [[ " $(api_pids) " == *" $BENCH_PID "* ]] || break
        sleep 0.1
    done
    sleep 3
}

# --- measure -------------------------------------------------------------------------------
FREE_SKIP=$(free_skip_offset)
echo "# leakwatch overhead benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "# untraced N=$PAIRS pairs, probed cases N=$TRACED_PAIRS pairs, median of $REPS runs"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg); fixed-mode stack depth +$DEPTH"

declare -A WALL CPU NOISE
DAEMON_NOTES=() ANOMALIES=()
for mode in $MODES; do
    cases=()
    for c in $CASES; do
        case $c in
            floor-free|floor-entries|floor-session) [[ -n $FREE_SKIP ]] && cases+=("$c+$FREE_SKIP") ;;
            *) cases+=("$c") ;;
        esac
    done
    CASE_LIST=("${cases[@]}")
    for c in "${cases[@]}"; do
        # The daemon attaches to every alloc_bench, so it runs only for its own case.
        case $c in
            leakwatchd) start_daemon auto 0 ;;
            leakwatchd-multi) start_daemon multi 0 ;;
            sampled) start_daemon auto "$SAMPLE" ;;
            sampled-multi) start_daemon multi "$SAMPLE" ;;
            dwarf) start_daemon auto 0 dwarf ;;
            auto) start_daemon auto 0 auto ;;
            watch) start_daemon auto watch ;;
        esac
        walls=() cpus=() others=() misses=0
        for ((rep = 1; rep <= REPS; rep++)); do
            case $c in
                untraced) run_untraced "$mode" ;;
                floor) run_floor "$mode" malloc,free,malloc_ret ;;
                floor-free+*) run_floor "$mode" "malloc,free+$FREE_SKIP,malloc_ret" ;;
                floor-entries+*) run_floor "$mode" "malloc,free+$FREE_SKIP" ;;
                floor-session+*) run_floor "$mode" "s:malloc,s:free+$FREE_SKIP" ;;
                leakwatchd* | sampled* | dwarf | auto) run_daemon "$mode" ;;
                watch) run_daemon "$mode" "$PAIRS" ;;
            esac
            echo "# $mode $c run $rep: $RESULT others_busy_cpus=$OTHERS" >&2
            # A probed run as fast as an untraced one had no probe in effect, though the
            # attach succeeded: say so and run it again rather than average it in.
            if [[ $c != untraced && $c != watch ]] &&
                awk -v x="$(field cpu_ns_per_pair "$RESULT")" -v u="${CPU[$mode,untraced]}" \
                    'BEGIN { exit !(x < 2 * u) }'; then
                ANOMALIES+=("$mode $c run $rep: $(field ns_per_pair "$RESULT") ns/pair, as if untraced, although the probes were reported attached; run again")
                echo "# ${ANOMALIES[-1]}" >&2
                if ((++misses > 3)); then
                    echo "run.sh: $mode $c: probes had no effect in $misses runs; giving up" >&2
                    exit 1
                fi
                ((rep--)) || true
                continue
            fi
            walls+=("$(field ns_per_pair "$RESULT")")
            cpus+=("$(field cpu_ns_per_pair "$RESULT")")
            others+=("$OTHERS")
            if [[ $c == leakwatchd* || $c == sampled* || $c == dwarf || $c == auto || $c == watch ]]; then
                wall_s=$(awk -v ns="$(field elapsed_ns "$RESULT")" 'BEGIN { printf "%.1f", ns / 1e9 }')
                DAEMON_NOTES+=("$mode $c run $rep: bench loop ${wall_s} s; leakwatchd CPU ${DAEMON_CPU_S} s, max RSS $((DAEMON_MAX_RSS / 1024)) MiB (idle $((DAEMON_IDLE_RSS / 1024)) MiB); API showed $SEEN_ALLOCS allocations")
            fi
        done
        [[ $c == leakwatchd* || $c == sampled* || $c == dwarf || $c == auto || $c == watch ]] && stop_daemon
        WALL[$mode,$c]=$(printf '%s\n' "${walls[@]}" | median)
        CPU[$mode,$c]=$(printf '%s\n' "${cpus[@]}" | median)
        NOISE[$mode,$c]=$(printf '%s\n' "${others[@]}" | sort -g | tail -1)
    done
done

# --- report --------------------------------------------------------------------------------
echo
printf '| %-6s | %-16s | %8s | %9s | %9s | %8s | %11s | %12s | %6s |\n' \
    mode case N "ns/pair" "+ns/pair" ratio "cpu ns/pair" "+cpu ns/pair" others
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' -------- ------------------ ---------: \
    ----------: ----------: ---------: ------------: -------------: -------:
for mode in $MODES; do
    cases=("${CASE_LIST[@]}")
    base=${WALL[$mode,untraced]} cbase=${CPU[$mode,untraced]}
    for c in "${cases[@]}"; do
        n=$TRACED_PAIRS
        [[ $c == untraced || $c == watch ]] && n=$PAIRS
        awk -v m="$mode" -v c="$c" -v n="$n" -v w="${WALL[$mode,$c]}" -v b="$base" \
            -v cw="${CPU[$mode,$c]}" -v cb="$cbase" -v o="${NOISE[$mode,$c]}" 'BEGIN {
                printf "| %-6s | %-16s | %8d | %9.1f | %9.1f | %7.1fx | %11.1f | %12.1f | %6.2f |\n",
                       m, c, n, w, w - b, w / b, cw, cw - cb, o }'
    done
done
echo
echo "ns/pair: wall time (CLOCK_MONOTONIC, whole loop) / N; cpu ns/pair: the bench's user+system"
echo "time / N; +: minus untraced; others: the most CPUs the rest of the machine kept busy during"
echo "one run of that case (noise: above ~0.1 the wall figures, random mode's most, are suspect;"
echo "counted in 10 ms ticks, so it means little for runs shorter than a second)."
echo
echo "leakwatchd (one daemon per mode and case, interval 1s, watching comm alloc_bench;"
echo "sampled cases: sample_bytes $SAMPLE):"
printf '  %s\n' "${DAEMON_NOTES[@]}"
if ((${#ANOMALIES[@]})); then
    echo
    echo "runs left out:"
    printf '  %s\n' "${ANOMALIES[@]}"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
