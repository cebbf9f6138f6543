"""Root tests: leaks in managed runtimes, named through the perf map the runtime writes.

Java (tests/progs/java/LeakDirect.java, the reference article's demonstration): direct
buffers kept and never released. The JVM mallocs their memory (Unsafe_AllocateMemory0 ->
os::malloc); its JIT-compiled frames are walked by frame pointer (-XX:+PreserveFramePointer)
and named from /tmp/perf-PID.map, which `jcmd PID Compiler.perfmap` writes.

Python (tests/progs/python/leak_bytearray.py, the article's other demonstration): bytearrays
kept in a list. CPython 3.12+ started with -X perf calls each Python function through a small
trampoline it names in /tmp/perf-PID.map ("py::leak_buffers:FILE"); Debian 12's 3.11 has no
such thing, and its stacks show the interpreter's C functions only."""
import glob
import os
import shutil
import subprocess
import time

from lwtest import (Daemon, Fixture, check, in_order, metric, pid_rules, require_root, run,
                    start, symbols, wait_until, within)

INTERVAL = 1.0
PROGS = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "progs"))
SIZE, COUNT, WARMUP = 65536, 1000, 5000


class Removed:
    """A file the test makes the JVM write, removed at the end."""

    def __init__(self, path):
        self.path = path

    def stop(self):
        if os.path.exists(self.path):
            os.remove(self.path)


def tool(name):
    path = shutil.which(name)
    check(path, f"{name} not found: scripts/deps.sh installs openjdk-17-jdk-headless")
    return path


def warm_leak(cleanup, name, *argv):
    """Starts a runtime fixture (argv, through env), watches it with unwind: dwarf, lets it
    warm its path up ("warm"), then leak ("leaked"). Returns the fixture, the daemon, the
    process's outstanding bytes before the leak, and what it says it leaked."""
    fixture = start(cleanup, Fixture(*argv, prefix=("/usr/bin/env",)))
    start(cleanup, Removed(f"/tmp/perf-{fixture.pid}.map"))
    daemon = start(cleanup, Daemon(pid_rules([(name, fixture.pid, "dwarf")])))
    wait_until(lambda: daemon.process(fixture.pid), 20, f"the {name} fixture to be attached")
    fixture.go()
    fixture.expect("warm")
    time.sleep(2 * INTERVAL)
    before = daemon.process(fixture.pid)["outstanding_bytes"]
    fixture.go("go.leak")
    return fixture, daemon, before, int(fixture.expect("leaked"))


def test_java_direct_buffers(cleanup):
    java, jcmd = tool("java"), tool("jcmd")
    fixture, daemon, before, truth = warm_leak(
        cleanup, "java", java, "-XX:+PreserveFramePointer",
        # a frame of its own for the leaking method, whatever the JIT would inline
        "-XX:CompileCommand=quiet", "-XX:CompileCommand=dontinline,LeakDirect::leakBuffer",
        os.path.join(PROGS, "java", "LeakDirect.java"), str(SIZE), str(COUNT), str(WARMUP))
    out = subprocess.run([jcmd, str(fixture.pid), "Compiler.perfmap"], capture_output=True,
                         text=True, timeout=60)
    check(out.returncode == 0, f"jcmd Compiler.perfmap: {out.stdout} {out.stderr}")

    def named():
        return [s for s in daemon.stacks(fixture.pid, 1000)
                if s["site"] == "LeakDirect.leakBuffer"]
    wait_until(named, 10, "a stack with site LeakDirect.leakBuffer (perf map read)")
    time.sleep(INTERVAL)
    after = daemon.process(fixture.pid)["outstanding_bytes"]
    stacks = daemon.stacks(fixture.pid, 1000)
    for s in stacks[:5]:
        print(s["site"], s["outstanding_bytes"], symbols(s)[:12])

    grew = after - before
    print(f"process grew by {grew} while leaking {truth}")
    check(within(grew, truth, 0.10), f"process grew by {grew}, truth {truth}")
    native = sum(s["outstanding_bytes"] for s in stacks if "Unsafe_AllocateMemory0" in symbols(s))
    check(within(native, truth + WARMUP, 0.10),
          f"stacks through Unsafe_AllocateMemory0 hold {native}, truth {truth + WARMUP}")
    leak = [s for s in stacks if s["site"] == "LeakDirect.leakBuffer"]
    held = sum(s["outstanding_bytes"] for s in leak)
    # The JIT keeps compiling new code (C1, then C2) while the loop runs: each new return
    # address sends a snapshot, and the allocations made until its rules are in keep the
    # frames walked so far (unwind_pending), here ending inside the JVM's allocation path.
    partial = sum(s["outstanding_bytes"] for s in stacks
                  if "Unsafe_AllocateMemory0" in symbols(s) and s["site"] == "[unknown]")
    pending = metric(daemon, "leakwatch_lost_events_total", reason="unwind_pending")
    print(f"site LeakDirect.leakBuffer {held} bytes, partial stacks {partial} bytes, "
          f"unwind_pending {pending:.0f} allocations")
    check(within(held + partial, truth, 0.10),
          f"site LeakDirect.leakBuffer holds {held}, partial stacks {partial}, truth {truth}")
    check(partial <= pending * SIZE, f"{partial} bytes in partial stacks, only {pending:.0f} "
          "allocations counted unwind_pending")
    check(held >= truth / 2, f"site LeakDirect.leakBuffer holds only {held} of {truth}")
    top = max(leak, key=lambda s: s["outstanding_bytes"])
    names = symbols(top)
    check(in_order(names, ["malloc", "Unsafe_AllocateMemory0",
                           "java.nio.DirectByteBuffer.<init>(int)", "LeakDirect.leakBuffer(int)"]),
          f"frames: {names}")
    # The walk goes on through the Java frames to the JVM's native ones that called them.
    below = names[names.index("LeakDirect.leakBuffer(int)"):]
    check(any(n.startswith("JavaCalls::call_helper(") for n in below), f"frames: {names}")


