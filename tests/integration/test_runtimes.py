"""Root tests: leaks in managed runtimes.

Java (tests/progs/java/LeakDirect.java, the reference article's demonstration): direct
buffers kept and never released. The JVM mallocs their memory (Unsafe_AllocateMemory0 ->
os::malloc); its JIT-compiled frames are walked by frame pointer (-XX:+PreserveFramePointer)
and named from /tmp/perf-PID.map, which `jcmd PID Compiler.perfmap` writes.

Python (tests/progs/python/leak_bytearray.py, the article's other demonstration): bytearrays
kept in a list, leaked in leak_buffers() called from main() called from <module>. The Python
frames are read from the interpreter's own state at each allocation (no -X perf needed):
Debian 12's python3.11, Debian 11's python3.9 and Debian 13's python3.13 (chrooted in cached
root file systems), and pyenv's 3.12 (with and without -X perf, whose perf-map frames must not
double them); a C extension's own allocating function (tests/progs/python/extleak.c, built
for pyenv's 3.12); a program embedding libpython3.12 (tests/progs/python/embed.c); and pyenv's
3.8, which has no offsets: native frames only."""
import functools
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import debian_rootfs  # noqa: E402

from lwtest import (Daemon, Fixture, check, in_order, metric, pid_rules, require_root, run,
                    start, symbols, wait_until, within)

INTERVAL = 1.0
PROGS = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "progs"))
SIZE, COUNT, WARMUP = 65536, 1000, 5000
JAVA_WARMUP = 50000  # calls of LeakHot.fillCache's loop: C2 compiles it


class Removed:
    """A file the test makes the JVM write, or a directory it makes, removed at the end."""

    def __init__(self, path):
        self.path = path

    def stop(self):
        if os.path.isdir(self.path):
            shutil.rmtree(self.path)
        elif os.path.exists(self.path):
            os.remove(self.path)


class Killed:
    """A process the test started in namespaces of its own (not a child of the test's): killed
    at the end."""

    def __init__(self, pid):
        self.pid = pid

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def tool(name):
    path = shutil.which(name)
    check(path, f"{name} not found: scripts/deps.sh installs openjdk-17-jdk-headless")
    return path


def warm_leak(cleanup, name, *argv):
    """Starts a runtime fixture (argv, through env) and leaks with it (watch_and_leak)."""
    fixture = start(cleanup, Fixture(*argv, prefix=("/usr/bin/env",)))
    start(cleanup, Removed(f"/tmp/perf-{fixture.pid}.map"))
    return watch_and_leak(cleanup, name, fixture)


def watch_and_leak(cleanup, name, fixture):
    """Watches a started fixture with unwind: dwarf, lets it warm its path up ("warm"), then
    leak ("leaked"). Returns the fixture, the daemon, the process's outstanding bytes before
    the leak, and what it says it leaked."""
    daemon = start(cleanup, Daemon(pid_rules([(name, fixture.pid, "dwarf")])))
    wait_until(lambda: daemon.process(fixture.pid), 20, f"the {name} fixture to be attached")
    fixture.go()
    fixture.expect("warm")
    time.sleep(2 * INTERVAL)
    before = daemon.process(fixture.pid)["outstanding_bytes"]
    fixture.go("go.leak")
    return fixture, daemon, before, int(fixture.expect("leaked"))


def leak_stacks(fixture, daemon, before, truth):
    """After a leak: checks the process grew by the leaked bytes within 10%; returns its
    stacks."""
    time.sleep(2 * INTERVAL)
    grew = daemon.process(fixture.pid)["outstanding_bytes"] - before
    stacks = daemon.stacks(fixture.pid, 1000)
    for s in stacks[:3]:
        print(s["site"], s["outstanding_bytes"], symbols(s)[:16])
    print(f"process grew by {grew} while leaking {truth}")
    check(within(grew, truth, 0.10), f"process grew by {grew}, truth {truth}")
    return stacks


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


