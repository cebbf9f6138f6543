#!/usr/bin/env bash
# What leakwatchd costs a real application: Debian's redis-server (linked with libjemalloc)
# driven by redis-benchmark over 127.0.0.1, in requests per second.
#
# Cases (CASES), run in turn in each repetition, each against a fresh private redis-server:
#   untraced        nothing attached
#   watch           leakwatchd with the default tracking (escalate) and one rule
#                   {name: redis, match: {comm: redis-server, pid: PID}, allocator: {library: libjemalloc}}
#                   (the pid only keeps the daemon off any other redis-server on the machine):
#                   the watch tier, no allocator probe; valid only if redis stayed in it
#   escalated       the same, with redis escalated through POST /api/v1/escalate before the
#                   tests: allocator probes sampling escalation.sample_bytes (512KiB)
#   full            the same rule with `tracking: full`: every allocation recorded
#   sampled-S       the rule with `tracking: sampled, sample_bytes: S`, for each S in SAMPLES
#   heaptrack       redis-server started under heaptrack (LD_PRELOAD); see HEAPTRACK below
#   bpftrace        a bpftrace script (bench/outstanding.bt) keeping outstanding bytes per user
#                   stack of redis's jemalloc malloc/free
# Every redis-benchmark test (TESTS) at every value size (SIZES) runs once per case per
# repetition; the table shows the median requests/second of the REPS repetitions and its ratio
# to untraced, then redis-server's CPU time per request (its threads' run time from
# /proc/PID/task/*/schedstat, in nanoseconds: /proc/PID/stat's ticks of 10 ms were too coarse
# for runs of a fraction of a second).
# A traced case counts only when the daemon's API listed the redis pid and counted allocations
# for it during the case; otherwise the case is reported invalid and left out of the medians.
# With PROBE_COUNTS=1, further passes with kernel.bpf_stats_enabled on: first the watch tier,
# with the run time of every program of the daemon per request against redis's own CPU time per
# request (the watch tier's cost measured where it is spent, not as a difference of noisy
# throughputs: every program of the daemon counts, whichever process ran it, an upper bound
# that a busy machine inflates; and redis's own page faults times FAULT_NS, its own share);
# then traced passes counting how often each BPF program ran per request:
# classic per-function probes (which functions are called), the default attachment with full
# tracking, and with the first SAMPLES value. PROBE_COUNTS=watch runs the watch-tier pass only.
#
# Environment: BUILD (default ./build), SKIP_BUILD=1 (use $BUILD/bin/leakwatchd as it is),
# REPS (3), REQUESTS (per test run, 200000), CLIENTS (50), PIPELINE (1),
# TESTS ("set get lpush lpop"), SIZES (value sizes for -d, "3 1024"), KEYSPACE (-r, 10000),
# SAMPLES (sample_bytes values, "512KiB"; empty for none), PROBE_COUNTS (1),
# CASES (default "untraced watch escalated full sampled-S... heaptrack bpftrace"; a
# comparison whose tool is not installed is left out and said so), HEAPTRACK: "preload"
# (default) starts redis under `heaptrack`; "attach" injects it into the running redis with
# `heaptrack -p`, which needs gdb to call into the process (on some kernels gdb 13 cannot:
# "Couldn't write extended state status"; the case is then invalid and says why).
# Installs redis-server and redis-tools with apt-get when they are missing. On a machine run
# by systemd that also enables the package's own redis service on port 6379; this script
# does not use it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
REPS=${REPS:-3}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-1}
TESTS=${TESTS:-set get lpush lpop}
SIZES=${SIZES:-3 1024}
KEYSPACE=${KEYSPACE:-10000}
SAMPLES=${SAMPLES-512KiB}
PROBE_COUNTS=${PROBE_COUNTS:-1}
# What one page fault of a process in the watch tier costs at most in the tier's programs, for
# the watch pass's estimate of redis's own share: bench/faults.sh measured 70 ns (2026-12-03,
# the sampled stack walks included) for its faulting process in the tier.
FAULT_NS=${FAULT_NS:-100}
HEAPTRACK=${HEAPTRACK:-preload}

if [[ $(id -u) -ne 0 ]]; then
    echo "redis.sh: must run as root (uprobes and BPF)" >&2
    exit 1
fi

