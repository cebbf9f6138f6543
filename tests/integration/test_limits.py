"""Root tests: one watched process cannot take what the others need. A process with ever new
stacks fills only its share of the stack maps (limits.process_share); and leakwatchd keeps only
the capabilities its probes need."""
import os
import shutil
import tempfile

from lwtest import (FIXTURES, Daemon, Fixture, check, check_nothing_lost, require_root, run, start,
                    wait_until)

PATHS, SIZE = 100000, 64   # many_stacks: 100,000 distinct stacks of 64 bytes each, all kept
LEAK, TICKS, TICK_MS = 4096, 20, 50
STACKS = 16384             # limits.stacks (the default)
CAP_SYS_ADMIN = 21


def config(churner, leaker, share="50%"):
    return f"""
interval: 1s
limits:
  stacks: {STACKS}
  process_share: {share}
watch:
  - name: churner
    tracking: full
    match:
      pid: {churner}
    unwind: frame-pointer
  - name: leaker
    tracking: full
    match:
      pid: {leaker}
    unwind: frame-pointer
"""


def test_one_process_cannot_starve(cleanup):
    """100,000 distinct stacks in one process, then a leak in another: the churner fills its
    share of the stack map (8,192 stacks), its further stacks are counted under stack id 0 with
    its process total exact; the leaker's bytes are attributed to its site, to the byte."""
    require_root()
    churner = start(cleanup, Fixture("many_stacks", str(PATHS), str(SIZE)))
    leaker = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), str(TICK_MS)))
    share = os.environ.get("LEAKWATCH_PROCESS_SHARE", "50%")
    daemon = start(cleanup, Daemon(config(churner.pid, leaker.pid, share)))
    for f in (churner, leaker):
        wait_until(lambda: daemon.process(f.pid), 10, f"pid {f.pid} to be watched")
    churner.go()
    churn_truth = int(churner.expect("leaked", timeout=120))
    check(churn_truth == PATHS * SIZE, f"many_stacks leaked {churn_truth}")
    leaker.go()
    truth = int(leaker.expect("leaked"))
    wait_until(lambda: daemon.process(leaker.pid)["outstanding_bytes"] >= truth, 10,
               "the leak to show")
    wait_until(lambda: daemon.process(churner.pid)["outstanding_bytes"] == churn_truth, 10,
               "the churner's total")

    leaked = daemon.site_bytes(leaker.pid).get("leak_record_entry", 0)
    churner_view = daemon.process(churner.pid)
    top = daemon.stacks(churner.pid, 1)[0]
    lost = {l["reason"]: v for n, l, v in daemon.metrics() if n == "leakwatch_lost_events_total"}
    print(f"leaker: leak_record_entry {leaked} bytes (truth {truth}); churner: "
          f"{churner_view['outstanding_bytes']} bytes in {churner_view['stacks']} stacks "
          f"(truth {churn_truth}), its largest stack {top['site']} {top['outstanding_bytes']} "
          f"bytes; lost process_share {lost.get('process_share')}, stack_map_full "
          f"{lost.get('stack_map_full')}, stack_totals_map_full {lost.get('stack_totals_map_full')}")
    check(leaked == truth, f"the leaker's leak_record_entry holds {leaked} bytes, truth {truth}")
    # Its share is half the map; every allocation beyond it is counted under stack id 0.
    own = STACKS // 2
    check(churner_view["outstanding_bytes"] == churn_truth,
          f"the churner's total is {churner_view['outstanding_bytes']}, truth {churn_truth}")
    check(top["site"] == "[unknown]" and top["outstanding_bytes"] == (PATHS - own) * SIZE,
          f"the churner's stack id 0 holds {top}, expected {(PATHS - own) * SIZE} bytes")
    check(lost["process_share"] == PATHS - own,
          f"lost process_share {lost['process_share']}, expected {PATHS - own}")
    check_nothing_lost(daemon, ("stack_map_full", "stack_totals_map_full", "live_map_full"))


def cap_sets(pid):
    """{task: (effective, permitted)} of every thread of a process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = {}
        for line in open(f"/proc/{pid}/task/{tid}/status"):
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        out[tid] = (int(fields["CapEff"], 16), int(fields["CapPrm"], 16))
    return out


def test_drops_cap_sys_admin(cleanup):
    """With multi-uprobe or session links nothing leakwatchd does needs CAP_SYS_ADMIN: it drops
    it from every thread at start and still watches processes to the byte, one running at start
    and one started after the drop. Classic perf-event uprobes need it: with --probe-mode
    classic it stays."""
    require_root()
    # A copy of the fixture under a name of this test's own, matched by its path.
    d = tempfile.mkdtemp(prefix="leakwatch-caps-")
    cleanup.append(type("Dir", (), {"stop": lambda self: shutil.rmtree(d)})())
    exe = os.path.join(d, "leak_caps")
    shutil.copy(os.path.join(FIXTURES, "leak_steady"), exe)
    first = start(cleanup, Fixture(exe, str(LEAK), str(TICKS), str(TICK_MS)))
    daemon = start(cleanup, Daemon(f"interval: 1s\nwatch:\n  - name: caps\n    tracking: full\n    match:\n"
                                   f"      exe: {exe}\n"))
    wait_until(lambda: daemon.process(first.pid), 10, "the first process to be watched")
    classic = os.environ.get("LEAKWATCH_PROBE_MODE") == "classic"
    caps = cap_sets(daemon.proc.pid)
    held = {tid: bool((eff | prm) >> CAP_SYS_ADMIN & 1) for tid, (eff, prm) in caps.items()}
    print(f"{len(caps)} threads; CAP_SYS_ADMIN held by {sum(held.values())}")
    if classic:
        check(all(held.values()), f"classic uprobes need CAP_SYS_ADMIN, dropped: {held}")
    else:
        check(not any(held.values()), f"CAP_SYS_ADMIN kept by threads {held}")
        check("dropped CAP_SYS_ADMIN" in daemon.log_text(), "the drop is not logged")
    late = start(cleanup, Fixture(exe, str(LEAK), str(TICKS), str(TICK_MS)))
    wait_until(lambda: daemon.process(late.pid), 10, "a process started after the drop")
    for f in (first, late):
        f.go()
        truth = int(f.expect("leaked"))
        wait_until(lambda: daemon.site_bytes(f.pid).get("leak_record_entry") == truth, 10,
                   f"leak_record_entry of pid {f.pid} to hold {truth} bytes")


if __name__ == "__main__":
    run({"one_process_cannot_starve": test_one_process_cannot_starve,
         "drops_cap_sys_admin": test_drops_cap_sys_admin})
