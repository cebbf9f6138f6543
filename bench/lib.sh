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
