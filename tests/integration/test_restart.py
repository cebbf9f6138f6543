"""Root tests: leakwatchd's state survives a crash. Its BPF maps and probe links are pinned in a
bpffs directory of the test's own (mounted for it, like /sys/fs/bpf under systemd), its leak
detector's history is written to a state directory; a leakwatchd started again adopts both."""
import os
import signal
import subprocess
import tempfile
import time

from lwtest import Daemon, Fixture, check, require_root, run, start, wait_until

INTERVAL = 1.0
# The detection window, short for the test (the default is 10 minutes; at least 16 intervals):
# the restart (KILL_AFTER + DOWN_FOR) falls inside the first window, which the adopted history
# must carry.
WINDOW = 30
# The fixture leaks LEAK bytes every TICK_MS through leak_record_entry, TICKS times (48 s,
# 9.4 MiB: beyond the flag, a window and 8 judgements in, about 38.5 s in both daemons), beside
# 64 malloc/free pairs of 1 to 8 KiB per tick through churn_buffers.
LEAK, TICKS, TICK_MS = 8192, 1200, 40
KILL_AFTER = 12   # seconds after the fixtures start leaking
DOWN_FOR = 5      # seconds between the SIGKILL and the new leakwatchd
CHURN_MAX = 64 * 8192  # what churn_buffers holds at most at any moment: one tick's blocks


class BpfFs:
    """A bpffs of the test's own, so that the pins of parallel runs never meet."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="leakwatch-bpffs-")
        subprocess.run(["mount", "-t", "bpf", "bpf", self.dir], check=True)
        self.pins = os.path.join(self.dir, "leakwatch")

    def entries(self):
        out = []
        for root, dirs, files in os.walk(self.pins):
            out += [os.path.relpath(os.path.join(root, f), self.pins) for f in files]
        return out

    def stop(self):
        subprocess.run(["umount", self.dir], check=False)
        os.rmdir(self.dir)


class StateDir:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="leakwatch-state-")

    def stop(self):
        subprocess.run(["rm", "-rf", self.dir])


def config(pid, escalate=False):
    """The fixture's rule with tracking: full, or the default (escalate) with every allocation
    traced once escalated."""
    return f"""
interval: {int(INTERVAL * 1000)}ms
leak_detection:
  window: {WINDOW}s
escalation:
  sample_bytes: 0
watch:
  - name: steady
    tracking: {"escalate" if escalate else "full"}
    match:
      pid: {pid}
"""


def leak_stack(daemon, pid):
    """(bytes, flagged_since or None) of the fixture's leak_record_entry stack."""
    bytes_ = sum(s["outstanding_bytes"] for s in daemon.stacks(pid, 1000)
                 if s["site"] == "leak_record_entry")
    flagged = [l["flagged_since"] for l in daemon.json("/api/v1/leaks")["leaks"]
               if l["scope"] == "stack" and l["pid"] == str(pid)
               and l["site"] == "leak_record_entry"]
    return bytes_, (min(flagged) if flagged else None)


def test_sigkill_keeps_state(cleanup):
    """A steady leak with churn; leakwatchd is killed (SIGKILL) 12 s in and started again 5 s
    later. The leak site's outstanding bytes equal the fixture's truth to the byte, the churn
    site stays near 0, and the leak is flagged no later than by a leakwatchd that watches a
    twin fixture the whole time."""
    require_root()
    bpffs = start(cleanup, BpfFs())
    state = start(cleanup, StateDir())
    ref_bpffs = start(cleanup, BpfFs())
    args = ("--bpf-pin-dir", bpffs.pins, "--state-dir", state.dir)
    fixture = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), str(TICK_MS)))
    twin = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), str(TICK_MS)))
    daemon = start(cleanup, Daemon(config(fixture.pid), args))
    reference = start(cleanup, Daemon(config(twin.pid), ("--bpf-pin-dir", ref_bpffs.pins)))
    wait_until(lambda: daemon.process(fixture.pid), 10, "the fixture to be watched")
    wait_until(lambda: reference.process(twin.pid), 10, "the twin to be watched")
    check(any(e.startswith("links/") or "/links/" in e for e in bpffs.entries()),
          f"no probe link pinned: {bpffs.entries()}")
    t_go = time.time()
    fixture.go()
    twin.go()

    time.sleep(KILL_AFTER)
    before_kill, _ = leak_stack(daemon, fixture.pid)
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait()
    pinned = bpffs.entries()
    print(f"SIGKILL {KILL_AFTER} s in ({before_kill} bytes at leak_record_entry); "
          f"{len(pinned)} objects pinned")
    time.sleep(DOWN_FOR)
    cleanup.remove(daemon)
    daemon.log.close()
    daemon = start(cleanup, Daemon(config(fixture.pid), args))
    t_back = time.time()
    wait_until(lambda: daemon.process(fixture.pid), 10, "the fixture in the new leakwatchd's API")
    log = daemon.log_text()
    check(f"adopted pid {fixture.pid}" in log, "the new leakwatchd did not adopt the fixture:\n"
          + log[-3000:])
    back, _ = leak_stack(daemon, fixture.pid)
    print(f"back {t_back - t_go:.1f} s in: {back} bytes at leak_record_entry at once")

    truth = int(fixture.expect("leaked", timeout=120))
    twin.expect("leaked", timeout=120)
    check(truth == LEAK * TICKS, f"fixture leaked {truth}")
    time.sleep(2 * INTERVAL)
    sites = daemon.site_bytes(fixture.pid)
    leaked, flagged = leak_stack(daemon, fixture.pid)
    ref_leaked, ref_flagged = leak_stack(reference, twin.pid)
    churn = sites.get("churn_buffers", 0)
    print(f"after the leak: leak_record_entry {leaked} bytes (truth {truth}, twin's "
          f"{ref_leaked}); churn_buffers {churn} bytes")
    check(leaked == truth, f"leak_record_entry holds {leaked} bytes, truth {truth}: {sites}")
    check(ref_leaked == truth, f"the twin's leak_record_entry holds {ref_leaked}, truth {truth}")
    check(0 <= churn <= CHURN_MAX, f"churn_buffers holds {churn} bytes (at most {CHURN_MAX}): "
          f"{sites}")
    check(ref_flagged is not None, "the reference did not flag the twin's leak")
    check(flagged is not None, "the restarted leakwatchd did not flag the leak")
    print(f"leak flagged {flagged - t_go:.1f} s after the start (the twin, never restarted: "
          f"{ref_flagged - t_go:.1f} s)")
    # Judgements come once per point of history (window / 64 s) at a phase of each series' own.
    slack = WINDOW / 64 + INTERVAL
    check(flagged <= ref_flagged + slack,
          f"flagged at {flagged - t_go:.1f} s, later than the reference's "
          f"{ref_flagged - t_go:.1f} s (+{slack:.1f} s)")

    # A stop (SIGTERM, no service manager to hand over to) detaches and leaves nothing pinned.
    daemon.stop()
    check(daemon.proc.returncode == 0, f"leakwatchd exited with {daemon.proc.returncode}")
    check(bpffs.entries() == [], f"pinned after a stop: {bpffs.entries()}")
    check(os.listdir(state.dir) == ["detector.state"], f"state directory: {os.listdir(state.dir)}")