# The JDKs the Java tests run under: Debian 12's openjdk-17 on the host (the source launcher
# runs the fixtures), and Debian 11's openjdk-11 and Debian 13's openjdk-21 chrooted in cached
# root file systems that hold only their JRE (the fixtures are compiled on the host for Java 11).
JDK_ROOTS = {
    11: ("jdk11", "bullseye", "openjdk-11-jre-headless"),
    21: ("jdk21", "trixie", "openjdk-21-jre-headless"),
}


def java_fixture(cleanup, jdk, main, *args, prefix=(), tmpdir=None):
    """tests/progs/java/MAIN.java run with args by JDK `jdk` (17: the host's java, under
    `prefix`; 11, 21: chrooted in their root file systems). Returns the started fixture."""
    source = os.path.join(PROGS, "java", main + ".java")
    if jdk == 17:
        return start(cleanup, Fixture(*prefix, tool("java"), source, *args,
                                      prefix=("/usr/bin/env",), tmpdir=tmpdir))
    check(not prefix, "namespaces of their own only for the host's JDK")
    name, suite, package = JDK_ROOTS[jdk]
    classes = start(cleanup, Removed(tempfile.mkdtemp(prefix="lw-java-classes-")))
    out = subprocess.run([tool("javac"), "--release", "11", "-d", classes.path, source],
                         capture_output=True, text=True, timeout=120)
    check(out.returncode == 0, f"javac {source}: {out.stdout} {out.stderr}")
    return start(cleanup, InRoot(name, suite, [package], [classes.path],
                                 f"/usr/lib/jvm/java-{jdk}-openjdk-amd64/bin/java", "-cp",
                                 "/root/" + os.path.basename(classes.path), main, *args))


def java_hot(cleanup, *prefix, jdk=17):
    """LeakHot.java under a plain `java` (no flags), watched with the default unwinding while
    it warms its path up (the JIT compiles fillCache; leakwatchd asks the JVM for its perf map
    when it starts watching it, and again when its stacks hold compiled code the map does not
    name yet), then leaking. Returns the fixture, the daemon, the JVM's host pid, its
    outstanding bytes before the leak and the truth. `prefix` runs java inside other namespaces
    (then the JVM's host pid is the prefix's child's); `jdk` as java_fixture."""
    args = (str(SIZE), str(COUNT), str(JAVA_WARMUP))
    if prefix:
        # The prefix may mount a /tmp of its own, which hides a source tree under /tmp (a CI
        # clone): the JVM reads a copy from /var/tmp.
        copy_dir = start(cleanup, Removed(tempfile.mkdtemp(prefix="lw-java-", dir="/var/tmp")))
        source = shutil.copy(os.path.join(PROGS, "java", "LeakHot.java"), copy_dir.path)
        fixture = start(cleanup, Fixture(*prefix, tool("java"), source, *args,
                                         prefix=("/usr/bin/env",), tmpdir="/var/tmp"))
    else:
        fixture = java_fixture(cleanup, jdk, "LeakHot", *args, tmpdir="/var/tmp")
    pid = jvm_host_pid(fixture.proc.pid) if prefix else fixture.pid
    if prefix:
        start(cleanup, Killed(pid))
    start(cleanup, Removed(f"/tmp/perf-{pid}.map"))
    daemon = start(cleanup, Daemon(pid_rules([("java", pid, None)])))
    wait_until(lambda: daemon.process(pid), 20, "the JVM to be attached")
    fixture.go()
    fixture.expect("warm")
    # The perf map the JVM wrote when leakwatchd started watching it (the JVM's own code cache
    # names what was compiled later).
    perf_map = f"/proc/{pid}/root/tmp/perf-{fixture.pid}.map"
    if jdk != 11:  # JDK 11 has no Compiler.perfmap: its code cache alone names what it compiled
        wait_until(lambda: os.path.exists(perf_map), 10, "the JVM to write its perf map")
    wait_until(lambda: [s for s in daemon.stacks(pid, 1000) if s["site"] == "LeakHot.fillCache"],
               10, "the warm-up's stacks to be named LeakHot.fillCache")
    before = daemon.process(pid)["outstanding_bytes"]
    before_site = site_bytes(daemon, pid)
    fixture.go("go.leak")
    return fixture, daemon, pid, before, before_site, int(fixture.expect("leaked"))


