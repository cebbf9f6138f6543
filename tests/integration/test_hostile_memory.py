"""Root tests: a watched process whose memory blocks whoever reads it (issue 15).

A CPython process (Debian's python3.11) points the name of the code object of the function it
allocates from at a page of a file mapped from a FUSE file system that never answers reads
(tests/harness/stall_fs.py, tests/progs/python/hostile_code.py): reading that name through
/proc/PID/mem waits for as long as the file system lives. leakwatchd names Python frames from
their code objects; the read must hold up a loader thread, never the main loop. A second,
steadily leaking C fixture is watched beside it: its bytes must keep growing snapshot after
snapshot, and the samples must keep coming, while the hostile process is watched and after
its read is refused as slow (counted in leakwatch_files_refused_total{reason="slow"}).

In the second test the hostile process then calls mmap, which waits behind the blocked read for
its memory map's lock, and so makes every later reader of that lock (e.g. of its /proc/PID/maps)
wait too, while it keeps allocating from new code: the daemon's reads of its maps (to unwind
and to name its stacks) must not hold up the main loop either."""
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import stall_fs  # noqa: E402

from lwtest import (FIXTURES, Daemon, Fixture, check, metric, require_root, run, start,  # noqa: E402
                    wait_until)
from test_hostile import Cleanup, scratch  # noqa: E402

INTERVAL = 1.0
PROGS = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "progs"))
PYTHON = "/usr/bin/python3.11"
LEAK, TICK_MS = 4096, 50
WATCHED_FOR = 20.0  # seconds: past the symbolizer's `slow` (10 s), when the read is refused


def last_sample(daemon):
    return [v for n, l, v in daemon.metrics() if n == "leakwatch_last_sample_timestamp_seconds"][0]


def start_fixtures(cleanup, *hostile_args):
    """The stalling file system, the hostile process (its extra arguments), the steady leak and a
    daemon watching both, the fixtures started (the name pointed away)."""
    require_root()
    check(os.access(PYTHON, os.X_OK), f"{PYTHON} is missing (scripts/deps.sh installs python3)")
    d = scratch(cleanup)
    mnt = os.path.join(d, "mnt")
    os.mkdir(mnt)
    fs = start(cleanup, stall_fs.StallFs(mnt))
    hostile = start(cleanup, Fixture(os.path.join(PROGS, "python", "hostile_code.py"), fs.path,
                                     str(LEAK), str(TICK_MS), *hostile_args, prefix=(PYTHON,)))
    steady = start(cleanup, Fixture("leak_steady", str(LEAK), "1000000", str(TICK_MS)))
    daemon = start(cleanup, Daemon(
        f"interval: {int(INTERVAL * 1000)}ms\nwatch:\n"
        f"  - name: hostile\n    tracking: full\n    unwind: dwarf\n    match:\n"
        f"      pid: {hostile.pid}\n"
        f"  - name: steady\n    tracking: full\n    match:\n      pid: {steady.pid}\n"))
    # Stopped first: aborting the file system wakes every reader still waiting on it.
    start(cleanup, Cleanup(fs.stop))
    wait_until(lambda: daemon.process(hostile.pid) and daemon.process(steady.pid), 20,
               "both fixtures to be watched")
    steady.go()
    hostile.go()
    hostile.expect("pointed")
    return fs, hostile, steady, daemon


