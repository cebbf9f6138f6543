"""Root test: JVMs that never answer leakwatchd's attach do not hold up the perf maps of other
processes (issue 15).

Each fake JVM is a Python process that maps a file named libjvm.so (what makes leakwatchd take
a process for a HotSpot JVM) and catches SIGQUIT, but never starts an attach listener: each ask
for its perf map waits the listener's whole bound (10 s). Beside eight of them, jit_leak's JIT
frame must be named from its perf map within a few seconds of its leak."""
import os
import shutil
import sys
import time

from lwtest import Daemon, Fixture, check, metric, require_root, run, start, wait_until
from test_hostile import LEAK, TICKS, Cleanup, jit_leak_with_map, scratch

INTERVAL = 1.0
JVMS = 8
# How long after its leak the JIT frame must be named: the first read of a perf map is waited
# for 250 ms, the samples are a second apart. Eight JVMs on the shared loader held it ~10 s.
NAMED_WITHIN = 5.0

FAKE_JVM = r"""
import mmap, os, signal, sys, time
signal.signal(signal.SIGQUIT, lambda *a: None)  # caught, as a JVM does; no listener follows
f = open(sys.argv[1], "rb")
m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
print("pid", os.getpid(), flush=True)
while True:
    time.sleep(60)
"""


def test_jvms_never_answering(cleanup):
    require_root()
    d = scratch(cleanup)
    libjvm = os.path.join(d, "libjvm.so")
    shutil.copyfile("/bin/true", libjvm)
    jvms = [start(cleanup, Fixture(libjvm, prefix=(sys.executable, "-c", FAKE_JVM)))
            for _ in range(JVMS)]
    # The trigger files of attaches still waiting when the daemon stops stay behind.
    for j in jvms:
        trigger = f"/tmp/.attach_pid{j.pid}"
        start(cleanup, Cleanup(lambda t=trigger: os.path.lexists(t) and os.remove(t)))
    def write_map(path, jit, size):
        with open(path, "w") as f:
            f.write(f"{jit:x} {size:x} jitted_leak_caller\n")
    fixture = jit_leak_with_map(cleanup, write_map)

    text = f"interval: {int(INTERVAL * 1000)}ms\nwatch:\n"
    for i, j in enumerate(jvms):
        text += f"  - name: jvm{i}\n    tracking: full\n    match:\n      pid: {j.pid}\n"
    text += f"  - name: jit\n    tracking: full\n    match:\n      pid: {fixture.pid}\n"
    daemon = start(cleanup, Daemon(text))
    wait_until(lambda: all(daemon.process(j.pid) for j in jvms), 15, "the fake JVMs to be watched")
    wait_until(lambda: daemon.process(fixture.pid), 15, "jit_leak to be watched")
    # Every fake JVM asked for its perf map, its attach waiting for a listener that never comes.
    wait_until(lambda: metric(daemon, "leakwatch_jvm_attaches_queued_total") >= JVMS - 2, 10,
               "the JVM attaches beyond the first two to wait their turn")
    fixture.go()
    truth = int(fixture.expect("leaked"))
    check(truth == LEAK * TICKS, f"jit_leak leaked {truth}")
    t0 = time.monotonic()

    def named():
        for s in daemon.stacks(fixture.pid):
            names = [f.get("symbol", "") for f in s["frames"]]
            if "leak_from_jit" in names and "jitted_leak_caller" in names:
                return s["outstanding_bytes"] == truth
        return False
    wait_until(named, NAMED_WITHIN, f"the JIT frame named from the perf map, {truth} bytes")
    took = time.monotonic() - t0
    print(f"JIT frame named {took:.1f}s after the leak, beside {JVMS} JVMs not answering")
    log = daemon.log_text()
    check(log.count("no perf map from the JVM, not asked again") <= JVMS,
          "a JVM was asked more than once")
    check(daemon.proc.poll() is None, "leakwatchd exited")


if __name__ == "__main__":
    run({name[5:]: fn for name, fn in list(globals().items()) if name.startswith("test_")})
