"""Root tests: leakwatchd tracking the user-space allocations of real fixture programs."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

from lwtest import (FIXTURES, LEAKWATCHD, Daemon, Fixture, check, check_nothing_lost, free_port,
                    require_root, run, wait_until, within)

INTERVAL = 1.0
CONFIG = f"""
interval: {int(INTERVAL * 1000)}ms
watch:
  - name: steady
    tracking: full
    match:
      comm: leak_steady
  - name: entry_points
    tracking: full
    match:
      comm: leak_all
  - name: reexec
    tracking: full
    match:
      comm: reexec
  - name: sampled
    tracking: sampled
    match:
      comm: leak_mixed
    sample_bytes: 4KiB
  - name: jemalloc
    tracking: full
    match:
      comm: leak_jemalloc
    allocator:
      library: libjemalloc
"""
LEAK, TICKS, TICK_MS = 65536, 40, 50


def start(cleanup, thing):
    cleanup.append(thing)
    return thing


def wait_attached(daemon, pid, timeout=10):
    return wait_until(lambda: daemon.process(pid), timeout, f"pid {pid} in /api/v1/processes")


def leaked(fixture, field=2):
    """What the fixture said it leaked: {function: int} from its "leak FUNCTION BYTES ..."
    lines (field 2: the bytes)."""
    return {p[1]: int(p[field]) for p in (line.split() for line in fixture.lines)
            if p and p[0] == "leak"}


# Losses that must not happen to a fixture the limits have room for.
USER_LOSSES = ("live_map_full", "stack_map_full", "stack_totals_map_full", "inflight_full",
               "missed_free", "stale_inflight")


def check_attributed(daemon, pid, truths, tolerance, total_tolerance, show=False):
    """Each leaking function (its site) holds what the fixture said it leaked, within
    `tolerance`, and the process the sum of them, within `total_tolerance`. Returns the bytes
    per site."""
    sites = daemon.site_bytes(pid)
    for fn, truth in truths.items():
        got = sites.get(fn, 0)
        if show:
            print(f"{fn}: estimated {got} bytes, truth {truth} ({(got - truth) / truth:+.2%})")
        check(within(got, truth, tolerance),
              f"{fn}: {got} bytes attributed, truth {truth} ({tolerance:.0%}): {sites}")
    total = daemon.process(pid)["outstanding_bytes"]
    check(within(total, sum(truths.values()), total_tolerance),
          f"process outstanding {total}, truth {sum(truths.values())}")
    return sites


def check_steady(daemon, fixture):
    truth = int(fixture.expect("leaked"))
    check(truth == LEAK * TICKS, f"fixture leaked {truth}")
    time.sleep(2 * INTERVAL)
    sites = daemon.site_bytes(fixture.pid)
    leaked = sites.get("leak_record_entry", 0)
    check(within(leaked, truth, 0.10),
          f"leak_record_entry holds {leaked} bytes, truth {truth} (10%): {sites}")
    churn = sites.get("churn_buffers", 0)
    check(churn < 1 << 20, f"churn_buffers holds {churn} bytes (< 1 MiB expected): {sites}")
    metrics = daemon.metrics()
    per_process = [v for n, l, v in metrics
                   if n == "leakwatch_outstanding_bytes" and l.get("pid") == str(fixture.pid)]
    check(len(per_process) == 1, f"one leakwatch_outstanding_bytes series for the pid: {per_process}")
    check(per_process[0] >= truth * 0.9, f"process outstanding {per_process[0]} < truth {truth}")
    stack_series = [l for n, l, v in metrics if n == "leakwatch_stack_outstanding_bytes"
                    and l.get("pid") == str(fixture.pid) and l.get("site") == "leak_record_entry"]
    check(len(stack_series) == 1 and stack_series[0]["watch"] == "steady"
          and stack_series[0]["comm"] == "leak_steady",
          f"stack series for leak_record_entry: {stack_series}")


def test_steady_started_after(cleanup):
    daemon = start(cleanup, Daemon(CONFIG))
    t0 = time.time()
    fixture = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), str(TICK_MS)))
    proc = wait_attached(daemon, fixture.pid)
    latency = proc["attached_at"] - t0
    print(f"attached {latency * 1000:.0f} ms after the fixture was started")
    check(latency < 1.0, f"attached {latency:.3f}s after exec (limit 1s)")
    fixture.go()
    check_steady(daemon, fixture)


def test_steady_started_before(cleanup):
    fixture = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), str(TICK_MS)))
    daemon = start(cleanup, Daemon(CONFIG))
    wait_attached(daemon, fixture.pid)
    fixture.go()
    check_steady(daemon, fixture)


def test_every_entry_point(cleanup):
    daemon = start(cleanup, Daemon(CONFIG))
    fixture = start(cleanup, Fixture("leak_all"))
    wait_attached(daemon, fixture.pid)
    fixture.go()
    fixture.expect("done")
    truths = {}
    for line in fixture.lines:
        parts = line.split()
        if parts[0] == "leak":
            truths[parts[1]] = int(parts[2])
        if parts[0] == "big_mmapped":
            check(parts[1] == "4", f"glibc served {parts[1]}/4 big blocks with mmap")
    check(len(truths) == 14, f"fixture reported {len(truths)} leaks: {truths}")
    time.sleep(2 * INTERVAL)
    sites = check_attributed(daemon, fixture.pid, truths, 0.10, 0.01)
    # The balanced calls and the allocator's own mmaps leave nothing anywhere else.
    extra = {s: b for s, b in sites.items() if s not in truths and b != 0}
    check(sum(extra.values()) < 64 * 1024, f"bytes outside the leaking functions: {extra}")
    # Every frame of the leak_malloc stack is symbolized, with the caller of malloc in it.
    # (With unwind: dwarf, allocations made while the first snapshot was unwound keep a
    # shorter stack of their own: the whole one is the longest.)
    stack = max((s for s in daemon.stacks(fixture.pid) if s["site"] == "leak_malloc"),
                key=lambda s: len(s["frames"]))
    symbols = [f["symbol"] for f in stack["frames"]]
    check(symbols[:3] == ["malloc", "leak_malloc", "main"], f"leak_malloc frames: {symbols}")
    check(stack["frames"][1]["module"].endswith("/leak_all"), f"module: {stack['frames'][1]}")
    check_nothing_lost(daemon, USER_LOSSES + ("munmap_range_truncated",))
    # promtool's own linter on the real exposition.
    text = daemon.get("/metrics")
    promtool = shutil.which("promtool")
    check(promtool, "promtool is missing: install the prometheus package (scripts/deps.sh)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True)
    check(r.returncode == 0, f"promtool check metrics: {r.stdout}{r.stderr}")


def test_sampling_estimates(cleanup):
    """Byte-based sampling (sample_bytes: 4KiB) on mixed sizes: the weighted estimates are
    within 10% of what the fixture leaked, per leaking function and per process, while only a
    fraction of the allocations is recorded; churned blocks net to exactly zero. With this mean
    and these sizes one standard deviation of the estimate is about 1.6% (leak_small) and
    0.1% (leak_mixed_sizes) of the truth, so 10% is more than six of them."""
    daemon = start(cleanup, Daemon(CONFIG))
    fixture = start(cleanup, Fixture("leak_mixed"))
    wait_attached(daemon, fixture.pid)
    before = map_entries(daemon).get("live", 0)
    fixture.go()
    fixture.expect("done", timeout=120)
    truths = leaked(fixture)
    counts = leaked(fixture, field=3)
    check(set(truths) == {"leak_small", "leak_mixed_sizes"}, f"fixture printed {fixture.lines}")
    time.sleep(2 * INTERVAL)
    sites = check_attributed(daemon, fixture.pid, truths, 0.10, 0.10, show=True)
    check(sites.get("churn_mixed", 0) == 0,
          f"churn_mixed freed everything, yet holds {sites.get('churn_mixed')}: {sites}")
    records = map_entries(daemon).get("live", 0) - before
    allocations = sum(counts.values())
    print(f"{records} live records stand for {allocations} leaked allocations")
    check(0 < records < allocations * 0.2,
          f"{records} live records for {allocations} allocations: not sampled?")
    check_nothing_lost(daemon, USER_LOSSES)


def test_jemalloc_api(cleanup):
    """jemalloc's own API (mallocx, rallocx, dallocx, sdallocx) and its C++ operators (new,
    sized delete) are tracked where the allocator library defines them: each leak exactly, and
    blocks freed with sdallocx, dallocx or sized delete leave nothing."""
    daemon = start(cleanup, Daemon(CONFIG))
    fixture = start(cleanup, Fixture("leak_jemalloc"))
    wait_attached(daemon, fixture.pid)
    fixture.go()
    fixture.expect("done")
    truths = leaked(fixture)
    check(len(truths) == 3, f"fixture printed {fixture.lines}")
    time.sleep(2 * INTERVAL)
    sites = check_attributed(daemon, fixture.pid, truths, 0.01, 0.01)
    check(sites.get("balanced_pairs", 0) == 0,
          f"balanced_pairs freed everything, yet holds {sites.get('balanced_pairs')}: {sites}")


def map_entries(daemon):
    return {l["map"]: v for n, l, v in daemon.metrics() if n == "leakwatch_bpf_map_entries"}


def test_exit_removes_series(cleanup):
    daemon = start(cleanup, Daemon(CONFIG))
    baseline = map_entries(daemon)  # other matching processes may be running
    fixture = start(cleanup, Fixture("leak_steady", str(LEAK), "5", "10"))
    wait_attached(daemon, fixture.pid)
    fixture.go()
    fixture.expect("leaked")
    wait_until(lambda: any(l.get("pid") == str(fixture.pid) for _, l, _ in daemon.metrics()),
               5, "series of the fixture")
    fixture.stop()
    t0 = time.monotonic()
    wait_until(lambda: not any(l.get("pid") == str(fixture.pid) for _, l, _ in daemon.metrics()),
               2 * INTERVAL + 0.5, "the fixture's series to leave /metrics")
    print(f"series gone {time.monotonic() - t0:.2f}s after exit")
    check("stopped watching pid %d" % fixture.pid in daemon.log_text(), "detach not logged")
    # Its BPF state went too: the live-allocation map holds nothing of it.
    # Read the kernel's maps directly (every leakwatch instance's): nothing keyed by the pid.
    for name in ("live", "stacks", "stack_totals", "procs", "watched"):
        dump = json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "name", name],
                                         capture_output=True, text=True, check=True).stdout)
        maps = dump if dump and "elements" in dump[0] else [{"elements": dump}]
        for m in maps:
            for e in m["elements"]:
                key = e.get("formatted", {}).get("key")
                tgid = key["tgid"] if isinstance(key, dict) else key
                check(tgid != fixture.pid, f"BPF map {name} still holds {e.get('formatted')}")
    entries = map_entries(daemon)
    for m in ("processes", "stack_totals", "stacks"):
        check(entries[m] == baseline[m], f"{m} map holds {entries[m]} entries, "
              f"{baseline[m]} before the fixture")


def test_reexec_never_mixes(cleanup):
    daemon = start(cleanup, Daemon(CONFIG))
    d = tempfile.mkdtemp(prefix="leakwatch-reexec-")
    cleanup.append(type("Dir", (), {"stop": lambda self: shutil.rmtree(d)})())
    fixture = start(cleanup, Fixture("reexec", env={"FIXTURE_GO2": f"{d}/go2",
                                                     "FIXTURE_GO3": f"{d}/go3"}))
    wait_attached(daemon, fixture.pid)
    fixture.go()
    before = int(fixture.expect("leaked_before"))
    time.sleep(2 * INTERVAL)
    sites = daemon.site_bytes(fixture.pid)
    check(within(sites.get("leak_before_exec", 0), before, 0.10), f"before exec: {sites}")
    open(f"{d}/go2", "w").close()
    check(int(fixture.expect("pid_after")) == fixture.pid, "exec kept the pid")
    proc = wait_until(lambda: (p := daemon.process(fixture.pid)) and p["outstanding_bytes"] == 0
                      and p, 5, "the re-executed image attached with fresh totals")
    t_exec = time.time()
    open(f"{d}/go3", "w").close()
    after = int(fixture.expect("leaked_after"))
    time.sleep(2 * INTERVAL)
    sites = daemon.site_bytes(fixture.pid)
    check("leak_before_exec" not in sites, f"the old image's stacks are still there: {sites}")
    check(within(sites.get("leak_after_exec", 0), after, 0.10), f"after exec: {sites}")
    total = daemon.process(fixture.pid)["outstanding_bytes"]
    check(total < before, f"outstanding {total} still includes the old image ({before})")
    check(proc["attached_at"] <= t_exec, "attached after exec")


def test_container_root(cleanup):
    """A process in its own root (chroot, as in a container) is probed through
    /proc/PID/root: its own copy of libc, not the daemon's."""
    root = tempfile.mkdtemp(prefix="leakwatch-root-")
    cleanup.append(type("Dir", (), {"stop": lambda self: shutil.rmtree(root)})())
    binary = os.path.join(FIXTURES, "leak_steady")
    libs = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = [p for p in (l.split("=>")[-1].split("(")[0].strip() for l in libs.splitlines())
             if p.startswith("/")]
    for p in paths + [binary]:
        dest = root + (p if p != binary else "/leak_steady")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(os.path.realpath(p), dest)  # a copy: another inode than the host's
    daemon = start(cleanup, Daemon(CONFIG))
    fixture = start(cleanup, Fixture("/leak_steady", str(LEAK), str(TICKS), str(TICK_MS),
                                     prefix=("chroot", root)))
    wait_attached(daemon, fixture.pid)
    fixture.go_file = None
    # the go file is looked up inside the chroot
    os.makedirs(root + fixture.dir, exist_ok=True)
    open(root + fixture.dir + "/go", "w").close()
    check_steady(daemon, fixture)
    stack = next(s for s in daemon.stacks(fixture.pid) if s["site"] == "leak_record_entry")
    libc = stack["frames"][0]
    check(libc["symbol"] == "malloc", f"frame 0: {libc}")