def watch_steady(daemon, steady, fs):
    """Each second for WATCHED_FOR: the samples keep coming (the loop runs) and the steady leak
    keeps growing, by what it leaks."""
    t0 = time.monotonic()
    growth, worst_age, last_bytes = [], 0.0, None
    while time.monotonic() - t0 < WATCHED_FOR:
        time.sleep(1.0)
        took = time.monotonic()
        age = time.time() - last_sample(daemon)
        took = time.monotonic() - took
        check(took < 1.0, f"/metrics took {took:.2f}s")
        worst_age = max(worst_age, age)
        check(age < 3 * INTERVAL + 1,
              f"{time.monotonic() - t0:.0f}s in: the last sample is {age:.1f}s old: the main "
              f"loop is stalled (the FUSE file system had {fs.reads} reads waiting)")
        p = daemon.process(steady.pid)
        check(p, "the steady fixture is no longer watched")
        if last_bytes is not None:
            growth.append(p["outstanding_bytes"] - last_bytes)
        last_bytes = p["outstanding_bytes"]
    print(f"oldest sample seen: {worst_age:.2f}s; steady growth per second: {growth}")
    # 20 ticks of 4 KiB a second: ~80 KiB. A poll may fall twice within one sample (the
    # samples are 1 s apart): every 3 s some growth.
    windows = [sum(growth[i:i + 3]) for i in range(len(growth) - 2)]
    check(all(w > 0 for w in windows), f"the steady leak stopped growing: {growth}")
    check(sum(growth) >= LEAK * (1000 // TICK_MS) * (WATCHED_FOR - 3) * 0.8,
          f"the steady leak grew by {sum(growth)} in {WATCHED_FOR:.0f}s")


def test_python_code_on_stalled_page(cleanup):
    fs, hostile, steady, daemon = start_fixtures(cleanup)
    watch_steady(daemon, steady, fs)
    # The daemon did read the hostile page (else this test proves nothing), and refused it.
    check(fs.reads >= 1, "nothing read the hostile page: its frames were never named")
    check(metric(daemon, "leakwatch_files_refused_total", reason="slow") >= 1,
          "the stalled read was not counted as refused (slow)")
    check(f"/proc/{hostile.pid}/mem (Python code objects)" in daemon.log_text(),
          "the log does not say which process's memory was refused")
    # Its Python frames stay unnamed ("[python]"), its native ones named.
    stacks = daemon.stacks(hostile.pid, 100)
    check(stacks, "the hostile process has no stacks")
    frames = [f for s in stacks for f in s["frames"]]
    check(any(f.get("module") == "[python]" for f in frames),
          "no Python frame in the hostile process's stacks: its code objects were never asked for")
    check(not any(f.get("symbol") == "Hostile.leak" for f in frames),
          "Hostile.leak was named: its name's page was read")
    # Its bytes up to then are counted. (It stops allocating soon after the read blocks: the
    # blocked reader holds its memory map's lock for reading, and its own next brk or mmap
    # waits for it to be let go; only itself is held up.)
    check(daemon.process(hostile.pid)["outstanding_bytes"] >= LEAK,
          "the hostile process's kept bytearrays are not counted")
    check(daemon.proc.poll() is None, "leakwatchd exited")


def threads_in_mmap(pid):
    """The threads of pid inside mmap (syscall 9 on x86-64) now."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                if f.read().split(" ", 1)[0] == "9":
                    out.append(int(tid))
        except OSError:
            pass
    return out


def test_mmap_behind_stalled_read(cleanup):
    """The hostile process also calls mmap once the daemon's read of its page blocks: the mmap
    waits for the memory map's lock as a writer, and every later reader of that lock (its
    /proc/PID/maps, its /proc/PID/cmdline) queues behind it, for as long as the stall lasts.
    Meanwhile it keeps allocating from new code through libraries mapped after it was first
    read: snapshots to unwind and frames to name, whose maps the daemon wants read anew."""
    fs, hostile, steady, daemon = start_fixtures(cleanup, "churn")
    hostile.expect("churning")
    wait_until(lambda: fs.reads >= 1, 20, "the daemon to read the hostile page")
    wait_until(lambda: threads_in_mmap(hostile.pid), 20,
               "the hostile process's mmap to wait behind the stalled read")
    snapshots = metric(daemon, "leakwatch_unwind_snapshots_total")
    watch_steady(daemon, steady, fs)
    # The writer still waits (the lock was never let go), and the daemon was asked to unwind
    # the hostile process's new stacks meanwhile (else this test proves nothing).
    check(threads_in_mmap(hostile.pid), "the hostile process's mmap went through")
    more = metric(daemon, "leakwatch_unwind_snapshots_total") - snapshots
    print(f"snapshots unwound while the mmap waited: {more}")
    check(more >= 1, "no snapshot of the hostile process was unwound while its mmap waited")
    check(metric(daemon, "leakwatch_files_refused_total", reason="slow") >= 1,
          "the stalled read was not counted as refused (slow)")
    check(daemon.process(hostile.pid)["outstanding_bytes"] >= LEAK,
          "the hostile process's kept bytearrays are not counted")
    check(daemon.proc.poll() is None, "leakwatchd exited")


TOUCHED = 4 << 20  # bytes the self-stalling process touches before it stalls


def start_self_stalled(cleanup, rules, touch=0):
    """The stalling file system, a self-stalled process (tests/progs/python/self_stall.py,
    touching `touch` bytes first), the steady leak and a daemon with the steady fixture's rule
    first, then `rules(stalled_pid)`; returns them once the process's mmap waits behind its own
    read and its cmdline and pagemap do not read (else the test proves nothing)."""
    require_root()
    d = scratch(cleanup)
    mnt = os.path.join(d, "mnt")
    os.mkdir(mnt)
    fs = start(cleanup, stall_fs.StallFs(mnt))
    stalled = start(cleanup, Fixture(os.path.join(PROGS, "python", "self_stall.py"), fs.path,
                                     str(touch), prefix=(PYTHON,)))
    steady = start(cleanup, Fixture("leak_steady", str(LEAK), "1000000", str(TICK_MS)))
    daemon = start(cleanup, Daemon(
        f"interval: {int(INTERVAL * 1000)}ms\n"
        # Every first touch of a page sampled: the touched pages are growth pages at once.
        f"escalation:\n  watch_sample_bytes: 4KiB\nwatch:\n"
        f"  - name: steady\n    tracking: full\n    match:\n      pid: {steady.pid}\n"
        + rules(stalled.pid)))
    start(cleanup, Cleanup(fs.stop))
    wait_until(lambda: daemon.process(steady.pid), 20, "the steady fixture to be watched")
    steady.go()
    stalled.go()
    stalled.expect("reading")
    wait_until(lambda: fs.reads >= 1, 20, "the process to read its own page")
    wait_until(lambda: threads_in_mmap(stalled.pid), 20, "its mmap to wait behind that read")
    for name in ("cmdline", "pagemap"):
        probe = subprocess.run(["timeout", "2", "cat", f"/proc/{stalled.pid}/{name}"],
                               stdout=subprocess.DEVNULL)
        check(probe.returncode == 124, f"/proc/{stalled.pid}/{name} read at once")
    return fs, stalled, steady, daemon


def test_cmdline_rule_beside_self_stalled_process(cleanup):
    """Any local user's process holds up the read of its own /proc/PID/cmdline
    (tests/progs/python/self_stall.py: a thread of it reads its own page of the stalling file
    system, another calls mmap behind it). A `cmdline` rule is tried on every process of the
    host, at every rescan: the main loop must keep sampling and the steady leak keep growing."""
    # The steady fixture by pid first; every other process is tried on the `cmdline` rule.
    fs, stalled, steady, daemon = start_self_stalled(
        cleanup, lambda pid: "  - name: by-line\n    match:\n"
                             "      cmdline: 'no-process-has-this-argument'\n")
    # Past two rescans (every 10 s at this interval): each tries the rule on it.
    watch_steady(daemon, steady, fs)
    check(threads_in_mmap(stalled.pid), "the process's mmap went through")
    wait_until(lambda: metric(daemon, "leakwatch_files_refused_total", reason="slow") >= 1, 20,
               "the read of its command line to be refused as slow")
    check(f"/proc/{stalled.pid}/cmdline" in daemon.log_text(),
          "the log does not name the command line refused")
    check(daemon.proc.poll() is None, "leakwatchd exited")


def test_watch_tier_beside_self_stalled_process(cleanup):
    """A self-stalled process watched by a `pid` rule of the default tracking (the watch tier):
    every interval the aggregator asks which of its sampled pages it still holds
    (/proc/PID/pagemap, which takes its memory map lock). The main loop must keep sampling, the
    steady leak keep growing, the read be refused as slow, and the pages it touched before the
    stall stay counted (the last read's answer kept, pages touched since counted as held)."""
    fs, stalled, steady, daemon = start_self_stalled(
        cleanup, lambda pid: f"  - name: stalled\n    match:\n      pid: {pid}\n", TOUCHED)
    check(daemon.process(stalled.pid)["tracking"] == "watch", "the process is not in the tier")
    watch_steady(daemon, steady, fs)
    check(threads_in_mmap(stalled.pid), "the process's mmap went through")
    wait_until(lambda: metric(daemon, "leakwatch_files_refused_total", reason="slow") >= 1, 20,
               "the read of its pagemap to be refused as slow")
    check(f"/proc/{stalled.pid}/pagemap" in daemon.log_text(),
          "the log does not name the pagemap refused")
    growth = daemon.json(f"/api/v1/stacks?pid={stalled.pid}&top=100")["growth_stacks"]
    held = sum(s["resident_bytes"] for s in growth)
    print(f"growth stacks of the stalled process: {held} bytes resident in {len(growth)} stacks")
    # The 4 MiB it touched, each page sampled; Python's own pages (its thread's stack, the
    # interpreter's arenas) add a little.
    check(TOUCHED <= held <= TOUCHED * 1.25,
          f"{held} bytes held by the stalled process's growth stacks, touched {TOUCHED}")
    check(daemon.proc.poll() is None, "leakwatchd exited")


def test_attach_beside_self_stalled_process(cleanup):
    """Registering a uprobe takes, as a writer, the memory map lock of every process that maps
    the probed file, before the kernel looks at which process the probe is for. A self-stalled
    process runs python, so maps libc: while it stalls, every uprobe on libc for any process of
    the host waits in the kernel. A process started then, matched by a `tracking: full` rule,
    must be attached on a thread of its own: the main loop keeps sampling, the steady leak keeps
    growing, the attach in flight is counted and logged naming the process and the file, and
    once the stall ends the process is attached and its leak counted to the byte."""
    d = scratch(cleanup)
    late_exe = os.path.join(d, "late_leak")
    shutil.copy(os.path.join(FIXTURES, "leak_steady"), late_exe)
    fs, stalled, steady, daemon = start_self_stalled(
        cleanup, lambda pid: "  - name: late\n    tracking: full\n    match:\n"
                             "      comm: late_leak\n")
    ticks = 100  # 5 s
    late = start(cleanup, Fixture(late_exe, str(LEAK), str(ticks), str(TICK_MS)))
    watch_steady(daemon, steady, fs)
    check(threads_in_mmap(stalled.pid), "the process's mmap went through")
    check(not daemon.process(late.pid), "the late process was attached during the stall")
    waiting = metric(daemon, "leakwatch_probe_operations_in_flight", operation="attach")
    stuck = metric(daemon, "leakwatch_probe_operations_stuck", operation="attach")
    print(f"attaches in flight {waiting}, stuck {stuck}")
    check(waiting == 1 and stuck == 1, f"attaches in flight {waiting}, stuck {stuck}")
    line = next((l for l in daemon.log_text().splitlines() if "has waited" in l), "")
    print(line)
    check(f"pid {late.pid}" in line and "libc" in line,
          "the log does not name the stuck attach:\n" + daemon.log_text()[-3000:])
    # The stall ends: the attach goes through, and the leak started after it is counted.
    fs.stop()
    t0 = time.monotonic()
    p = wait_until(lambda: daemon.process(late.pid), 20, "the late process to be attached")
    print(f"attached {time.monotonic() - t0:.2f}s after the stall ended: {p['tracking']}")
    check(p["tracking"] == "full", f"tracking {p['tracking']}")
    late.go()
    truth = int(late.expect("leaked"))
    check(truth == LEAK * ticks, f"fixture leaked {truth}")
    time.sleep(3 * INTERVAL)
    sites = daemon.site_bytes(late.pid)
    check(sites.get("leak_record_entry") == truth,
          f"leak_record_entry holds {sites.get('leak_record_entry')} bytes, truth {truth}")
    check(metric(daemon, "leakwatch_probe_operations_in_flight", operation="attach") == 0,
          "an attach still in flight")
    check(daemon.proc.poll() is None, "leakwatchd exited")


STALLED_USER = 65534  # nobody
STALLED_COUNT = 12


def daemon_threads(daemon):
    with open(f"/proc/{daemon.proc.pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def test_many_self_stalled_processes_of_one_user(cleanup):
    """Twelve processes of one user (nobody) in the watch tier each hold up their own memory map
    lock, so every read of their /proc/PID/pagemap is stuck. The reads in flight of one user are
    bounded (4): the daemon's threads stay bounded, the others are refused as busy, the main
    loop keeps sampling, and a root process's steady leak beside them is attached and named
    with its bytes exactly: the symbolizer opens their mapped files by path, and its
    /proc/PID/map_files opens and /proc/PID/mem reads (which take the same lock) are bounded by
    the same per-user limit, so they never hold all its loader threads."""
    require_root()
    d = scratch(cleanup)
    os.chmod(d, 0o755)
    mnt = os.path.join(d, "mnt")
    os.mkdir(mnt)
    fs = start(cleanup, stall_fs.StallFs(mnt))
    as_user = ("setpriv", f"--reuid={STALLED_USER}", f"--regid={STALLED_USER}", "--clear-groups",
               PYTHON)
    stalled = []
    for _ in range(STALLED_COUNT):
        f = start(cleanup, Fixture(os.path.join(PROGS, "python", "self_stall.py"), fs.path,
                                   str(1 << 20), prefix=as_user))
        os.chmod(f.dir, 0o755)  # its go file, for the user to see
        stalled.append(f)
    ticks = 500  # 25 s: past watch_steady
    steady = start(cleanup, Fixture("leak_steady", str(LEAK), str(ticks), str(TICK_MS)))
    daemon = start(cleanup, Daemon(
        f"interval: {int(INTERVAL * 1000)}ms\n"
        f"escalation:\n  watch_sample_bytes: 4KiB\nwatch:\n"
        f"  - name: steady\n    tracking: full\n    match:\n"
        f"      pid: {steady.pid}\n"
        f"  - name: stalled\n    match:\n      uid: {STALLED_USER}\n"))
    start(cleanup, Cleanup(fs.stop))
    wait_until(lambda: daemon.process(steady.pid) and all(daemon.process(f.pid) for f in stalled),
               30, "every fixture to be watched")
    threads_before = daemon_threads(daemon)
    for f in stalled:
        f.go()
    for f in stalled:
        f.expect("reading")
    # They read the same page of the file: the kernel asks the file system for it once.
    wait_until(lambda: fs.reads >= 1, 20, "the processes to read their own page")
    wait_until(lambda: all(threads_in_mmap(f.pid) for f in stalled), 20,
               "their mmaps to wait behind those reads")
    for f in stalled:
        probe = subprocess.run(["timeout", "2", "cat", f"/proc/{f.pid}/pagemap"],
                               stdout=subprocess.DEVNULL)
        check(probe.returncode == 124, f"/proc/{f.pid}/pagemap read at once")
    steady.go()
    watch_steady(daemon, steady, fs)
    threads_after = daemon_threads(daemon)
    print(f"leakwatchd threads: {threads_before} before the stall, {threads_after} after")
    # 4 reads of the user stuck, plus the pool's two working threads at most.
    check(threads_after - threads_before <= 6,
          f"leakwatchd went from {threads_before} to {threads_after} threads")
    busy = metric(daemon, "leakwatch_files_refused_total", reason="busy")
    print(f"pagemap reads refused as busy: {busy}")
    check(busy >= STALLED_COUNT - 4, f"{busy} reads refused as busy")
    check(all(threads_in_mmap(f.pid) for f in stalled), "a process's mmap went through")
    # The steady leak: attached, its site named, its bytes exactly what it leaked.
    truth = int(steady.expect("leaked"))
    check(truth == LEAK * ticks, f"fixture leaked {truth}")
    time.sleep(3 * INTERVAL)
    sites = daemon.site_bytes(steady.pid)
    print(f"steady sites: {sites}")
    check(sites.get("leak_record_entry") == truth,
          f"leak_record_entry holds {sites.get('leak_record_entry')} bytes, truth {truth}")
    check(daemon.proc.poll() is None, "leakwatchd exited")


if __name__ == "__main__":
    run({name[5:]: fn for name, fn in list(globals().items()) if name.startswith("test_")})
