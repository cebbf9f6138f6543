#!/usr/bin/env bash
# leakwatchd under an exec storm (docs/operations.md, "An exec storm"). A benchmark, not a test:
# it prints measured figures next to the targets and fails only when the setup does not come up.
# Run as root on an otherwise idle machine:
#
#   bench/exec_storm.sh
#
# leakwatchd watches, by their paths, RATE short-lived processes a second for DURATION seconds
# (bench/storm: exec, 16 mallocs, 8 frees, exit) and beside them one process that leaks LEAK
# bytes every 20 ms from one site. Meanwhile:
#   - its main loop's watchdog pings go to a notify socket of this script, with a watchdog
#     period of WATCHDOG_PROBE_MS (it pings every half period when healthy): the longest gap
#     between pings is the longest stall the unit's WatchdogSec (30 s) would have seen;
#   - /metrics is requested every 100 ms and each request timed;
#   - its open file descriptors and RSS are sampled every second.
# Afterwards: how many storm processes were attached, how many attaches were dropped (the
# process was gone before its probes were placed: lost events attach_dropped) and how many
# exited before leakwatchd could read what they were; the leak's bytes at its site against the
# truth; and the descriptors and RSS once the storm is over (they must come back down).
#
# The maps and links are pinned, as under the unit, in a bpffs this script mounts (PINS=0: not).
#
# Environment: BUILD (build directory, default ./build), RATE (500), DURATION (60), LEAK (4096),
# WATCHDOG_PROBE_MS (200), TRACKING (the storm rule's tracking: full, the default, or escalate),
# LOG_LEVEL (info), DAEMON_FLAGS (more leakwatchd flags, e.g. "--probe-mode classic"),
# LEAKWATCHD (another leakwatchd binary, e.g. an older build to compare), SKIP_BUILD=1, PYTHON
# (default /usr/bin/python3 if present), LOGS (a directory to keep the daemon's log, the notify
# messages, the request times and the fds/RSS samples in).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
RATE=${RATE:-500}
DURATION=${DURATION:-60}
LEAK=${LEAK:-4096}
WATCHDOG_PROBE_MS=${WATCHDOG_PROBE_MS:-200}
TRACKING=${TRACKING:-full}  # the storm's rule: full (probes at exec, the costly case) or escalate
read -r -a DAEMON_FLAGS <<<"${DAEMON_FLAGS:-}"
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    [[ -x /usr/bin/python3 ]] && PYTHON=/usr/bin/python3
fi
TICK_MS=20
TICKS=$(((DURATION + 10) * 1000 / TICK_MS))  # the leak goes on a little past the storm

# The targets of issue 15.
UNIT_WATCHDOG_S=30
TARGET_METRICS_MS=100

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_require exec_storm.sh curl "$PYTHON"
bench_build "$BUILD" leakwatchd storm
DAEMON=${LEAKWATCHD:-$BUILD/bin/leakwatchd}
STORM=$BUILD/bin/storm
for bin in "$DAEMON" "$STORM"; do
    [[ -x $bin ]] || { echo "exec_storm.sh: $bin is not built" >&2; exit 1; }
done

bench_workdir leakwatch-storm
trap 'exit 130' INT TERM

# Copies under names of this run's own: the rules match them by path, and nothing else. The
# spawner is a copy no rule matches, so that each child is seen once, at its exec.
cp "$STORM" "$WORK/storm-child"
cp "$STORM" "$WORK/storm-leak"
cp "$STORM" "$WORK/storm-spawner"