def site_bytes(daemon, pid, site="LeakHot.fillCache"):
    return sum(s["outstanding_bytes"] for s in daemon.stacks(pid, 1000) if s["site"] == site)


def jvm_host_pid(launcher):
    """The host pid of the java process `launcher` (unshare) runs in new namespaces."""
    def find():
        for task in os.listdir(f"/proc/{launcher}/task"):
            with open(f"/proc/{launcher}/task/{task}/children") as f:
                for child in f.read().split():
                    with open(f"/proc/{child}/comm") as c:
                        if c.read().strip() == "java":
                            return int(child)
        return None
    return wait_until(find, 20, "the JVM under unshare")


def check_java_site(daemon, pid, before, before_site, truth):
    """The leak is charged to LeakHot.fillCache, its bytes within 10% of the truth."""
    site = "LeakHot.fillCache"
    # Stacks are named within a few samples (a frame's name is read on the loader).
    try:
        wait_until(lambda: within(site_bytes(daemon, pid) - before_site, truth, 0.10), 30,
                   f"the leak's bytes under site {site}")
    except Exception as e:
        print(e)
    stacks = daemon.stacks(pid, 1000)
    for s in stacks[:4]:
        print(s["site"], s["outstanding_bytes"], symbols(s)[:14])
    grew = daemon.process(pid)["outstanding_bytes"] - before
    held = site_bytes(daemon, pid) - before_site
    pending = metric(daemon, "leakwatch_lost_events_total", reason="unwind_pending")
    print(f"process grew by {grew}, site {site} grew by {held}, truth {truth}, "
          f"unwind_pending {pending:.0f}")
    check(within(grew, truth, 0.10), f"process grew by {grew}, truth {truth}")
    # As in java_direct_buffers: when the JIT compiles again during the leak, the allocations
    # made through each new return address until its rule is in keep partial stacks
    # (unwind_pending), ending inside the JVM's allocation path.
    partial = sum(s["outstanding_bytes"] for s in stacks
                  if "Unsafe_AllocateMemory0" in symbols(s) and s["site"] == "[unknown]")
    print(f"partial stacks {partial}")
    check(within(held + partial, truth, 0.10),
          f"site {site} grew by {held}, partial stacks {partial}, truth {truth}")
    check(partial <= pending * SIZE, f"{partial} bytes in partial stacks, only {pending:.0f} "
          "allocations counted unwind_pending")
    check(held >= 0.8 * truth, f"site {site} grew by only {held} of {truth}")
    top = max((s for s in stacks if s["site"] == site), key=lambda s: s["outstanding_bytes"])
    names = symbols(top)
    check(in_order(names, ["malloc", "Unsafe_AllocateMemory0", "LeakHot.fillCache(int, int)"]),
          f"frames: {names}")
    # The walk goes on past the compiled frame (no frame pointer in it) to main, interpreted
    # (named from its interpreter frame).
    below = names[names.index("LeakHot.fillCache(int, int)") + 1:]
    check("LeakHot.main(java.lang.String[])" in below, f"frames: {names}")
    # The call stub that called main is named, by the perf map or (JDK 11) the code cache.
    stub = below[below.index("LeakHot.main(java.lang.String[])") + 1]
    check(stub.startswith("StubRoutines ("), f"frames: {names}")
    return names


def test_java_hot_default_flags(cleanup, jdk=17):
    # No -XX:+PreserveFramePointer and no jcmd: leakwatchd has the JVM write its perf map (JDK
    # 17 and later), and walks and names the compiled frames from the JVM's code cache.
    fixture, daemon, pid, before, before_site, truth = java_hot(cleanup, jdk=jdk)
    perf_map = f"/proc/{pid}/root/tmp/perf-{pid}.map"
    if jdk == 11:
        check(not os.path.exists(perf_map), "a perf map from JDK 11, which has no Compiler.perfmap")
        said = [line for line in daemon.log_text().splitlines()
                if "the JVM does not write a perf map" in line]
        print("\n".join(said))
        check(len(said) == 1 and "Unknown diagnostic command" in said[0],
              f"{len(said)} log lines say JDK 11 writes no perf map")
    else:
        check(os.path.exists(perf_map), "no perf map: the daemon did not attach")
    check_java_site(daemon, pid, before, before_site, truth)


