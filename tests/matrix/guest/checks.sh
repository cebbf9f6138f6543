# Runs in a matrix guest (busybox sh): leakwatchd and the fixture programs from the host's root
# (chroot /host), driven over HTTP on 127.0.0.1; what it sees goes to /out, where
# tests/matrix/run_matrix.py checks it after the guest has powered off. Variables from
# /matrix.env: LEAKWATCHD, FIXTURES (paths inside the host root).
. /matrix.env
PORT=10071
URL=http://127.0.0.1:$PORT
t() { cut -d' ' -f1 /proc/uptime; }
say() { echo "$(t) $*"; }
mark() { echo "$1 $(t)" >>/out/times; }
# (busybox 1.35's wget -T crashes: timeout(1) bounds it instead)
get() { timeout 60 wget -q -O "/out/$2" "$URL$1"; }
# wait_line FILE KEY SECONDS: until FILE has a line starting with KEY
wait_line() {
    n=0
    while ! grep -q "^$2" "$1" 2>/dev/null; do
        n=$((n + 1))
        [ $n -gt $(($3 * 5)) ] && { say "no '$2' in $1 after $3 s"; return 1; }
        sleep 0.2
    done
    grep -m1 "^$2" "$1" | cut -d' ' -f2
}

# serving PID FILE PATH SECONDS WHAT: until leakwatchd (PID) answers PATH, its answer in
# /out/FILE; gives up when it has exited or after SECONDS, saying so (WHAT names it).
serving() {
    n=0
    until timeout 20 wget -q -O "/out/$2" "$URL$3" 2>/dev/null; do
        kill -0 "$1" 2>/dev/null || { say "$5 exited"; return 1; }
        n=$((n + 1))
        [ $n -gt $(($4 * 2)) ] && { say "$5 serves no $3 after $4 s"; return 1; }
        sleep 0.5
    done
}

uname -r >/out/uname
getconf PAGESIZE >/out/pagesize 2>/dev/null || echo 4096 >/out/pagesize
ls /sys/kernel/btf/vmlinux >/out/btf 2>&1
# x86 uprobes: which instruction classes the kernel emulates instead of single-stepping them
# out of line (its *_xol_ops tables, in kallsyms as read-only data)
grep -oE ' (branch|push)_xol_ops$' /proc/kallsyms | tr -d ' ' | sort -u | tr '\n' ' ' >/out/xol_ops
mark boot
# top_stacks: /metrics exports the largest kernel stacks only (20 by default); the module's
# smallest (its percpu leak, 19 KB) can fall out of them on a busy guest kernel (its /metrics
# series was missing on 7.2 in some runs), and the check of its series is not about that bound.
cat >/host/run/matrix/leakwatch.yaml <<YAML
interval: 1000ms
limits:
  top_stacks: 200
kernel:
  enabled: true
  tracking: full
watch:
  - name: steady
    tracking: full
    match:
      comm: leak_steady
  - name: nofp
    tracking: full
    match:
      comm: leak_nofp
YAML
chroot /host "$LEAKWATCHD" --config /run/matrix/leakwatch.yaml --web.listen-address 127.0.0.1:$PORT \
    --log-level debug >/out/leakwatchd.log 2>&1 &
LW=$!
if ! serving "$LW" metrics_start.txt /metrics 300 leakwatchd; then
    kill -0 "$LW" 2>/dev/null || echo exited >/out/daemon_failed
    exit 1
fi
mark daemon_up
say "leakwatchd up"

# user_leak LABEL PROGRAM ARGS...: runs a fixture once the daemon has attached to it, until it
# has leaked; leaves /out/LABEL.out, LABEL_stacks.json and metrics_LABEL.txt, and the marks
# LABEL_attached and LABEL_done.
user_leak() {
    label=$1
    prog=$2
    shift 2
    FIXTURE_GO=/run/matrix/go_$label chroot /host "$FIXTURES/$prog" "$@" >"/out/$label.out" 2>&1 &
    pid=$(wait_line "/out/$label.out" pid 60)
    n=0
    until get /api/v1/processes processes.json && grep -q "\"pid\": *${pid}[,}]" /out/processes.json; do
        n=$((n + 1))
        [ $n -gt 120 ] && { say "$prog ($pid) never attached"; break; }
        sleep 0.5
    done
    mark "${label}_attached"
    touch "/host/run/matrix/go_$label"
    wait_line "/out/$label.out" leaked 180 >/dev/null
    sleep 3
    get "/api/v1/stacks?pid=$pid&top=1000" "${label}_stacks.json"
    get /metrics "metrics_$label.txt"
    mark "${label}_done"
    kill "$pid"
    wait "$pid" 2>/dev/null
}

# User space: leak_steady leaks 64 KiB x 40 from leak_record_entry().
user_leak steady leak_steady 65536 40 50
say "user-space leak measured"

# The default unwinding (unwind: auto; x86_64: unwind rules where frame pointers are not kept;
# aarch64: the kernel's frame-record walk): leak_nofp, built -O2 without frame pointers, leaks
# 1000 B x 4000 from leak_records <- middle_layer <- outer_layer <- main.
if [ -x "/host$FIXTURES/leak_nofp" ]; then
    user_leak nofp leak_nofp 1000 4000
    say "default unwinding measured"