# --- what it needs -------------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
if ((${#missing[@]})); then
    echo "redis.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
for tool in curl redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "redis.sh: needs $tool" >&2; exit 1; }
done
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3) || { echo "redis.sh: needs python3" >&2; exit 1; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    if [[ ! -f $BUILD/CMakeCache.txt ]]; then
        cmake -S "$ROOT" -B "$BUILD" >/dev/null
    fi
    cmake --build "$BUILD" --target leakwatchd -j"$(nproc)" >/dev/null
fi
DAEMON=$BUILD/bin/leakwatchd

# --- cleanup -------------------------------------------------------------------------------
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_workdir leakwatch-redis
STATS_BEFORE=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo "")
restore_stats() {
    if [[ -n $STATS_BEFORE && $(sysctl -n kernel.bpf_stats_enabled) != "$STATS_BEFORE" ]]; then
        sysctl -q -w kernel.bpf_stats_enabled="$STATS_BEFORE" || true
    fi
}
trap 'restore_stats; bench_cleanup' EXIT
trap 'exit 130' INT TERM

# --- helpers -------------------------------------------------------------------------------
median() {  # values on stdin, one a line
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2];
                                        else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

hz=$(getconf CLK_TCK)
cpu_ns() {  # CPU time of a pid's threads in nanoseconds (schedstat: not rounded to ticks;
            # %.0f, as mawk's %d stops at 2^31 ns)
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'
}
minflt() {  # minor page faults of a pid (all its threads)
    awk '{ sub(/^.*\) /, ""); print $8 }' "/proc/$1/stat"
}
cpu_ticks() {  # utime + stime of a pid (all its threads), in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

busy_ticks() {  # CPU time the whole machine spent busy, in clock ticks (all CPUs)
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

now_ns() { date +%s%N; }

# The daemon's view of one pid: "allocations frees outstanding_bytes outstanding_allocations",
# or nothing when the pid is not listed.
api_process() {
    curl -sf --max-time 2 "http://127.0.0.1:$DPORT/api/v1/processes" |
        "$PY" -c 'import json, sys
for p in json.load(sys.stdin)["processes"]:
    if p["pid"] == int(sys.argv[1]):
        print(p["allocations_total"], p["frees_total"], p["outstanding_bytes"],
              p["outstanding_allocations"])' "$1" 2>/dev/null || true
}

api_tracking() {  # how the daemon tracks one pid now: watch, escalated, sampled, full
    curl -sf --max-time 2 "http://127.0.0.1:$DPORT/api/v1/processes" |
        "$PY" -c 'import json, sys
for p in json.load(sys.stdin)["processes"]:
    if p["pid"] == int(sys.argv[1]):
        print(p.get("tracking", "?"))' "$1" 2>/dev/null || true
}

redis_info() {  # redis_info FIELD: one field of INFO
    redis-cli -h 127.0.0.1 -p "$RPORT" info all | tr -d '\r' | sed -n "s/^$1://p"
}

start_redis() {  # start_redis [LAUNCHER...]; sets RPORT, REDIS_PID, LAUNCH_PID
    RPORT=$(free_port)
    "$@" redis-server --save '' --appendonly no --port "$RPORT" --bind 127.0.0.1 --daemonize no \
                 --dir "$WORK" --logfile "$WORK/redis.log" >"$WORK/launcher.log" 2>&1 &
    LAUNCH_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        if [[ $(redis-cli -h 127.0.0.1 -p "$RPORT" ping 2>/dev/null) == PONG ]]; then
            # Under a launcher (heaptrack) redis is its child: its own pid is what counts.
            REDIS_PID=$(redis_info process_id)
            return 0
        fi
        sleep 0.1
    done
    echo "redis.sh: redis-server did not answer on 127.0.0.1:$RPORT; its log:" >&2
    cat "$WORK/redis.log" >&2
    exit 1
}

stop_redis() {
    redis-cli -h 127.0.0.1 -p "$RPORT" shutdown nosave >/dev/null 2>&1 || kill -TERM "$REDIS_PID"
    wait "$LAUNCH_PID" || true
}

write_config() {  # write_config FILE PID [SAMPLE_BYTES]; TRACKING=escalate for the default
    {
        echo "watch:"
        echo "  - name: redis"
        echo "    match:"
        echo "      comm: redis-server"
        echo "      pid: $2"
        echo "    allocator:"
        echo "      library: libjemalloc"
        if [[ ${TRACKING:-} == escalate ]]; then
            :  # the default
        elif [[ -n ${3:-} ]]; then
            echo "    tracking: sampled"
            echo "    sample_bytes: $3"
        else
            echo "    tracking: full"
        fi
    } >"$1"
}

# Does this leakwatchd accept sample_bytes S? Sets REJECTED to its message when not.
config_ok() {  # config_ok S
    write_config "$WORK/check.yaml" 1 "$1"
    REJECTED=""
    if ! REJECTED=$("$DAEMON" --check-config --config "$WORK/check.yaml" 2>&1); then
        REJECTED=$(tr '\n' ' ' <<<"$REJECTED")
        return 1
    fi
    REJECTED=""
}

# start_daemon [SAMPLE_BYTES [EXTRA FLAGS...]]: starts leakwatchd for $REDIS_PID and waits until
# the API lists that pid. Returns 1 (and says why) if it never does.
start_daemon() {
    local sample=${1:-}
    shift || true
    DPORT=$(free_port)
    write_config "$WORK/leakwatch.yaml" "$REDIS_PID" "$sample"
    "$DAEMON" --config "$WORK/leakwatch.yaml" --web.listen-address "127.0.0.1:$DPORT" \
              --log-level info "$@" >"$WORK/daemon.log" 2>&1 &
    DAEMON_PID=$!
    local i
    for ((i = 0; i < 600; i++)); do
        [[ -n $(api_process "$REDIS_PID") ]] && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "redis.sh: leakwatchd did not list redis pid $REDIS_PID; its log:" >&2
    cat "$WORK/daemon.log" >&2
    return 1
}

stop_daemon() {
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" || echo "redis.sh: leakwatchd exited with status $?" >&2
}

# Escalates redis through the API, as an operator would, and waits until its allocator probes
# count. Sets ESCALATE_ERROR on failure.
escalate_redis() {
    ESCALATE_ERROR=""
    local code i
    code=$(curl -s -o "$WORK/escalate.out" -w '%{http_code}' -X POST \
                "http://127.0.0.1:$DPORT/api/v1/escalate?pid=$REDIS_PID")
    if [[ $code != 202 ]]; then
        ESCALATE_ERROR="POST /api/v1/escalate answered $code: $(cat "$WORK/escalate.out")"
        return 1
    fi
    for ((i = 0; i < 300; i++)); do
        [[ $(api_tracking "$REDIS_PID") == escalated ]] && return 0
        sleep 0.1
    done
    ESCALATE_ERROR="still '$(api_tracking "$REDIS_PID")' 30 s after the request"
    return 1
}

# The comparisons. start_tool CASE attaches the tool to $REDIS_PID (heaptrack in preload mode is
# already there: redis was started under it); sets TOOL_PID, or TOOL_ERROR and returns 1.
start_tool() {
    TOOL_PID="" TOOL_ERROR=""
    local i
    case $1 in
        heaptrack)
            if [[ $HEAPTRACK == attach ]]; then
                heaptrack -p "$REDIS_PID" -o "$WORK/heaptrack" >"$WORK/tool.log" 2>&1 &
                TOOL_PID=$!
                for ((i = 0; i < 600; i++)); do
                    grep -q 'injection finished' "$WORK/tool.log" && break
                    sleep 0.1
                done
                if grep -q -e 'No symbol "heaptrack_inject"' -e "Couldn't write" "$WORK/tool.log" ||
                   ! grep -q 'injection finished' "$WORK/tool.log"; then
                    TOOL_ERROR="heaptrack -p did not inject: $(grep -v '^$' "$WORK/tool.log" | tail -3 | tr '\n' ' ')"
                    return 1
                fi
            fi
            ;;
        bpftrace)
            sed "s|@LIB@|$JEMALLOC|g" "$ROOT/bench/outstanding.bt" >"$WORK/outstanding.bt"
            bpftrace "$WORK/outstanding.bt" "$REDIS_PID" >"$WORK/tool.log" 2>&1 &
            TOOL_PID=$!
            for ((i = 0; i < 600; i++)); do
                grep -q '^Attaching' "$WORK/tool.log" && break
                kill -0 "$TOOL_PID" 2>/dev/null || break
                sleep 0.1
            done
            if ! grep -q '^Attaching' "$WORK/tool.log"; then
                TOOL_ERROR="bpftrace did not attach: $(tail -3 "$WORK/tool.log" | tr '\n' ' ')"
                return 1
            fi
            sleep 1  # attaching happens after that line
            ;;
    esac
}

stop_tool() {  # bpftrace prints its maps and exits on SIGINT; heaptrack ends with redis
    if [[ -n $TOOL_PID && $c == bpftrace ]]; then
        kill -INT "$TOOL_PID" 2>/dev/null || true
        wait "$TOOL_PID" || true
    fi
}

tool_result() {  # after redis stopped: sets TOOL_NOTE, or TOOL_ERROR when the tool saw nothing
    TOOL_ERROR="" TOOL_NOTE=""
    case $1 in
        heaptrack)
            [[ -n $TOOL_PID ]] && { wait "$TOOL_PID" || true; }
            local f bytes
            f=$(ls "$WORK"/heaptrack*.zst "$WORK"/heaptrack*.gz 2>/dev/null | head -1 || true)
            bytes=$(stat -c %s "$f" 2>/dev/null || echo 0)
            TOOL_NOTE="heaptrack ($HEAPTRACK) wrote $bytes bytes of trace"
            if ((bytes < 1024)); then
                TOOL_ERROR="heaptrack recorded nothing: $(tail -3 "$WORK/launcher.log" "$WORK/tool.log" 2>/dev/null | tr '\n' ' ')"
            fi
            rm -f "$WORK"/heaptrack*
            ;;
        bpftrace)
            local stacks
            stacks=$(grep -c '^@bytes\[' "$WORK/tool.log" || true)
            TOOL_NOTE="bpftrace kept outstanding bytes for $stacks user stacks"
            ((stacks > 0)) || TOOL_ERROR="bpftrace printed no stack: $(tail -3 "$WORK/tool.log" | tr '\n' ' ')"
            ;;
    esac
}