def test_java_hot_namespaces(cleanup):
    # The JVM in pid and mount namespaces of its own, with a /tmp of its own: leakwatchd names
    # its files by its pid there (1) and reaches them through /proc/PID/root.
    fixture, daemon, pid, before, before_site, truth = java_hot(
        cleanup, "unshare", "--pid", "--mount", "--fork", "--propagation", "private", "sh", "-c",
        'mount -t tmpfs tmpfs /tmp && exec "$0" "$@"')
    check(not os.path.exists(f"/tmp/perf-{pid}.map"), "a perf map in the host's /tmp")
    check(os.path.exists(f"/proc/{pid}/root/tmp/perf-1.map"),
          "no /tmp/perf-1.map in the JVM's own /tmp")
    check_java_site(daemon, pid, before, before_site, truth)


def test_java_interpreted(cleanup, jdk=17):
    # The article's demo as operators run it: a method called 4 times a second stays
    # interpreted; its frame is named from the Method* the interpreter frame holds, read
    # through the JVM's own VMStructs. No JVM flag, default configuration.
    fixture = java_fixture(cleanup, jdk, "LeakSlow", *LEAK_SLOW_ARGS)
    start(cleanup, Removed(f"/tmp/perf-{fixture.pid}.map"))
    daemon = start(cleanup, Daemon(pid_rules([("java", fixture.pid, None)])))
    check_interpreted_leak(fixture, daemon)


LEAK_SLOW_ARGS = ("262144", "40")  # LeakSlow.java: 40 direct buffers of 256 KiB, 4 a second


def check_interpreted_leak(fixture, daemon):
    """LeakSlow.java watched by `daemon`: let it leak; its interpreted leakBuffer is the site of
    the leak's bytes (within 10%), with the JVM's frames in order below it."""
    pid = fixture.pid
    wait_until(lambda: daemon.process(pid), 20, "the JVM to be attached")
    time.sleep(2 * INTERVAL)
    before = daemon.process(pid)["outstanding_bytes"]
    fixture.go()
    truth = int(fixture.expect("leaked"))
    site = "LeakSlow.leakBuffer"
    # On a loaded machine the last allocations may be counted a few intervals late.
    try:
        wait_until(lambda: within(site_bytes(daemon, pid, site), truth, 0.10), 20,
                   f"the leak's bytes under site {site}")
    except Exception as e:
        print(e)
    stacks = daemon.stacks(pid, 1000)
    for s in stacks[:4]:
        print(s["site"], s["outstanding_bytes"], symbols(s)[:16])
    leak = [s for s in stacks if s["site"] == site]
    held = sum(s["outstanding_bytes"] for s in leak)
    grew = daemon.process(pid)["outstanding_bytes"] - before
    pending = metric(daemon, "leakwatch_lost_events_total", reason="unwind_pending")
    print(f"process grew by {grew}, site {site} holds {held}, truth {truth}, "
          f"unwind_pending {pending:.0f}")
    check(leak, f"no stack with site {site}: {[s['site'] for s in stacks[:10]]}")
    check(within(held, truth, 0.10), f"site {site} holds {held}, truth {truth}")
    names = symbols(max(leak, key=lambda s: s["outstanding_bytes"]))
    check(in_order(names, ["malloc", "Unsafe_AllocateMemory0",
                           "java.nio.DirectByteBuffer.<init>(int)",
                           "java.nio.ByteBuffer.allocateDirect(int)", "LeakSlow.leakBuffer(int)",
                           "LeakSlow.main(java.lang.String[])"]), f"frames: {names}")
    check(not any(n == "Interpreter" for n in names), f"an unnamed interpreter frame: {names}")