def test_pid_namespace(cleanup):
    """leakwatchd in a pid namespace of its own (as in a container) with the process it
    watches: BPF must report the namespace's pids, which the daemon reads in /proc."""
    d = tempfile.mkdtemp(prefix="leakwatch-pidns-")
    cleanup.append(type("Dir", (), {"stop": lambda self: shutil.rmtree(d)})())
    port = free_port()
    with open(f"{d}/leakwatch.yaml", "w") as f:
        f.write(CONFIG)
    binary = os.path.join(FIXTURES, "leak_steady")
    script = (f"FIXTURE_GO={d}/go {binary} {LEAK} {TICKS} {TICK_MS} > {d}/fixture.out & "
              f"exec {LEAKWATCHD} --config {d}/leakwatch.yaml "
              f"--web.listen-address 127.0.0.1:{port} > {d}/daemon.log 2>&1")
    ns = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script])
    cleanup.append(type("Ns", (), {"stop": lambda self: (ns.kill(), ns.wait())})())

    def api(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def fixture_line(key):
        try:
            for line in open(f"{d}/fixture.out"):
                if line.startswith(key + " "):
                    return line.split()[1]
        except FileNotFoundError:
            pass
        return None

    pid = int(wait_until(lambda: fixture_line("pid"), 10, "the fixture's pid"))
    check(pid < 100, f"pid {pid} is not a pid of the new namespace")

    def attached():
        try:
            return any(p["pid"] == pid for p in api("/api/v1/processes")["processes"])
        except OSError:
            return False

    wait_until(attached, 20, f"pid {pid} (in the namespace) attached")
    open(f"{d}/go", "w").close()
    truth = int(wait_until(lambda: fixture_line("leaked"), 30, "the fixture's leak"))
    time.sleep(2 * INTERVAL)
    stacks = api(f"/api/v1/stacks?pid={pid}&top=100")["stacks"]
    leaked = sum(s["outstanding_bytes"] for s in stacks if s["site"] == "leak_record_entry")
    check(within(leaked, truth, 0.10), f"leak_record_entry holds {leaked}, truth {truth}: "
          + open(f"{d}/daemon.log").read()[-2000:])


if __name__ == "__main__":
    require_root()
    run({
        "steady_started_after": test_steady_started_after,
        "steady_started_before": test_steady_started_before,
        "every_entry_point": test_every_entry_point,
        "exit_removes_series": test_exit_removes_series,
        "reexec_never_mixes": test_reexec_never_mixes,
        "container_root": test_container_root,
        "pid_namespace": test_pid_namespace,
        "sampling_estimates": test_sampling_estimates,
        "jemalloc_api": test_jemalloc_api,
    })
