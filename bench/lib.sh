# Sourced by the bench scripts: a work directory, and on exit every background job of the
# calling shell stopped and the directory removed. A job that has been waited for leaves the
# job table, so only live children are signalled (never a reused pid). A script may set
# BENCH_CLEANUP_HOOK to a command run between the two (e.g. to unmount what it mounted).
# Usage: bench_workdir PREFIX   (sets WORK)
bench_workdir() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local pids
    pids=$(jobs -p)
    if [[ -n $pids ]]; then
        # shellcheck disable=SC2086  # one pid a word
        kill -TERM $pids 2>/dev/null || true
        # shellcheck disable=SC2086
        wait $pids 2>/dev/null || true
    fi
    ${BENCH_CLEANUP_HOOK:-:}
    rm -rf "$WORK"
}

# Waits up to 30 s for leakwatchd (pid $DAEMON_PID) to answer on 127.0.0.1:$PORT; on failure
# prints its log ($WORK/daemon.log) and exits. Usage: wait_for_daemon SCRIPT_NAME
wait_for_daemon() {
    local i
    for ((i = 0; i < 300; i++)); do
        curl -sf --max-time 1 "http://127.0.0.1:$PORT/api/v1/processes" >/dev/null && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! curl -sf --max-time 1 "http://127.0.0.1:$PORT/api/v1/processes" >/dev/null; then
        echo "$1: leakwatchd did not come up; its log:" >&2
        cat "$WORK/daemon.log" >&2
        exit 1
    fi
}

# Exits unless run as root with every tool given on the PATH. Usage: bench_require NAME TOOL...
bench_require() {
    local name=$1 tool
    shift
    if [[ $(id -u) -ne 0 ]]; then
        echo "$name: must run as root (uprobes and BPF)" >&2
        exit 1
    fi
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$name: needs $tool" >&2; exit 1; }
    done
}

# Builds TARGETs in BUILD (configured with the benchmarks first, if it is not yet) unless
# SKIP_BUILD=1. Usage: bench_build BUILD TARGET...
bench_build() {
    local build=$1
    shift
    [[ ${SKIP_BUILD:-0} == 1 ]] && return 0
    if [[ ! -f $build/CMakeCache.txt ]]; then
        cmake -S "$ROOT" -B "$build" -DLEAKWATCH_BENCH=ON >/dev/null
    fi
    cmake --build "$build" --target "$@" -j"$(nproc)" >/dev/null
}
