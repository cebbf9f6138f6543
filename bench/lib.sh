# Sourced by the bench scripts: a work directory, and on exit every background job of the
# calling shell stopped and the directory removed. A job that has been waited for leaves the
# job table, so only live children are signalled (never a reused pid).
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
    rm -rf "$WORK"
}