fi

# Kernel: kleak_pipes holds 300 pipes with 16 KiB each, then exits and frees them.
sleep 3
get "/api/v1/kernel?top=1000" kernel_base.json
FIXTURE_GO=/run/matrix/go_pipes chroot /host "$FIXTURES/kleak_pipes" 300 16384 >/out/pipes.out 2>&1 &
PIPES=$(wait_line /out/pipes.out pid 60)
touch /host/run/matrix/go_pipes
wait_line /out/pipes.out pipe_pages 120 >/dev/null
sleep 4
get "/api/v1/kernel?top=1000" kernel_held.json
get /metrics metrics_held.txt
echo "$PIPES" >/out/pipes.pid
mark pipes_held
kill -9 "$PIPES"
wait "$PIPES" 2>/dev/null  # reaped: no zombie left in /proc
sleep 4
get "/api/v1/kernel?top=1000" kernel_freed.json
mark pipes_freed
say "kernel leak measured"

# module_done LABEL: waits until lw_kleak has made every allocation and free (at most 120 s),
# then leaves what it reports in /out/LABEL_truth ("leaked_<kind>_bytes N" lines, done Y;
# kmod.leaked reads it) and when its ticks ran in /out/LABEL_ticks. Polled once a second: each
# poll forks, and every allocation the shell makes runs the kmem programs (see
# kernel_program_missed in docs/compatibility.md).
module_done() {
    n=0
    until [ "$(cat /sys/module/lw_kleak/parameters/done 2>/dev/null)" = Y ]; do
        n=$((n + 1))
        [ $n -gt 120 ] && { say "lw_kleak ($1) not done after 120 s"; break; }
        sleep 1
    done
    for f in /sys/module/lw_kleak/parameters/*; do
        [ "${f##*/}" = ticks ] || echo "${f##*/} $(cat "$f")"
    done >"/out/$1_truth"
    cat /sys/module/lw_kleak/parameters/ticks >"/out/$1_ticks"
}

# kmod_leak LABEL [PARAM=VALUE...]: loads the test module lw_kleak (tests/kmod) with those
# parameters, waits until it has made every allocation and free, and leaves what it reports it
# leaked in /out/LABEL_truth ("leaked_<kind>_bytes N" lines, done Y; kmod.leaked reads it).
kmod_leak() {
    label=$1
    shift
    # The kernel's count of skipped kmem program runs before it, for the check's figure.
    get /metrics "metrics_${label}_before.txt"
    insmod /kmod/lw_kleak.ko "$@" >"/out/${label}_insmod.log" 2>&1 || { say "insmod failed"; return 1; }
    mark "${label}_loaded"
    module_done "$label"
    # For a look at how its frames were named: its symbols, and where its sections start.
    grep '\[lw_kleak\]' /proc/kallsyms >"/out/${label}_kallsyms"
    for f in /sys/module/lw_kleak/sections/.[!.]* /sys/module/lw_kleak/sections/*; do
        [ -f "$f" ] && echo "$(cat "$f") ${f##*/}"
    done | sort >"/out/${label}_sections"
    mark "${label}_done"
}

# Kernel module: loaded after leakwatchd started (its symbols are read again), it leaks from
# its own functions through kmalloc, its own kmem_cache, alloc_pages and alloc_percpu, 400 of
# each, 50 a tick, and frees every 4th object again; after rmmod its stacks must keep their
# bytes and names.
if [ -f /kmod/lw_kleak.ko ]; then
    if kmod_leak kmod count=400 per_tick=50 interval_ms=20 free_every=4; then
        # leakwatchd names the module's frames once it has read the symbols again, at most once
        # per 10 s: wait until every leaking function is a site, at most 20 s.
        sleep 4
        n=0
        while get "/api/v1/kernel?top=1000" kmod_held.json; do
            named=0
            for site in lwk_leak_kmalloc lwk_leak_cache lwk_leak_pages lwk_leak_percpu; do
                grep -q "\"site\": *\"$site\"" /out/kmod_held.json && named=$((named + 1))
            done
            n=$((n + 1))
            [ $named = 4 ] || [ $n -gt 16 ] && break
            sleep 1
        done
        get /metrics metrics_kmod.txt
        rmmod lw_kleak >/out/kmod_rmmod.log 2>&1
        echo $? >/out/kmod_rmmod
        sleep 4
        get "/api/v1/kernel?top=1000" kmod_unloaded.json
        get /metrics metrics_kmod_unloaded.txt
        mark kmod_unloaded
    fi
    say "kernel module leak measured"
fi

kill -TERM "$LW"
n=0
while kill -0 "$LW" 2>/dev/null; do
    n=$((n + 1))
    [ $n -gt 100 ] && { say "leakwatchd did not stop on TERM in 20 s"; kill -9 $LW; break; }
    sleep 0.2
done
wait "$LW"
echo $? >/out/daemon_exit
mark stopped