status_kib() {  # status_kib PID FIELD
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/leakwatch.yaml" <<EOF
interval: 5s
watch:
  - name: storm
    tracking: $TRACKING
    match:
      exe: $WORK/storm-child
  - name: leak
    tracking: full
    match:
      exe: $WORK/storm-leak
EOF

# The service manager's side of the notify protocol: every message, timed.
"$PYTHON" - "$WORK/notify" >"$WORK/notify.log" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    data = s.recv(65536).decode(errors="replace")
    for line in data.splitlines():
        print(f"{time.monotonic():.3f} {line}", flush=True)
EOF
for ((i = 0; i < 50; i++)); do [[ -S $WORK/notify ]] && break; sleep 0.1; done

echo "# leakwatchd under an exec storm, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "# $RATE processes a second for ${DURATION} s beside a process leaking $LEAK bytes every ${TICK_MS} ms;" \
     "watchdog probe period ${WATCHDOG_PROBE_MS} ms"
echo "# leakwatchd: $DAEMON ${DAEMON_FLAGS[*]+${DAEMON_FLAGS[*]}}"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# Pinned in a bpffs of this run's own, unmounted at the end (older builds have no such flag).
if "$DAEMON" --help | grep -q -- --bpf-pin-dir; then
    if [[ ${PINS:-1} == 1 ]]; then
        mkdir "$WORK/bpffs"
        mount -t bpf bpf "$WORK/bpffs"
        # shellcheck disable=SC2034 # read by bench_cleanup (bench/lib.sh)
        BENCH_CLEANUP_HOOK="umount $WORK/bpffs"
        DAEMON_FLAGS+=(--bpf-pin-dir "$WORK/bpffs/leakwatch")
    else
        DAEMON_FLAGS+=(--bpf-pin-dir "")
    fi
fi
NOTIFY_SOCKET=$WORK/notify WATCHDOG_USEC=$((WATCHDOG_PROBE_MS * 1000)) \
    "$DAEMON" --config "$WORK/leakwatch.yaml" --web.listen-address "127.0.0.1:$PORT" \
    --log-level "${LOG_LEVEL:-info}" "${DAEMON_FLAGS[@]}" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
wait_for_daemon exec_storm.sh

STORM_GO=$WORK/go "$WORK/storm-leak" leak "$LEAK" "$TICKS" "$TICK_MS" >"$WORK/leak.out" &
for ((i = 0; i < 100; i++)); do grep -q '^pid ' "$WORK/leak.out" 2>/dev/null && break; sleep 0.1; done
LEAK_PID=$(awk '$1 == "pid" { print $2 }' "$WORK/leak.out")
# It leaks once it is watched, so that every block it leaks is counted.
for ((i = 0; i < 100; i++)); do
    curl -sf "http://127.0.0.1:$PORT/api/v1/processes" | grep -q "\"pid\":${LEAK_PID}[,}]" && break
    sleep 0.1
done
touch "$WORK/go"

fds() { find "/proc/$DAEMON_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
IDLE_FDS=$(fds)
IDLE_RSS=$(status_kib "$DAEMON_PID" VmRSS)

# /metrics every 100 ms, each request's time in ms, and right after it the time of a request
# that costs the daemon nothing (/api/v1/stacks without its pid: a 400 answered before any
# state is read): the machine's own share of a request's time (scheduling, the client).
"$PYTHON" - "$PORT" >"$WORK/scrapes" <<'EOF' &
import sys, time, urllib.error, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def timed(path):
    t = time.monotonic()
    try:
        urllib.request.urlopen(base + path, timeout=30).read()
    except urllib.error.HTTPError as e:
        e.read()
    return (time.monotonic() - t) * 1000
while True:
    t = time.monotonic()
    try:
        m = timed("/metrics")
        c = timed("/api/v1/stacks")
        print(f"{m:.1f} {c:.1f}", flush=True)
    except Exception as e:  # noqa: BLE001 - a failed request is a figure too
        print(f"fail {e}", flush=True)
    time.sleep(max(0, 0.1 - (time.monotonic() - t)))
EOF
SCRAPER=$!

# Descriptors and RSS every second, from before the storm until after it.
(while kill -0 "$DAEMON_PID" 2>/dev/null; do
    echo "$(date +%s.%N) $(fds) $(status_kib "$DAEMON_PID" VmRSS)"
    sleep 1
done) >"$WORK/usage" &
SAMPLER=$!

# 10 s of requests before the storm: what the machine's own load makes of the latency.
sleep 10
cp "$WORK/scrapes" "$WORK/scrapes.before"
T0=$(date +%s.%N)
"$WORK/storm-spawner" spawn "$RATE" "$DURATION" "$WORK/storm-child" >"$WORK/spawn.out"
T1=$(date +%s.%N)
read -r SPAWNED < <(awk '$1 == "spawned" { print $2 }' "$WORK/spawn.out")
read -r KEPT_RATE < <(awk '$1 == "rate" { print $2 }' "$WORK/spawn.out")
read -r CHILD_FAILED < <(awk '$1 == "failed" { print $2 }' "$WORK/spawn.out")

# The storm is over: give the daemon 15 s to detach what is left, then look.
sleep 15
kill "$SCRAPER" 2>/dev/null || true
wait "$SCRAPER" 2>/dev/null || true
END_FDS=$(fds)
END_RSS=$(status_kib "$DAEMON_PID" VmRSS)
for ((i = 0; i < 600; i++)); do grep -q '^leaked ' "$WORK/leak.out" && break; sleep 0.1; done
TRUTH=$(awk '$1 == "leaked" { print $2 }' "$WORK/leak.out")
sleep 11  # two samples after the last leak
LEAKED=$(curl -sf "http://127.0.0.1:$PORT/api/v1/stacks?pid=$LEAK_PID&top=20" | "$PYTHON" -c '
import json, sys
print(sum(s["outstanding_bytes"] for s in json.load(sys.stdin)["stacks"] if s["site"] == "leak_tick"))')
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt"
lost() {
    awk -v r="reason=\"$1\"" 'index($0, "leakwatch_lost_events_total{") == 1 && index($0, r) {
        v = $2 } END { printf "%d", v }' "$WORK/metrics.txt"
}
DROPPED=$(lost attach_dropped)
UNREAD=$(lost exec_unread)
EVENTS_LOST=$(lost events_ring_full)
# Distinct processes attached (a pid the kernel reused within the run counts once).
ATTACHED=$(grep -oE "(probing|watching) pid [0-9]* \(storm-child\) for rule 'storm'" "$WORK/daemon.log" |
    grep -oE 'pid [0-9]+' | sort -u | wc -l)
kill -TERM "$DAEMON_PID"
T_STOP=$(date +%s.%N)
wait "$DAEMON_PID" || true
STOP_S=$(awk -v a="$T_STOP" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true

# --- figures -------------------------------------------------------------------------------
# The longest gap between two watchdog pings, from the first to the stop.
STALL=$(awk '$2 == "WATCHDOG=1" { if (last) { g = $1 - last; if (g > m) m = g } last = $1 }
             END { printf "%.2f", m }' "$WORK/notify.log")
PINGS=$(grep -c ' WATCHDOG=1$' "$WORK/notify.log" || true)
FAILED_SCRAPES=$(grep -c '^fail' "$WORK/scrapes" || true)
percentiles() {  # percentiles FILE [COLUMN]: "N P50 P99 MAX" of its request times (ms)
    grep -v '^fail' "$1" | awk -v c="${2:-1}" '{ print $c }' | sort -g | awk '{ t[++n] = $1 }
        END { printf "%d %.1f %.1f %.1f\n", n, t[int(n * 0.5) + 1], t[int(n * 0.99) + 1], t[n] }'
}
read -r BEFORE_N BEFORE_P50 BEFORE_P99 BEFORE_MAX < <(percentiles "$WORK/scrapes.before")
tail -n +"$(($(wc -l <"$WORK/scrapes.before") + 1))" "$WORK/scrapes" >"$WORK/scrapes.storm"
read -r SCRAPES P50 P99 PMAX < <(percentiles "$WORK/scrapes.storm")
read -r _ C50 C99 CMAX < <(percentiles "$WORK/scrapes.storm" 2)
read -r MAX_FDS MAX_RSS < <(awk '{ if ($2 > f) f = $2; if ($3 > r) r = $3 } END { print f, r }' "$WORK/usage")
NEVER=$((SPAWNED - ATTACHED - DROPPED))  # not attached, not counted as dropped: exited unread

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v < t ? "yes" : "NO") }'; }
echo
printf '| %-58s | %18s | %8s | %4s |\n' figure measured target met
printf '|%s|%s|%s|%s|\n' ------------------------------------------------------------ \
    -------------------: ---------: ------
row() { printf '| %-58s | %18s | %8s | %4s |\n' "$@"; }
row "storm processes spawned (rate kept, /s)" "$SPAWNED ($KEPT_RATE)" "" ""
row "  attached / attach dropped (counted) / exited unread" "$ATTACHED / $DROPPED / $NEVER" "" ""
row "  exec_unread counted (with other processes of the machine)" "$UNREAD" \
    ">= $NEVER" "$( ((UNREAD >= NEVER)) && echo yes || echo NO)"
row "process events lost (ring buffer full)" "$EVENTS_LOST" "" ""
row "longest gap between watchdog pings, s" "$STALL" "$UNIT_WATCHDOG_S" \
    "$(verdict "$STALL" "$UNIT_WATCHDOG_S")"
row "/metrics latency p50 / p99 / max, ms ($SCRAPES requests)" "$P50 / $P99 / $PMAX" \
    "$TARGET_METRICS_MS" "$(verdict "$PMAX" "$TARGET_METRICS_MS")"
row "  the same in the 10 s before the storm ($BEFORE_N requests)" \
    "$BEFORE_P50 / $BEFORE_P99 / $BEFORE_MAX" "" ""
row "  a request that costs nothing, right after each one" "$C50 / $C99 / $CMAX" "" ""
row "/metrics requests that failed" "$FAILED_SCRAPES" "0" "$( ((FAILED_SCRAPES == 0)) && echo yes || echo NO)"
row "open descriptors: before / max / 15 s after the storm" "$IDLE_FDS / $MAX_FDS / $END_FDS" "" ""
row "RSS, MiB: before / max / 15 s after the storm" \
    "$(mib "$IDLE_RSS") / $(mib "$MAX_RSS") / $(mib "$END_RSS")" "" ""
row "the leak at leak_tick, bytes (truth)" "$LEAKED ($TRUTH)" "exact" \
    "$([[ $LEAKED == "$TRUTH" ]] && echo yes || echo NO)"
row "storm children that failed" "$CHILD_FAILED" "0" ""
row "leakwatchd stop (SIGTERM to exit), s" "$STOP_S" "" ""
echo
echo "Watchdog: $PINGS pings; with WATCHDOG_USEC=${WATCHDOG_PROBE_MS}000 the main loop pings every"
echo "$((WATCHDOG_PROBE_MS / 2)) ms or so while healthy, so the longest gap is its longest stall plus up to that."
echo "Descriptors and RSS over the run (seconds since the storm began: fds, RSS MiB):"
awk -v t0="$T0" -v t1="$T1" '{ t = $1 - t0; if (t >= -2 && (int(t) % 10 == 0 || t > (t1 - t0) - 1 && t < (t1 - t0) + 1)) printf "  %5.0f s: %5d fds, %6.1f MiB\n", t, $2, $3 / 1024 }' "$WORK/usage" | uniq
echo "lost events: $(awk '/^leakwatch_lost_events_total\{/ && $2 > 0 { sub(/^.*reason="/, "", $1); sub(/".*$/, "", $1); printf "%s%s=%s", sep, $1, $2; sep = ", " }' "$WORK/metrics.txt")"
if [[ -n ${LOGS:-} ]]; then
    mkdir -p "$LOGS"
    cp "$WORK"/{daemon.log,notify.log,scrapes,usage,spawn.out,metrics.txt} "$LOGS/"
fi
