"""Root tests: leakwatchd as the shipped unit runs it, without systemd.

systemd/leakwatch.service runs leakwatchd as a dynamic user (not root) with the capabilities
its AmbientCapabilities= line names, and no others (CapabilityBoundingSet=, NoNewPrivileges=).
These tests start it the same way through setpriv (a non-root uid and gid, exactly those
capabilities as ambient, inheritable and bounding sets, no new privileges), so what works as
root in the other tests is shown to work, or to be refused as documented, under the unit.

java_under_unit: a JVM of another user (nobody) under its default flags leaks direct buffers
from a method it runs interpreted (tests/progs/java/LeakSlow.java, the reference article's demo
as operators run it). The unit has no CAP_SETUID/CAP_SETGID, so HotSpot's attach mechanism
(which answers only its own user or root) is not tried: no trigger file, no SIGQUIT, no perf
map, and one log line saying why. The leaking method is still the site, named from the JVM's
own structures (CAP_SYS_PTRACE)."""
import os
import re
import shutil
import tempfile
import time

from lwtest import (Daemon, Fixture, check, in_order, pid_rules, require_root, run, start,
                    symbols, wait_until, within)
from test_runtimes import INTERVAL, PROGS, Removed, tool

UNIT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", "systemd",
                                     "leakwatch.service"))
# Ids no account of the machine has, like the dynamic users systemd allocates (61184-65519).
UNIT_UID = 61999
NOBODY = 65534


def unit_capabilities():
    """The capabilities the unit grants (its AmbientCapabilities= line), as setpriv names
    them: ["bpf", "perfmon", ...]."""
    with open(UNIT) as f:
        lines = [l for l in f.read().splitlines() if l.startswith("AmbientCapabilities=")]
    check(len(lines) == 1, f"{UNIT}: {len(lines)} AmbientCapabilities= lines")
    caps = lines[0].split("=", 1)[1].split()
    check(caps and all(c.startswith("CAP_") for c in caps), f"{UNIT}: {lines[0]}")
    return [c[len("CAP_"):].lower() for c in caps]


def as_unit():
    """The prefix that runs a program with the unit's identity and capabilities."""
    caps = ",".join("+" + c for c in unit_capabilities())
    return ("setpriv", f"--reuid={UNIT_UID}", f"--regid={UNIT_UID}", "--clear-groups",
            f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
            f"--bounding-set=-all,{caps}", "--no-new-privs")


def status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1:]
    return []


def test_java_under_unit(cleanup):
    java = tool("java")
    # The JVM runs as nobody: its source and its fixture files where nobody can read them.
    work = start(cleanup, Removed(tempfile.mkdtemp(prefix="lw-java-unit-", dir="/var/tmp")))
    os.chmod(work.path, 0o755)
    source = shutil.copy(os.path.join(PROGS, "java", "LeakSlow.java"), work.path)
    os.chmod(source, 0o644)
    size, count = 262144, 40
    fixture = start(cleanup, Fixture(
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env",
        f"HOME={work.path}", java, source, str(size), str(count),
        prefix=("/usr/bin/env",), tmpdir=work.path))
    os.chmod(fixture.dir, 0o755)
    pid = fixture.pid
    uids = status_field(pid, "Uid")
    check(uids == [str(NOBODY)] * 4, f"the JVM's uids: {uids}")
    start(cleanup, Removed(f"/tmp/perf-{pid}.map"))
    start(cleanup, Removed(f"/tmp/.java_pid{pid}"))
    daemon = start(cleanup, Daemon(pid_rules([("java", pid, None)]), prefix=as_unit()))
    # It runs as the unit would: not root, with the unit's capabilities and no others.
    uids = status_field(daemon.proc.pid, "Uid")
    check(uids == [str(UNIT_UID)] * 4, f"leakwatchd's uids: {uids}")
    bounding = int(status_field(daemon.proc.pid, "CapBnd")[0], 16)
    check(bounding.bit_count() == len(unit_capabilities()),
          f"leakwatchd's bounding set {bounding:#x}, the unit grants {unit_capabilities()}")

    wait_until(lambda: daemon.process(pid), 20, "the JVM to be attached")
    time.sleep(2 * INTERVAL)
    fixture.go()
    truth = int(fixture.expect("leaked"))
    time.sleep(2 * INTERVAL)
    # The interpreted leaking method is the site, named from the Method* its interpreter frame
    # holds, read through the JVM's own structures.
    site = "LeakSlow.leakBuffer"
    stacks = daemon.stacks(pid, 1000)
    for s in stacks[:3]:
        print(s["site"], s["outstanding_bytes"], symbols(s)[:16])
    leak = [s for s in stacks if s["site"] == site]
    held = sum(s["outstanding_bytes"] for s in leak)
    print(f"site {site} holds {held}, truth {truth}")
    check(leak, f"no stack with site {site}: {[s['site'] for s in stacks[:10]]}")
    check(within(held, truth, 0.10), f"site {site} holds {held}, truth {truth}")
    names = symbols(max(leak, key=lambda s: s["outstanding_bytes"]))
    check(in_order(names, ["malloc", "Unsafe_AllocateMemory0",
                           "java.nio.ByteBuffer.allocateDirect(int)", site + "(int)",
                           "LeakSlow.main(java.lang.String[])"]), f"frames: {names}")

    # The attach was not tried: the JVM's owner checks would refuse the daemon.
    check(not os.path.exists(f"/tmp/perf-{pid}.map"), "a perf map was written")
    check(not os.path.exists(f"/tmp/.java_pid{pid}"), "the JVM's attach listener was started")
    check(not os.path.exists(f"/tmp/.attach_pid{pid}"), "an attach trigger file was left")
    said = [l for l in daemon.log_text().splitlines()
            if re.search(rf"pid {pid}: no perf map from the JVM, not asked again: .*"
                         r"CAP_SETUID and CAP_SETGID not granted", l)]
    check(len(said) == 1, f"the log says why {len(said)} times (once expected)")
    print(said[0])

if __name__ == "__main__":
    require_root()
    run({"java_under_unit": test_java_under_unit})