def test_java_attach_off(cleanup):
    # jvm_attach: false: the daemon leaves the JVM alone (no perf map, no attach listener).
    java = tool("java")
    fixture = start(cleanup, Fixture(java, os.path.join(PROGS, "java", "LeakHot.java"),
                                     str(SIZE), "1", "1000", prefix=("/usr/bin/env",)))
    start(cleanup, Removed(f"/tmp/perf-{fixture.pid}.map"))
    config = pid_rules([("java", fixture.pid, None)]) + "    jvm_attach: false\n"
    daemon = start(cleanup, Daemon(config))
    wait_until(lambda: daemon.process(fixture.pid), 20, "the JVM to be attached")
    fixture.go()
    fixture.expect("warm")
    fixture.go("go.leak")
    fixture.expect("leaked")
    time.sleep(3 * INTERVAL)
    check(not os.path.exists(f"/tmp/perf-{fixture.pid}.map"), "a perf map written")
    check(not os.path.exists(f"/tmp/.java_pid{fixture.pid}"), "an attach listener started")


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
    (truth, stacks, daemon)."""
    script = os.path.join(PROGS, "python", "leak_bytearray.py")
    fixture, daemon, before, truth = warm_leak(cleanup, "python", interpreter, *flags, script,
                                               str(SIZE), str(COUNT))
    return truth, leak_stacks(fixture, daemon, before, truth), daemon


def test_python_perf_trampoline(cleanup):
    # 3.12 with -X perf: the interpreter's perf map names a trampoline per Python call
    # ("py::leak_buffers:FILE"); the Python frames read from the interpreter name the same
    # calls, once each: the trampolines' frames are left out.
    truth, stacks, daemon = python_leak(cleanup, pyenv_python("3.12"), "-X", "perf")
    check_python_leak(truth, stacks)


def script_line(script, text):
    """The line number of the first line of `script` that holds `text`."""
    with open(script) as f:
        for number, line in enumerate(f, 1):
            if text in line:
                return number
    raise AssertionError(f"{text!r} not in {script}")


def python_frames(stack):
    """The Python frames of a stack, innermost first: (function, file, line)."""
    return [(f.get("symbol", ""), f.get("file", ""), f.get("line", 0)) for f in stack["frames"]
            if f.get("module") == "[python]"]


def held_by_site(stacks, site, truth):
    """The stacks whose site is `site` hold `truth` bytes within 10%; returns the largest of
    them (its frames printed)."""
    leak = [s for s in stacks if s["site"] == site]
    check(leak, f"no stack with site {site}: {[s['site'] for s in stacks[:10]]}")
    held = sum(s["outstanding_bytes"] for s in leak)
    print(f"site {site} holds {held} in {len(leak)} stacks, truth {truth}")
    check(within(held, truth, 0.10), f"site {site} holds {held}, truth {truth}")
    top = max(leak, key=lambda s: s["outstanding_bytes"])
    print("frames:", [(f.get("symbol"), f.get("file", ""), f.get("line", 0))
                      for f in top["frames"]])
    return top


def check_python_leak(truth, stacks, script=None):
    """The bytearray leak's stack names leak_buffers as its site, its callers main and
    <module>, each at its line of the script, under the interpreter's PyByteArray_Resize; it
    holds the leaked bytes within 10%. `script`: its path as the process sees it."""
    source = os.path.join(PROGS, "python", "leak_bytearray.py")
    script = script or source
    top = held_by_site(stacks, "leak_buffers", truth)
    names = symbols(top)
    check(in_order(names, ["PyByteArray_Resize", "leak_buffers", "main", "<module>"]),
          f"frames: {names}")
    want = [("leak_buffers", script, script_line(source, "kept.append(bytearray(size))")),
            ("main", script, script_line(source, "    leak_buffers(size, count)")),
            ("<module>", script, script_line(source, "    main()"))]
    check(python_frames(top) == want, f"Python frames {python_frames(top)}, want {want}")
    # Each Python frame stands once, where the interpreter ran it: no evaluation loop frame
    # is left between them, and no perf map name doubles them.
    check(not any(n.startswith("py::") for n in names), f"perf map frames left: {names}")
    return top


def pyenv_python(version):
    """pyenv's CPython `version` (e.g. "3.12"): the interpreter itself, not pyenv's shim."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin",
                                          f"python{version}")))
    check(found, f"no CPython {version} under {root}/versions: this test needs pyenv's")
    return found[-1]