# One redis-benchmark run of one test; sets RPS, REDIS_US (redis CPU µs per request),
# REDIS_FAULTS (redis's minor page faults during the run),
# BENCH_CPU_S, WALL_S, DAEMON_CPU_S (0 when no daemon), OTHERS (CPUs the rest of the machine
# kept busy meanwhile).
run_test() {  # run_test TEST SIZE
    local r0 b0 d0=0 t0 r1 b1 d1=0 t1 out rn0 rn1 f0 f1
    out=$WORK/bench.csv
    f0=$(minflt "$REDIS_PID")
    rn0=$(cpu_ns "$REDIS_PID")
    r0=$(cpu_ticks "$REDIS_PID")
    [[ -n ${DAEMON_PID:-} ]] && d0=$(cpu_ticks "$DAEMON_PID")
    b0=$(busy_ticks)
    t0=$(now_ns)
    # `times` in the subshell reports the CPU time of its child, the benchmark.
    (
        redis-benchmark -h 127.0.0.1 -p "$RPORT" -q --csv -n "$REQUESTS" -c "$CLIENTS" \
                        -P "$PIPELINE" -d "$2" -r "$KEYSPACE" -t "$1" >"$out" 2>"$WORK/bench.err"
        times >"$WORK/times"
    )
    t1=$(now_ns)
    b1=$(busy_ticks)
    r1=$(cpu_ticks "$REDIS_PID")
    rn1=$(cpu_ns "$REDIS_PID")
    f1=$(minflt "$REDIS_PID")
    REDIS_FAULTS=$((f1 - f0))
    [[ -n ${DAEMON_PID:-} ]] && d1=$(cpu_ticks "$DAEMON_PID")
    RPS=$(awk -F'"' 'NR > 1 && $4 != "" { print $4; exit }' "$out")
    if [[ -z $RPS ]]; then
        echo "redis.sh: redis-benchmark -t $1 -d $2 printed no figure:" >&2
        cat "$out" "$WORK/bench.err" >&2
        exit 1
    fi
    BENCH_CPU_S=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] }
                                print s }' "$WORK/times")
    WALL_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    REDIS_US=$(awk -v t=$((rn1 - rn0)) -v n="$REQUESTS" 'BEGIN { printf "%.3f", t / n / 1e3 }')
    DAEMON_CPU_S=$(awk -v t=$((d1 - d0)) -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
    OTHERS=$(awk -v busy=$((b1 - b0)) -v mine=$((r1 - r0 + d1 - d0)) -v bench="$BENCH_CPU_S" \
                 -v hz="$hz" -v wall="$WALL_S" \
                 'BEGIN { o = ((busy - mine) / hz - bench) / wall; printf "%.2f", o < 0 ? 0 : o }')
}

