#!/usr/bin/python3
"""Where the BPF time of one malloc/free pair goes (docs/performance.md, "Full tracking: the
BPF work per pair"). A benchmark, not a test: it prints figures. Run as root:

    bench/bpf_time.py [BUILD]        (BUILD: the build directory, default ./build)

For each case (the rule's tracking and unwind), it starts bench/alloc_bench in fixed mode
(malloc(64)/free in one thread, PAIRS pairs, default 2000000), lets leakwatchd attach to it by
pid, turns on the kernel's BPF statistics (sysctl kernel.bpf_stats_enabled, restored after),
runs the loop and reads each of the daemon's BPF programs' run_cnt and run_time_ns (bpftool)
before and after: the time the BPF programs themselves took, without the trap of the uprobe
that runs them. Environment: PAIRS, CASES (default "full/frame-pointer full/auto full/dwarf
sampled/auto").

A case "python/N" runs Debian's python3.11 instead, allocating and freeing a 64 KiB bytearray
PAIRS times four Python calls deep (PyByteArray_Resize -> realloc, then free), watched with
`unwind: auto` and python.max_frames N (0: no Python frames read): the cost of the Python frames.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
PAIRS = int(os.environ.get("PAIRS", "2000000"))
CASES = os.environ.get("CASES", "full/frame-pointer full/auto full/dwarf sampled/auto").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prog_stats(pid):
    """run_time_ns and run_cnt of every BPF program the process holds, by name."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            pass
    out = {}
    for i in ids:
        j = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(i)],
                                      capture_output=True, text=True, check=True).stdout)
        out[j.get("name", str(i))] = (j.get("run_time_ns", 0), j.get("run_cnt", 0))
    return out


# The Python case's loop: one realloc (the bytearray's buffer) and one free per pair.
PYTHON_LOOP = """
import os, sys, time
def leaf():
    b = bytearray(65536)
    del b
def mid():
    leaf()
def top(n):
    for _ in range(n):
        mid()
go, n = sys.argv[1], int(sys.argv[2])
while not os.path.exists(go):
    time.sleep(0.01)
t = time.perf_counter_ns()
top(n)
print("ns_per_pair=%d" % ((time.perf_counter_ns() - t) // n), flush=True)
"""


def run_case(case, work):
    tracking, unwind = case.split("/")
    go = os.path.join(work, "go")
    python = ""
    if tracking == "python":
        python = f"python:\n  max_frames: {int(unwind)}\n"
        tracking, unwind = "full", "auto"
        bench = subprocess.Popen(["/usr/bin/python3.11", "-c", PYTHON_LOOP, go, str(PAIRS)],
                                 stdout=subprocess.PIPE, text=True)
    else:
        bench = subprocess.Popen([f"{BUILD}/bin/alloc_bench", "fixed", str(PAIRS)],
                                 env=dict(os.environ, BENCH_GO=go), stdout=subprocess.PIPE,
                                 text=True)
    port = free_port()
    cfg = os.path.join(work, "leakwatch.yaml")
    with open(cfg, "w") as f:
        f.write(f'interval: 1s\n{python}watch:\n  - name: bench\n    match:\n'
                f'      pid: {bench.pid}\n    tracking: {tracking}\n    unwind: {unwind}\n')
    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen([f"{BUILD}/bin/leakwatchd", "--config", cfg,
                               "--web.listen-address", f"127.0.0.1:{port}"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                procs = json.load(urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/processes", timeout=2))["processes"]
                if any(p["pid"] == bench.pid for p in procs):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit(f"bpf_time.py: leakwatchd did not attach to {bench.pid}")
        before = prog_stats(daemon.pid)
        open(go, "w").close()
        out = bench.communicate(timeout=600)[0]
        after = prog_stats(daemon.pid)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        daemon.terminate()
        daemon.wait()
        os.unlink(go) if os.path.exists(go) else None
    total = 0
    lines = []
    for name, (t, n) in sorted(after.items()):
        dt, dn = t - before.get(name, (0, 0))[0], n - before.get(name, (0, 0))[1]
        if dn:
            lines.append(f"    {name}: {dn} runs, {dt / dn:.0f} ns/run, {dt / PAIRS:.0f} ns/pair")
            total += dt
    wall = out.split("ns_per_pair=")[1].split()[0] if "ns_per_pair=" in out else "?"
    print(f"{case}: BPF {total / PAIRS:.0f} ns per malloc/free pair (bench {wall} ns/pair wall)")
    print("\n".join(lines))


def main():
    if os.geteuid() != 0:
        raise SystemExit("bpf_time.py: must run as root")
    print(f"# BPF time per pair, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{PAIRS} pairs, kernel {os.uname().release}, load {open('/proc/loadavg').read()[:14]}")
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_before = f.read().strip()
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")
    try:
        with tempfile.TemporaryDirectory(prefix="leakwatch-bpftime-") as work:
            for case in CASES:
                run_case(case, work)
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(stats_before)


if __name__ == "__main__":
    main()