def python312():
    """A CPython 3.12 or later: Debian 12 has 3.11 only; this machine's pyenv has newer ones
    (the interpreter itself, not pyenv's shim, whose pid is not the interpreter's)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(os.path.join(root, "versions", "3.1[2-9]*", "bin", "python3.1[2-9]")))
    check(found, f"no CPython 3.12+ under {root}/versions: this test needs one (python3.12 or "
          "later with the perf trampoline; Debian 12 packages only 3.11)")
    return found[-1]


def python_leak(cleanup, interpreter, *flags):
    """Runs the bytearray leak under `interpreter`, checks the process's growth; returns
    (truth, stacks)."""
    script = os.path.join(PROGS, "python", "leak_bytearray.py")
    fixture, daemon, before, truth = warm_leak(cleanup, "python", interpreter, *flags, script,
                                               str(SIZE), str(COUNT))
    time.sleep(2 * INTERVAL)
    grew = daemon.process(fixture.pid)["outstanding_bytes"] - before
    stacks = daemon.stacks(fixture.pid, 1000)
    for s in stacks[:3]:
        print(s["site"], s["outstanding_bytes"], symbols(s)[:16])
    print(f"process grew by {grew} while leaking {truth}")
    check(within(grew, truth, 0.10), f"process grew by {grew}, truth {truth}")
    return truth, stacks


def test_python_perf_trampoline(cleanup):
    script = os.path.join(PROGS, "python", "leak_bytearray.py")
    truth, stacks = python_leak(cleanup, python312(), "-X", "perf")
    site = f"py::leak_buffers:{script}"
    leak = [s for s in stacks if s["site"] == site]
    check(leak, f"no stack with site {site}: {[s['site'] for s in stacks]}")
    held = sum(s["outstanding_bytes"] for s in leak)
    check(within(held, truth, 0.10), f"{site} holds {held}, truth {truth}")
    names = symbols(max(leak, key=lambda s: s["outstanding_bytes"]))
    check(in_order(names, ["malloc", "PyByteArray_Resize", site, f"py::main:{script}",
                           f"py::<module>:{script}"]), f"frames: {names}")


def test_python_debian_311(cleanup):
    # What an operator sees on Debian 12's own python3: the right bytes per process and per
    # stack, under the interpreter's C functions; no Python function names (docs/
    # configuration.md says why).
    truth, stacks = python_leak(cleanup, "/usr/bin/python3.11")
    leak = [s for s in stacks if "PyByteArray_Resize" in symbols(s)]
    held = sum(s["outstanding_bytes"] for s in leak)
    check(within(held, truth, 0.10), f"stacks through PyByteArray_Resize hold {held}, "
          f"truth {truth}")
    check(len(leak) == 1, f"{len(leak)} stacks through PyByteArray_Resize")
    check(in_order(symbols(leak[0]), ["malloc", "PyByteArray_Resize", "_PyEval_EvalFrameDefault",
                                      "Py_RunMain"]), f"frames: {symbols(leak[0])}")
    check(not any(n.startswith("py::") for s in stacks for n in symbols(s)),
          "Python frames named on 3.11")


if __name__ == "__main__":
    require_root()
    run({"java_direct_buffers": test_java_direct_buffers,
         "python_perf_trampoline": test_python_perf_trampoline,
         "python_debian_311": test_python_debian_311})