def build_extension(cleanup, interpreter):
    """Builds tests/progs/python/extleak.c against the interpreter's own headers, into a
    directory of its own; returns the directory."""
    out = subprocess.run(
        [interpreter, "-c", "import sysconfig; print(sysconfig.get_paths()['include']); "
         "print(sysconfig.get_config_var('EXT_SUFFIX'))"],
        capture_output=True, text=True, timeout=60, check=True)
    include, suffix = out.stdout.split()
    where = start(cleanup, Removed(tempfile.mkdtemp(prefix="leakwatch-extleak-"))).path
    subprocess.run(["cc", "-O2", "-g", "-fPIC", "-shared", f"-I{include}",
                    os.path.join(PROGS, "python", "extleak.c"),
                    "-o", os.path.join(where, "extleak" + suffix)], check=True, timeout=120)
    return where


def test_python_312(cleanup):
    # pyenv's 3.12 (libpython3.12.so), without -X perf.
    truth, stacks, daemon = python_leak(cleanup, pyenv_python("3.12"))
    check_python_leak(truth, stacks)


def test_python_c_extension(cleanup):
    # A leak inside a C extension's own function: that function is the site, and its Python
    # caller follows it in the stack, at the line of the call.
    interpreter = pyenv_python("3.12")
    where = build_extension(cleanup, interpreter)
    script = os.path.join(PROGS, "python", "leak_extension.py")
    fixture, daemon, before, truth = warm_leak(cleanup, "python", interpreter, script, where,
                                               str(SIZE), str(COUNT))
    stacks = leak_stacks(fixture, daemon, before, truth)
    top = held_by_site(stacks, "extleak_alloc_block", truth)
    names = symbols(top)
    check(in_order(names, ["malloc", "extleak_alloc_block", "extleak_leak",
                           "leak_through_extension", "main", "<module>"]), f"frames: {names}")
    want = [("leak_through_extension", script, script_line(script, "    extleak.leak(size, count)")),
            ("main", script, script_line(script, "    leak_through_extension(size, count)")),
            ("<module>", script, script_line(script, "    main()"))]
    check(python_frames(top) == want, f"Python frames {python_frames(top)}, want {want}")


def test_python_embedded(cleanup):
    # A program of its own (not named python) that embeds pyenv's 3.12 through libpython3.12.so
    # (tests/progs/python/embed.c) and runs the bytearray leak.
    interpreter = pyenv_python("3.12")
    config = interpreter + "-config"
    flags = subprocess.run([config, "--includes"], capture_output=True, text=True, check=True,
                           timeout=60).stdout.split()
    libs = subprocess.run([config, "--ldflags", "--embed"], capture_output=True, text=True,
                          check=True, timeout=60).stdout.split()
    libdir = os.path.join(os.path.dirname(os.path.dirname(interpreter)), "lib")
    where = start(cleanup, Removed(tempfile.mkdtemp(prefix="leakwatch-embed-"))).path
    program = os.path.join(where, "embed_leak")
    subprocess.run(["cc", "-O2", "-g", *flags, os.path.join(PROGS, "python", "embed.c"), "-o",
                    program, *libs, f"-Wl,-rpath,{libdir}"], check=True, timeout=120)
    script = os.path.join(PROGS, "python", "leak_bytearray.py")
    fixture, daemon, before, truth = warm_leak(cleanup, "python", program, script, str(SIZE),
                                               str(COUNT))
    check_python_leak(truth, leak_stacks(fixture, daemon, before, truth))


def test_python_unsupported(cleanup):
    # pyenv's 3.8: a version leakwatch has no offsets for. Its stacks keep their native frames
    # and bytes; the log says so once, and the metric counts the process once.
    truth, stacks, daemon = python_leak(cleanup, pyenv_python("3.8"))
    leak = [s for s in stacks if "PyByteArray_Resize" in symbols(s)]
    held = sum(s["outstanding_bytes"] for s in leak)
    check(within(held, truth, 0.10), f"stacks through PyByteArray_Resize hold {held}, "
          f"truth {truth}")
    check(not any(f.get("module") == "[python]" for s in stacks for f in s["frames"]),
          "Python frames in a 3.8 process's stacks")
    said = [line for line in daemon.log_text().splitlines()
            if "no frame offsets for CPython 3.8" in line]
    print("\n".join(said))
    check(len(said) == 1, f"{len(said)} log lines say 3.8 has no offsets")
    counted = metric(daemon, "leakwatch_lost_events_total", reason="python_unsupported")
    check(counted == 1, f"python_unsupported counted {counted}, want 1")