# The uprobe programs the daemon holds: "id name" per line, from its fds.
daemon_prog_ids() {
    grep -h '^prog_id:' /proc/"$DAEMON_PID"/fdinfo/* 2>/dev/null | awk '{ print $2 }' | sort -u
}

prog_counts() {  # "name run_cnt" for each of the given ids that is a uprobe program
    bpftool -j prog show | "$PY" -c 'import json, sys
ids = set(int(x) for x in sys.argv[1:])
for p in json.load(sys.stdin):
    if p["id"] in ids and p["type"] == "kprobe":
        print(p.get("name", "?"), p.get("run_cnt", 0))' "$@"
}

# --- measure -------------------------------------------------------------------------------
if [[ -n ${CASES:-} ]]; then
    read -r -a CASES <<<"$CASES"
else
    CASES=(untraced watch escalated full)
    for s in $SAMPLES; do CASES+=("sampled-$s"); done
    CASES+=(heaptrack bpftrace)
fi
declare -A SKIP
for c in "${CASES[@]}"; do
    if [[ $c == heaptrack ]] && ! command -v heaptrack >/dev/null; then
        SKIP[$c]="heaptrack is not installed (Debian: heaptrack)"
    elif [[ $c == bpftrace ]] && ! command -v bpftrace >/dev/null; then
        SKIP[$c]="bpftrace is not installed (Debian: bpftrace)"
    fi
    if [[ $c == sampled-* ]] && ! config_ok "${c#sampled-}"; then
        SKIP[$c]=$REJECTED
        echo "# $c: SKIPPED, leakwatchd rejects sample_bytes: ${c#sampled-}: $REJECTED" >&2
    fi
done

REDIS_VERSION=$(redis-server --version)
JEMALLOC=$(ldd "$(readlink -f "$(command -v redis-server)")" | awk '/libjemalloc/ { print $3 }')
echo "# leakwatch on redis-server, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "# $REDIS_VERSION"
echo "# allocator: ${JEMALLOC:-none found} ($(dpkg-query -W -f='${Package} ${Version}' libjemalloc2 2>/dev/null || echo '?'))"
echo "# leakwatchd: $("$DAEMON" --version 2>&1 | head -1), $DAEMON"
command -v heaptrack >/dev/null && echo "# $(heaptrack --version 2>&1 | head -1) ($HEAPTRACK)"
command -v bpftrace >/dev/null && echo "# $(bpftrace --version 2>&1 | head -1), bench/outstanding.bt"
echo "# redis-benchmark -n $REQUESTS -c $CLIENTS -P $PIPELINE -r $KEYSPACE -t {${TESTS// /,}} -d {${SIZES// /,}}; median of $REPS"
echo "# kernel.bpf_stats_enabled=${STATS_BEFORE:-?}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

declare -A RPS_OF US_OF
NOTES=() INVALID=()
for ((rep = 1; rep <= REPS; rep++)); do
    for c in "${CASES[@]}"; do
        [[ -n ${SKIP[$c]:-} ]] && continue
        DAEMON_PID="" TOOL_PID="" TRACKING=""
        if [[ $c == heaptrack && $HEAPTRACK == preload ]]; then
            start_redis heaptrack -o "$WORK/heaptrack"
        else
            start_redis
        fi
        if [[ $c == heaptrack || $c == bpftrace ]]; then
            if ! start_tool "$c"; then
                INVALID+=("$c rep $rep: $TOOL_ERROR")
                stop_tool
                stop_redis
                continue
            fi
        elif [[ $c != untraced ]]; then
            [[ $c == watch || $c == escalated ]] && TRACKING=escalate
            sample=""
            [[ $c == sampled-* ]] && sample=${c#sampled-}
            if ! start_daemon "$sample"; then
                INVALID+=("$c rep $rep: leakwatchd never listed redis pid $REDIS_PID")
                stop_daemon
                stop_redis
                continue
            fi
            if [[ $c == escalated ]] && ! escalate_redis; then
                INVALID+=("$c rep $rep: redis pid $REDIS_PID was not escalated: $ESCALATE_ERROR")
                stop_daemon
                stop_redis
                continue
            fi
            read -r a0 f0 o0 n0 <<<"$(api_process "$REDIS_PID")"
            m0=$(redis_info used_memory)
        fi
        declare -A got_rps=() got_us=()
        dcpu=0 maxothers=0
        for size in $SIZES; do
            for t in $TESTS; do
                run_test "$t" "$size"
                got_rps[$t,$size]=$RPS
                got_us[$t,$size]=$REDIS_US
                dcpu=$(awk -v a="$dcpu" -v b="$DAEMON_CPU_S" 'BEGIN { print a + b }')
                maxothers=$(awk -v a="$maxothers" -v b="$OTHERS" 'BEGIN { print (b > a ? b : a) }')
                echo "# rep $rep $c $t -d $size: $RPS rps, redis ${REDIS_US} us/request, wall ${WALL_S} s, benchmark CPU ${BENCH_CPU_S} s, leakwatchd CPU ${DAEMON_CPU_S} s, others ${OTHERS}" >&2
                if [[ -n $DAEMON_PID && -z $(api_process "$REDIS_PID") ]]; then
                    echo "# $c: redis pid no longer listed by the API after $t -d $size" >&2
                    got_rps[invalid]=1
                fi
                if [[ $c == watch && $(api_tracking "$REDIS_PID") != watch ]]; then
                    echo "# $c: redis left the watch tier during $t -d $size" >&2
                    got_rps[invalid]=1
                fi
            done
        done
        valid=1
        if [[ -n $DAEMON_PID ]]; then
            # The API is refreshed every interval (5 s by default): wait for one more sample.
            sleep 6
            read -r a1 f1 o1 n1 <<<"$(api_process "$REDIS_PID")"
            m1=$(redis_info used_memory)
            keys=$(redis_info db0 | sed -n 's/^keys=\([0-9]*\).*/\1/p')
            # Emptying the database frees every key: the outstanding bytes must fall back,
            # which they do only if the daemon sees redis's frees.
            redis-cli -h 127.0.0.1 -p "$RPORT" flushall sync >/dev/null
            sleep 6
            read -r _ _ o2 n2 <<<"$(api_process "$REDIS_PID")"
            if [[ $c == watch ]]; then
                # The watch tier counts no allocation: valid when redis was listed, in the
                # tier, all along, and its memory was read.
                if [[ -n ${got_rps[invalid]:-} || -z ${a1:-} ]]; then
                    valid=0
                    INVALID+=("$c rep $rep: not listed in the watch tier all along; figures left out")
                fi
            elif [[ -n ${got_rps[invalid]:-} || -z ${a1:-} || ${a1:-0} -le ${a0:-0} ]]; then
                valid=0
                INVALID+=("$c rep $rep: not attached (API before: '${a0:-}', after: '${a1:-}' allocations); figures left out")
            fi
            attach_line=$(grep -m1 "watching pid $REDIS_PID" "$WORK/daemon.log" | sed 's/^[^ ]* [^ ]* //' || true)
            NOTES+=("$c rep $rep: $attach_line")
            if ((rep == 1)); then
                while read -r l; do NOTES+=("$c: $l"); done < <(grep -E 'single-steps|listening on' "$WORK/daemon.log" |
                                                           sed 's/^[^ ]* [^ ]* //' || true)
            fi
            NOTES+=("$c rep $rep: leakwatchd counted $((${a1:-0} - ${a0:-0})) allocations and $((${f1:-0} - ${f0:-0})) frees; outstanding $o0 -> $o1 bytes ($n0 -> $n1 blocks) with ${keys:-0} keys, redis used_memory $m0 -> $m1 bytes; after FLUSHALL outstanding ${o2:-?} bytes (${n2:-?} blocks); leakwatchd CPU ${dcpu} s over the tests; others at most ${maxothers}")
            stop_daemon
        elif [[ -n $TOOL_PID || $c == heaptrack ]]; then
            stop_tool
            stop_redis
            tool_result "$c"
            if [[ -n $TOOL_ERROR ]]; then
                valid=0
                INVALID+=("$c rep $rep: $TOOL_ERROR")
            fi
            NOTES+=("$c rep $rep: $TOOL_NOTE; others at most ${maxothers}")
        else
            NOTES+=("$c rep $rep: others at most ${maxothers}")
        fi
        [[ -n $TOOL_PID || $c == heaptrack ]] || stop_redis
        if ((valid)); then
            for size in $SIZES; do
                for t in $TESTS; do
                    RPS_OF[$c,$t,$size]+="${got_rps[$t,$size]} "
                    US_OF[$c,$t,$size]+="${got_us[$t,$size]} "
                done
            done
        fi
        unset got_rps got_us
    done
done

# --- probe counts --------------------------------------------------------------------------
# probe_pass MODE [SAMPLE_BYTES]: one traced pass over every test with kernel.bpf_stats_enabled
# on, counting the runs of each of the daemon's uprobe programs; appends a table to PROBE_TABLE.
# In classic mode each function has its own entry program (alloc_return: every return); the
# default mode runs one program per call entry and, where the entry asks for it, per return.
probe_pass() {
    TRACKING=""
    local mode=$1 sample=${2:-} flags=() ids names r t size n total line sep
    [[ $mode != default ]] && flags=(--probe-mode "$mode")
    local title="probe mode $mode, ${sample:+sample_bytes $sample}"
    title=${title%, }
    [[ -z $sample ]] && title+=", full tracking"
    if [[ -n $sample ]] && ! config_ok "$sample"; then
        PROBE_TABLE+=("" "$title: not run, leakwatchd rejects the config")
        return 0
    fi
    start_redis
    if ! start_daemon "$sample" "${flags[@]}"; then
        PROBE_TABLE+=("" "$title: leakwatchd did not attach, no counts")
        stop_daemon
        stop_redis
        return 0
    fi
    local mode_line
    mode_line=$(grep -m1 -o 'listening on .*' "$WORK/daemon.log" | sed 's/.*processes watched, //' || true)
    mapfile -t ids < <(daemon_prog_ids)
    declare -A runs=() fired=() before=()
    local rows=()
    for size in $SIZES; do
        for t in $TESTS; do
            before=()
            while read -r n v; do before[$n]=$v; done < <(prog_counts "${ids[@]}")
            run_test "$t" "$size"
            while read -r n v; do
                runs[$t,$size,$n]=$((v - ${before[$n]:-0}))
                if ((runs[$t,$size,$n] > 0)); then fired[$n]=1; fi
            done < <(prog_counts "${ids[@]}")
            rows+=("$t,$size")
            echo "# probe counts ($title) $t -d $size: $RPS rps, redis ${REDIS_US} us/request" >&2
        done
    done
    stop_daemon
    stop_redis
    # Only the programs that ran: the others belong to functions this allocator lacks or the
    # process did not call.
    mapfile -t names < <(printf '%s\n' "${!fired[@]}" | sort)
    PROBE_TABLE+=("" "$title (${mode_line:-?}):" "")
    line="| test | -d |" sep="|---|---:|"
    for n in "${names[@]}"; do line+=" $n |" sep+="---:|"; done
    PROBE_TABLE+=("$line total |" "$sep---:|")
    for r in "${rows[@]}"; do
        t=${r%,*} size=${r#*,} total=0
        line="| $t | $size |"
        for n in "${names[@]}"; do
            total=$((total + runs[$r,$n]))
            line+=" $(awk -v d="${runs[$r,$n]}" -v n="$REQUESTS" 'BEGIN { printf "%.2f", d / n }') |"
        done
        PROBE_TABLE+=("$line $(awk -v d="$total" -v n="$REQUESTS" 'BEGIN { printf "%.2f", d / n }') |")
    done
}

# watch_pass: one pass over every test in the watch tier with kernel.bpf_stats_enabled on: how
# often each of the daemon's programs ran (any type: the watch tier's are tracepoints and
# perf-event programs, which fire for every process on the machine and return at once for those
# not watched) and their run time, per request, against redis-server's own CPU time per request.
# The programs' time is an upper bound of what the watch tier adds to the requests (it includes
# what they cost redis-benchmark and the rest of the machine); the kernel's dispatch to them is
# not in it.
watch_pass() {
    TRACKING=escalate
    local ids t size runs ns which line
    start_redis
    if ! start_daemon; then
        PROBE_TABLE+=("" "watch tier: leakwatchd did not list redis, no figures")
        stop_daemon
        stop_redis
        TRACKING=""
        return 0
    fi
    mapfile -t ids < <(daemon_prog_ids)
    PROBE_TABLE+=("" "watch tier, every program of leakwatchd, per request (kernel.bpf_stats_enabled):" ""
                  "| test | -d | runs | BPF ns | redis CPU ns | BPF / redis CPU | redis page faults | × FAULT_NS ($FAULT_NS) / redis CPU |" "|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in $SIZES; do
        for t in $TESTS; do
            prog_time "$WORK/progs0" "${ids[@]}"
            run_test "$t" "$size"
            prog_time "$WORK/progs1" "${ids[@]}"
            read -r runs ns which <<<"$(prog_delta "$WORK/progs0" "$WORK/progs1")"
            # Redis's own share: its own page faults (the only programs of the tier that run for
            # it; it neither forks nor execs here) at FAULT_NS each.
            line=$(awk -v r="$runs" -v ns="$ns" -v n="$REQUESTS" -v us="$REDIS_US" -v fl="$REDIS_FAULTS" -v fns="$FAULT_NS" 'BEGIN {
                printf "%.4f | %.2f | %.0f | %.4f%% | %.4f | %.4f%%", r / n, ns / n, us * 1000, (us > 0 ? 100 * ns / n / (us * 1000) : 0),
                       fl / n, (us > 0 ? 100 * fl * fns / n / (us * 1000) : 0) }')
            PROBE_TABLE+=("| $t | $size | $line |")
            echo "# watch tier BPF ($t -d $size): $runs runs, $ns ns, redis ${REDIS_US} us/request; by program (name:runs:ns): $which" >&2
        done
    done
    local tier
    tier=$(api_tracking "$REDIS_PID")
    [[ $tier == watch ]] || PROBE_TABLE+=("(redis was '$tier' at the end, not in the watch tier: the figures above are not the watch tier's)")
    stop_daemon
    stop_redis
    TRACKING=""
}

prog_time() {  # prog_time FILE IDS...: "name runs run_time_ns" per program of the given ids, any type
    local out=$1
    shift
    bpftool -j prog show | "$PY" -c 'import json, sys
ids = set(int(x) for x in sys.argv[1:])
for p in json.load(sys.stdin):
    if p["id"] in ids:
        print(p.get("name", "?") + "#" + str(p["id"]), p.get("run_cnt", 0), p.get("run_time_ns", 0))' "$@" >"$out"
}

prog_delta() {  # prog_delta BEFORE AFTER: "runs ns" summed, then "name:runs:ns" of those that ran
    "$PY" -c 'import sys
def load(f):
    return {l.split()[0]: (int(l.split()[1]), int(l.split()[2])) for l in open(f) if l.strip()}
a, b = load(sys.argv[1]), load(sys.argv[2])
d = {k: (v[0] - a.get(k, (0, 0))[0], v[1] - a.get(k, (0, 0))[1]) for k, v in b.items()}
ran = sorted((k for k in d if d[k][0] > 0), key=lambda k: -d[k][1])
print(sum(v[0] for v in d.values()), sum(v[1] for v in d.values()),
      " ".join("%s:%d:%d" % (k.split("#")[0], d[k][0], d[k][1]) for k in ran))' "$1" "$2"
}

PROBE_TABLE=()
if [[ $PROBE_COUNTS == 1 || $PROBE_COUNTS == watch ]]; then
    if [[ $(sysctl -n kernel.bpf_stats_enabled) != 1 ]]; then
        sysctl -q -w kernel.bpf_stats_enabled=1
    fi
    watch_pass
    if [[ $PROBE_COUNTS == 1 ]]; then
        probe_pass classic
        probe_pass default
        first_sample=${SAMPLES%% *}
        [[ -n $first_sample ]] && probe_pass default "$first_sample"
    fi
    restore_stats
fi

# --- report --------------------------------------------------------------------------------
fmt_rps() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }
echo
header="| test | -d | untraced rps |"
rule="|---|---:|---:|"
for c in "${CASES[@]}"; do
    [[ $c == untraced ]] && continue
    header+=" $c rps (ratio) |"
    rule+="---:|"
done
echo "$header"
echo "$rule"
for size in $SIZES; do
    for t in $TESTS; do
        base=$(tr ' ' '\n' <<<"${RPS_OF[untraced,$t,$size]:-}" | grep . | median || true)
        row="| $t | $size | $( [[ -n $base ]] && fmt_rps "$base" || echo n/a ) |"
        for c in "${CASES[@]}"; do
            [[ $c == untraced ]] && continue
            if [[ -n ${SKIP[$c]:-} ]]; then
                row+=" n/a (config rejected) |"
                continue
            fi
            m=$(tr ' ' '\n' <<<"${RPS_OF[$c,$t,$size]:-}" | grep . | median || true)
            if [[ -z $m ]]; then
                row+=" invalid |"
            elif [[ -n $base ]]; then
                row+=" $(fmt_rps "$m") ($(awk -v a="$m" -v b="$base" 'BEGIN { printf "%.2f", a / b }')) |"
            else
                row+=" $(fmt_rps "$m") |"
            fi
        done
        echo "$row"
    done
done
echo
echo "redis-server CPU per request (user + system, µs; median):"
echo
header="| test | -d |" rule="|---|---:|"
for c in "${CASES[@]}"; do
    [[ -n ${SKIP[$c]:-} ]] && continue
    header+=" $c |" rule+="---:|"
done
echo "$header"
echo "$rule"
for size in $SIZES; do
    for t in $TESTS; do
        row="| $t | $size |"
        for c in "${CASES[@]}"; do
            [[ -n ${SKIP[$c]:-} ]] && continue
            m=$(tr ' ' '\n' <<<"${US_OF[$c,$t,$size]:-}" | grep . | median || true)
            row+=" ${m:-invalid} |"
        done
        echo "$row"
    done
done
echo
echo "ratio: the case's rps / untraced rps. others: CPUs the rest of the machine kept busy during a"
echo "test (busy time minus redis-server, redis-benchmark and leakwatchd, over the wall time)."
echo
printf '%s\n' "${NOTES[@]}"
for c in "${CASES[@]}"; do
    [[ -n ${SKIP[$c]:-} ]] && echo "$c: not run, leakwatchd rejects the config: ${SKIP[$c]}"
done
if ((${#INVALID[@]})); then
    echo
    echo "invalid (not used):"
    printf '  %s\n' "${INVALID[@]}"
fi
if ((${#PROBE_TABLE[@]})); then
    echo
    echo "BPF program runs per request (bpf run_cnt / requests, one pass each):"
    printf '%s\n' "${PROBE_TABLE[@]}"
fi
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