def test_sigkill_keeps_escalation(cleanup):
    """A process of the watch tier (tracking: escalate, the default) escalated by an operator
    before it leaks, every allocation traced (escalation.sample_bytes: 0); leakwatchd is killed
    while it leaks and started again: the process is adopted escalated, since the same moment,
    and its leak site holds the fixture's truth to the byte."""
    require_root()
    bpffs = start(cleanup, BpfFs())
    state = start(cleanup, StateDir())
    args = ("--bpf-pin-dir", bpffs.pins, "--state-dir", state.dir)
    ticks = 400  # 16 s
    fixture = start(cleanup, Fixture("leak_steady", str(LEAK), str(ticks), str(TICK_MS)))
    daemon = start(cleanup, Daemon(config(fixture.pid, escalate=True), args))
    p = wait_until(lambda: daemon.process(fixture.pid), 10, "the fixture to be watched")
    check(p["tracking"] == "watch", f"tracking {p['tracking']} before the escalation")
    req = __import__("urllib.request").request.Request(
        f"http://127.0.0.1:{daemon.port}/api/v1/escalate?pid={fixture.pid}", method="POST")
    with __import__("urllib.request").request.urlopen(req, timeout=5) as r:
        check(r.status == 202, f"POST escalate: {r.status}")
    p = wait_until(lambda: (lambda p: p if p["tracking"] == "escalated" else None)(
        daemon.process(fixture.pid)), 10, "the escalation")
    escalated_at = p["escalated_at"]
    fixture.go()
    time.sleep(8)
    before_kill, _ = leak_stack(daemon, fixture.pid)
    check(before_kill > 0, "nothing at leak_record_entry before the kill")
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait()
    time.sleep(3)
    cleanup.remove(daemon)
    daemon.log.close()
    daemon = start(cleanup, Daemon(config(fixture.pid, escalate=True), args))
    p = wait_until(lambda: daemon.process(fixture.pid), 10, "the fixture in the new API")
    log = daemon.log_text()
    check(f"adopted pid {fixture.pid}" in log and "escalated" in log,
          "not adopted escalated:\n" + log[-3000:])
    check(p["tracking"] == "escalated", f"tracking {p['tracking']} after the restart")
    check(abs(p["escalated_at"] - escalated_at) < 1e-3,
          f"escalated_at {p['escalated_at']} after the restart, {escalated_at} before")
    truth = int(fixture.expect("leaked", timeout=60))
    check(truth == LEAK * ticks, f"fixture leaked {truth}")
    time.sleep(2 * INTERVAL)
    leaked, _ = leak_stack(daemon, fixture.pid)
    churn = daemon.site_bytes(fixture.pid).get("churn_buffers", 0)
    print(f"escalated at {escalated_at:.3f}, killed with {before_kill} bytes at "
          f"leak_record_entry, adopted escalated at {p['escalated_at']:.3f}; after the leak "
          f"{leaked} bytes (truth {truth}), churn_buffers {churn}")
    check(leaked == truth, f"leak_record_entry holds {leaked} bytes, truth {truth}")
    check(0 <= churn <= CHURN_MAX, f"churn_buffers holds {churn} bytes (at most {CHURN_MAX})")
    daemon.stop()
    check(bpffs.entries() == [], f"pinned after a stop: {bpffs.entries()}")


if __name__ == "__main__":
    run({"sigkill_keeps_state": test_sigkill_keeps_state,
         "sigkill_keeps_escalation": test_sigkill_keeps_escalation})