class InRoot(Fixture):
    """A fixture chrooted in a copy-on-write overlay of a cached root file system
    (tests/harness/debian_rootfs.py) made with `packages`: `files` (paths on the host) are
    copied to its /root, and argv runs there with /proc mounted; leakwatchd on the host finds
    its files through /proc/PID/root."""

    def __init__(self, name, suite, packages, files, *argv):
        rootfs = debian_rootfs.ensure(name, suite, packages)
        self.overlay = debian_rootfs.Overlay(rootfs, tempfile.mkdtemp(prefix="leakwatch-root-"))
        try:
            for path in files:
                target = self.overlay.path("/root/" + os.path.basename(path))
                if os.path.isdir(path):
                    shutil.copytree(path, target)
                else:
                    shutil.copy(path, target)
            os.makedirs(self.overlay.path("/root/go"))
            # The JVM reads /proc/self (its stack, its cgroup limits); removed with the overlay.
            subprocess.run(["mount", "-t", "proc", "proc", self.overlay.path("/proc")],
                           check=True)
            # env(1) sets FIXTURE_GO to the go file's path inside the root.
            super().__init__("FIXTURE_GO=/root/go/go", "/usr/sbin/chroot", self.overlay.root,
                             *argv, prefix=("/usr/bin/env",))
        except BaseException:
            self.overlay.remove()
            raise
        # The fixture waits for its go files inside its root.
        shutil.rmtree(self.dir)
        self.dir = self.overlay.path("/root/go")

    def stop(self):
        super().stop()
        self.overlay.remove()


def python_in_root(cleanup, name, suite, interpreter):
    """The bytearray leak under a Debian release's python, named as on the host."""
    fixture = start(cleanup, InRoot(name, suite, [f"{os.path.basename(interpreter)}-minimal"],
                                    [os.path.join(PROGS, "python", "leak_bytearray.py")],
                                    interpreter, "/root/leak_bytearray.py", str(SIZE),
                                    str(COUNT)))
    _, daemon, before, truth = watch_and_leak(cleanup, "python", fixture)
    stacks = leak_stacks(fixture, daemon, before, truth)
    check_python_leak(truth, stacks, script="/root/leak_bytearray.py")


def test_python_debian_11(cleanup):
    # Debian 11's python3.9 (3.9.2), libpython linked into the executable.
    python_in_root(cleanup, "python39", "bullseye", "/usr/bin/python3.9")


def test_python_debian_13(cleanup):
    # Debian 13's python3.13.
    python_in_root(cleanup, "python313", "trixie", "/usr/bin/python3.13")


def test_python_debian_311(cleanup):
    # Debian 12's own python3 (3.11, libpython linked into the executable, no -X perf): the
    # Python frames are read from the interpreter's thread state at each allocation.
    truth, stacks, daemon = python_leak(cleanup, "/usr/bin/python3.11")
    check_python_leak(truth, stacks)


if __name__ == "__main__":
    require_root()
    run({"java_direct_buffers": test_java_direct_buffers,
         "java_hot_default_flags": test_java_hot_default_flags,
         "java_hot_namespaces": test_java_hot_namespaces,
         "java_attach_off": test_java_attach_off,
         "java_interpreted": test_java_interpreted,
         **{f"{name}_jdk{jdk}": functools.partial(test, jdk=jdk) for jdk in JDK_ROOTS
            for name, test in (("java_interpreted", test_java_interpreted),
                               ("java_hot_default_flags", test_java_hot_default_flags))},
         "python_perf_trampoline": test_python_perf_trampoline,
         "python_debian_311": test_python_debian_311,
         "python_312": test_python_312,
         "python_c_extension": test_python_c_extension,
         "python_embedded": test_python_embedded,
         "python_unsupported": test_python_unsupported,
         "python_debian_11": test_python_debian_11,
         "python_debian_13": test_python_debian_13})