# Kernel module, found from the kernel's own counters (kernel.tracking: escalate, the default):
# leakwatchd runs first with no allocation tracepoint attached and a 10 s detection window; the
# module is loaded again (its cache under another name: the first one outlives its rmmod) and
# leaks steadily, 8 objects of each kind every 250 ms (6 kept; pages of order 4, so that its
# page leak, 1.5 MB/s, stands out of the noise of the page estimate). Once the four counters it
# grows (its cache, kmalloc-1k, page, percpu) are escalated, or 45 s have passed (the page
# estimate may take longer, or never be escalated: docs/compatibility.md), it leaks 8 s more and
# is stopped; leakwatchd's answers are taken 1.5 s later (3 samples). Every answer in which the
# escalated counters changed is kept (esc_poll_N.json), with /proc/meminfo at each poll.
ESC_COUNTERS="lw_kleak_esc kmalloc-1k page percpu"
if [ -f /kmod/lw_kleak.ko ] && [ "$(cat /out/kmod_rmmod 2>/dev/null)" = 0 ]; then
    cat >/host/run/matrix/escalate.yaml <<YAML
interval: 500ms
kernel:
  enabled: true
leak_detection:
  window: 10s
  min_growth: 32KiB
escalation:
  max_processes: 8
watch: []
YAML
    chroot /host "$LEAKWATCHD" --config /run/matrix/escalate.yaml \
        --web.listen-address 127.0.0.1:$PORT --log-level debug >/out/esc_leakwatchd.log 2>&1 &
    LW=$!
    serving "$LW" esc_base.json "/api/v1/kernel?top=1000" 300 "leakwatchd (escalate)"
    mark esc_daemon_up
    sleep 2  # a few samples of the counters before the leak
    get "/api/v1/kernel?top=1000" esc_base.json
    get /metrics metrics_esc_before.txt
    cat /proc/slabinfo >/out/esc_slabinfo_before
    { echo "at $(t)"; cat /proc/meminfo; } >/out/esc_meminfo
    insmod /kmod/lw_kleak.ko count=2400 per_tick=8 interval_ms=250 free_every=4 \
        percpu_size=1024 page_order=4 cache_name=lw_kleak_esc >/out/esc_insmod.log 2>&1 && {
        mark esc_loaded
        seen=""
        n=0
        until=$(($(cut -d. -f1 /proc/uptime) + 45))
        while [ "$(cut -d. -f1 /proc/uptime)" -lt $until ]; do
            n=$((n + 1))
            sleep 0.5
            get "/api/v1/kernel?top=1" esc_poll.json || continue
            { echo "at $(t)"; cat /proc/meminfo; } >>/out/esc_meminfo
            now=$(tr -d ' \n' </out/esc_poll.json | grep -o '"counter":"[^"]*","escalated":true' |
                cut -d'"' -f4 | sort | tr '\n' ' ')
            if [ "$now" != "$seen" ]; then
                cp /out/esc_poll.json "/out/esc_poll_$n.json"
                say "escalated: $now"
                seen=$now
            fi
            all=1
            for c in $ESC_COUNTERS; do
                case " $now" in *" $c "*) ;; *) all=0 ;; esac
            done
            [ $all = 1 ] && break
        done
        mark esc_escalated
        sleep 8
        echo 1 >/sys/module/lw_kleak/parameters/stop
        module_done esc
        mark esc_stopped
        sleep 1.5
        get "/api/v1/kernel?top=1000" esc_held.json
        get /metrics metrics_esc.txt
        cat /proc/slabinfo >/out/esc_slabinfo_after
    }
    kill -TERM "$LW"
    wait "$LW"
    mark esc_done
    say "kernel module leak found by escalation measured"
fi

# A kernel without BTF: /sys/kernel/btf hidden, leakwatchd must refuse to start and say why;
# then the same BTF as a file where libbpf looks for one (/boot/vmlinux-RELEASE) lets it run.
printf 'interval: 1000ms\nkernel:\n  enabled: true\n  tracking: full\n' >/host/run/matrix/nobtf.yaml
cp /sys/kernel/btf/vmlinux /host/run/matrix/vmlinux.btf
mount -t tmpfs tmpfs /host/sys/kernel/btf
timeout 120 chroot /host "$LEAKWATCHD" --config /run/matrix/nobtf.yaml \
    --web.listen-address 127.0.0.1:$PORT >/out/nobtf.log 2>&1
echo $? >/out/nobtf_exit
mount -t tmpfs tmpfs /host/boot
cp /host/run/matrix/vmlinux.btf "/host/boot/vmlinux-$(uname -r)"
chroot /host "$LEAKWATCHD" --config /run/matrix/nobtf.yaml --web.listen-address 127.0.0.1:$PORT \
    >/out/extbtf.log 2>&1 &
LW=$!
serving "$LW" metrics_extbtf.txt /metrics 120 "leakwatchd with /boot/vmlinux-$(uname -r)"
sleep 3  # a sample or two of the kernel allocations
get /metrics metrics_extbtf.txt
kill -TERM "$LW" 2>/dev/null
wait "$LW"
umount /host/boot /host/sys/kernel/btf
mark finished
