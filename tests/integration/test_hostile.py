"""Root tests: watched processes that try to crash, stall or steer leakwatchd (issue 15).

Each test makes one process do what a hostile local user can: a name that is not UTF-8, a
perf map that is a FIFO, a symlink or huge, a library truncated under the daemon, a fake libc
claiming the real one's build-id, a 2 MiB command line against a pathological pattern, a move
between cgroups. Every test checks that the daemon keeps serving (/metrics answers quickly,
the leak's bytes keep updating, exactly) and that what it refused is counted."""
import os
import resource
import shutil
import struct
import subprocess
import tempfile
import time
import uuid

from lwtest import (FIXTURES, Daemon, Failure, Fixture, check, metric, require_root, run, start,
                    wait_until)

INTERVAL = 1.0
LEAK, TICKS, TICK_MS = 4096, 40, 25


class Cleanup:
    """Runs a function at cleanup (a file, a directory, a cgroup)."""

    def __init__(self, fn):
        self.fn = fn

    def stop(self):
        self.fn()


def scratch(cleanup):
    d = tempfile.mkdtemp(prefix="lw-hostile-")
    start(cleanup, Cleanup(lambda: shutil.rmtree(d, ignore_errors=True)))
    return d


def pid_config(rules):
    """One rule per (name, pid, extra YAML lines under match, then under the rule), with its
    allocator probes from the start (tracking: full)."""
    text = f"interval: {int(INTERVAL * 1000)}ms\nwatch:\n"
    for name, pid, extra in rules:
        text += f"  - name: {name}\n    tracking: full\n    match:\n      pid: {pid}\n{extra}"
    return text


def refused(daemon, reason):
    return metric(daemon, "leakwatch_files_refused_total", reason=reason)


def site_bytes(daemon, pid, site):
    return daemon.site_bytes(pid).get(site, 0)


def check_serving(daemon, what):
    """/metrics answers within a second and a sample was taken in the last 3 intervals."""
    t0 = time.monotonic()
    ms = daemon.metrics()
    took = time.monotonic() - t0
    check(took < 1.0, f"{what}: /metrics took {took:.2f}s")
    last = [v for n, l, v in ms if n == "leakwatch_last_sample_timestamp_seconds"][0]
    check(time.time() - last < 3 * INTERVAL + 1,
          f"{what}: the last sample is {time.time() - last:.1f}s old: the loop is stalled")
    check(daemon.proc.poll() is None, f"{what}: leakwatchd exited")


def promtool_ok(text):
    promtool = shutil.which("promtool")
    check(promtool, "promtool is missing: install the prometheus package (scripts/deps.sh)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    check(r.returncode == 0, f"promtool check metrics: {r.stdout}{r.stderr}")


# ---- item 1: names that are not UTF-8 ----------------------------------------------------

def test_hostile_name(cleanup):
    """A copy of a leaking program saved as \\xff\\xfeleak, watched by a cmdline rule: every
    endpoint answers valid JSON, /metrics passes promtool, the log is valid UTF-8, and the
    name is shown with U+FFFD for each bad byte."""
    require_root()
    token = "lw-hostile-" + uuid.uuid4().hex[:12]
    d = scratch(cleanup)
    os.makedirs(os.path.join(d, token))
    path = os.path.join(d, token, "\udcff\udcfeleak")  # the bytes ff fe in a str path
    shutil.copy(os.path.join(FIXTURES, "leak_steady"), path)
    # A rule that only this program's command line matches (its directory's random name).
    daemon = start(cleanup, Daemon(
        f"interval: 1s\nwatch:\n  - name: hostile\n    tracking: full\n    match:\n"
        f"      cmdline: '{token}'\n"))
    fixture = start(cleanup, Fixture(path, str(LEAK), str(TICKS), str(TICK_MS)))
    wait_until(lambda: daemon.process(fixture.pid), 10, "the hostile-named fixture to be watched")
    fixture.go()
    truth = int(fixture.expect("leaked"))
    wait_until(lambda: site_bytes(daemon, fixture.pid, "leak_record_entry") == truth, 10,
               f"leak_record_entry to hold {truth} bytes")
    shown = "\ufffd\ufffdleak"
    p = daemon.process(fixture.pid)
    check(p["comm"] == shown, f"comm shown as {p['comm']!r}")
    # Every endpoint: status and a body that decodes as UTF-8 (Daemon.get decodes strictly).
    for path in ("/", "/api/v1/processes", f"/api/v1/stacks?pid={fixture.pid}&top=5",
                 "/api/v1/leaks", "/metrics"):
        body = daemon.get(path)
        check(body, f"{path}: empty answer")
    try:
        daemon.get("/api/v1/kernel")
        raise Failure("/api/v1/kernel answered with kernel tracking off")
    except Exception as e:  # noqa: BLE001 - a 404 is the answer wanted
        check("404" in str(e), f"/api/v1/kernel: {e}")
    metrics = daemon.get("/metrics")
    check(f'comm="{shown}"' in metrics, "the comm label is not the shown name")
    promtool_ok(metrics)
    check(metric(daemon, "leakwatch_http_handler_failures_total") == 0,
          "an HTTP handler failed")
    log = daemon.log_text()  # opened as UTF-8: raises on an invalid byte
    check(f"({shown})" in log, "the log does not name the process by its shown name")
    check(daemon.proc.poll() is None, "leakwatchd exited")


# ---- item 2: hostile perf maps and files -------------------------------------------------

def jit_leak_with_map(cleanup, make_map):
    """jit_leak started, its perf map made by make_map(path, jit_address, jit_size) (removed at
    the end); returns the fixture, not yet watched."""
    fixture = start(cleanup, Fixture("jit_leak", str(LEAK), str(TICKS), str(TICK_MS)))
    fixture.expect("jit")
    parts = fixture.lines[-1].split()
    jit, size = int(parts[1], 16), int(parts[2], 16)
    map_path = f"/tmp/perf-{fixture.pid}.map"
    start(cleanup, Cleanup(lambda: os.path.lexists(map_path) and os.remove(map_path)))
    make_map(map_path, jit, size)
    return fixture


def jit_fixture(cleanup, make_map):
    """jit_leak, its perf map made hostile by make_map(path, jit_address, jit_size) before it
    is watched; returns the daemon and the fixture, the leak done."""
    fixture = jit_leak_with_map(cleanup, make_map)
    daemon = start(cleanup, Daemon(pid_config([("jit", fixture.pid, "")])))
    wait_until(lambda: daemon.process(fixture.pid), 10, "jit_leak to be watched")
    fixture.go()
    truth = int(fixture.expect("leaked"))
    check(truth == LEAK * TICKS, f"jit_leak leaked {truth}")
    return daemon, fixture, truth


def check_jit_leak_counted(daemon, fixture, truth, what):
    """The leak's bytes, to the byte, at leak_from_jit (the frame below the JIT code); the
    daemon serving all along."""
    wait_until(lambda: site_bytes(daemon, fixture.pid, "leak_from_jit") == truth, 15,
               f"{what}: leak_from_jit to hold {truth} bytes")
    check_serving(daemon, what)


def test_perf_map_fifo(cleanup):
    """The perf map is a FIFO: refused without blocking (it used to stall the main loop in the
    FIFO's open, for good, with SIGTERM unanswered)."""
    require_root()
    daemon, fixture, truth = jit_fixture(cleanup, lambda p, a, s: os.mkfifo(p, 0o600))
    check_jit_leak_counted(daemon, fixture, truth, "FIFO perf map")
    wait_until(lambda: refused(daemon, "not_regular_file") >= 1, 10,
               "the FIFO to be counted as refused")
    check("it is a FIFO" in daemon.log_text(), "the FIFO is not in the log")
    t0 = time.monotonic()
    daemon.stop()
    check(time.monotonic() - t0 < 10, f"leakwatchd took {time.monotonic() - t0:.1f}s to stop")
    check(daemon.proc.returncode == 0, f"leakwatchd exited with {daemon.proc.returncode}")


def test_perf_map_symlinks(cleanup):
    """The perf map is a symlink, to /dev/zero (endless) or to a host file (absolute): a perf
    map is never read through a symlink. And one that another user owns is not read either."""
    require_root()
    for target, reason in (("/dev/zero", "symlink"), ("/etc/passwd", "symlink")):
        cleanup_here = []
        try:
            daemon, fixture, truth = jit_fixture(
                cleanup_here, lambda p, a, s, t=target: os.symlink(t, p))
            check_jit_leak_counted(daemon, fixture, truth, f"perf map -> {target}")
            wait_until(lambda: refused(daemon, reason) >= 1, 10,
                       f"the symlink to {target} to be counted")
            frames = [f["symbol"] for s in daemon.stacks(fixture.pid) for f in s["frames"]]
            check(not any("root:" in f for f in frames), f"host file read as names: {frames}")
        finally:
            for c in reversed(cleanup_here):
                c.stop()

    def other_owner(path, jit, size):
        with open(path, "w") as f:
            f.write(f"{jit:x} {size:x} not_its_own\n")
        os.chown(path, 4242, 4242)
    daemon, fixture, truth = jit_fixture(cleanup, other_owner)
    check_jit_leak_counted(daemon, fixture, truth, "perf map of another user")
    wait_until(lambda: refused(daemon, "wrong_owner") >= 1, 10, "the other owner to be counted")
    names = {f["symbol"] for s in daemon.stacks(fixture.pid) for f in s["frames"]}
    check("not_its_own" not in names, f"a perf map of another user was read: {names}")


def test_perf_map_sparse(cleanup):
    """A 100 GiB sparse perf map: refused by its size (limits.file_size)."""
    require_root()

    def sparse(path, jit, size):
        with open(path, "w") as f:
            f.write(f"{jit:x} {size:x} jit_trampoline\n")
            f.truncate(100 << 30)
    daemon, fixture, truth = jit_fixture(cleanup, sparse)
    check_jit_leak_counted(daemon, fixture, truth, "100 GiB perf map")
    wait_until(lambda: refused(daemon, "too_large") >= 1, 10, "the 100 GiB map to be counted")
    rss = int(open(f"/proc/{daemon.proc.pid}/status").read().split("VmRSS:")[1].split()[0])
    check(rss < 200 * 1024, f"leakwatchd RSS {rss} KiB")


def test_perf_map_ten_million_lines(cleanup):
    """A perf map of 10 million lines: its first 1,000,000 are read (the JIT blob is named from
    them), the rest is not, and it says so."""
    require_root()

    def huge(path, jit, size):
        with open(path, "w") as f:
            f.write(f"{jit:x} {size:x} jit_trampoline\n")
            base = 0x100000000
            for chunk in range(100):
                f.write("".join(f"{base + (chunk * 100000 + i) * 0x20:x} 10 fn_{i}\n"
                                for i in range(100000)))
    t0 = time.monotonic()
    daemon, fixture, truth = jit_fixture(cleanup, huge)
    print(f"10,000,000-line perf map written in {time.monotonic() - t0:.1f}s "
          f"({os.path.getsize(f'/tmp/perf-{fixture.pid}.map') >> 20} MiB)")
    check_jit_leak_counted(daemon, fixture, truth, "10M-line perf map")
    wait_until(lambda: refused(daemon, "too_many_lines") >= 1, 20,
               "the 10M-line map to be counted as read in part")

    def named():
        return any(f["symbol"] == "jit_trampoline"
                   for s in daemon.stacks(fixture.pid) for f in s["frames"])
    wait_until(named, 20, "the JIT frame to be named from the map's first line")
    check_serving(daemon, "10M-line perf map")
    rss = int(open(f"/proc/{daemon.proc.pid}/status").read().split("VmRSS:")[1].split()[0])
    print(f"leakwatchd RSS after reading it: {rss >> 10} MiB")
    check(rss < 400 * 1024, f"leakwatchd RSS {rss} KiB")


def section_offsets(path):
    """{name: file offset} of the sections of an ELF64 file."""
    with open(path, "rb") as f:
        data = f.read()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
               for i in range(shnum)]
    names = headers[shstrndx][4]
    out = {}
    for h in headers:
        end = data.index(b"\0", names + h[0])
        out[data[names + h[0]:end].decode()] = h[4]
    return out


def test_truncated_elf(cleanup):
    """A library truncated on disk while its unwind tables are in use (unwind: dwarf): the
    tables were read into memory (never mapped: a mapping of a file truncated under it is a
    SIGBUS), so stacks through it stay complete; a fresh read of the truncated file is refused
    as malformed, counted."""
    require_root()
    d = scratch(cleanup)
    lib = os.path.join(d, "libleakwrap.so")
    shutil.copy(os.path.join(FIXTURES, "libleakwrap.so"), lib)
    go2 = os.path.join(d, "go2")
    fixture = start(cleanup, Fixture("trunc_leak", lib, str(LEAK), "20",
                                     env={"FIXTURE_GO2": go2}))
    daemon = start(cleanup, Daemon(pid_config([("trunc", fixture.pid, "    unwind: dwarf\n")])))
    wait_until(lambda: daemon.process(fixture.pid), 10, "trunc_leak to be watched")
    fixture.go()
    first = int(fixture.expect("first"))

    def complete(site):
        for s in daemon.stacks(fixture.pid, 100):
            syms = [f["symbol"] for f in s["frames"]]
            if s["site"] == site and "main" in syms:
                return s
        return None
    wait_until(lambda: complete("wrap_first"), 15, "a complete stack through wrap_first")
    # Cut the file where its .data page starts (the fixture never touches .data or .bss
    # again): .debug_frame (the unwind rules), the symbol tables and the section headers go.
    sections = section_offsets(lib)
    cut = sections[".data"] & ~0xfff
    check(sections[".debug_frame"] >= cut and sections[".got"] < cut,
          f"libleakwrap.so's layout is not the one this test needs: {sections}")
    os.truncate(lib, cut)
    open(go2, "w").close()
    second = int(fixture.expect("second"))
    wait_until(lambda: complete("wrap_second"), 15,
               "a complete stack through wrap_second, after the truncation")
    sites = daemon.site_bytes(fixture.pid)
    # wrap_second goes on leaking a block every 50 ms: at least what it said.
    check(sites.get("wrap_first", 0) == first and sites.get("wrap_second", 0) >= second,
          f"bytes per site {sites}, truth {first} and at least {second}")
    check_serving(daemon, "truncated library")
    # Read afresh (another daemon, caches empty), the truncated file has no section headers
    # to read symbols by: refused as malformed, counted; its frames keep module+offset.
    daemon2 = start(cleanup, Daemon(pid_config([("trunc", fixture.pid, "    unwind: dwarf\n")])))
    wait_until(lambda: refused(daemon2, "malformed") >= 1, 15,
               "the truncated library to be refused as malformed")
    check("its section headers cannot be read" in daemon2.log_text(),
          "the refusal is not in the log")
    check_serving(daemon2, "a truncated library read afresh")
    check_serving(daemon, "a truncated library")


# ---- item 3: a fake libc with the real build-id -----------------------------------------

def move_dynamic_symbol(path, name, delta):
    """Adds delta to the value of every .dynsym entry `name` of an ELF64 file, in place."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3a)

        def shdr(i):
            return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
        moved = 0
        for i in range(shnum):
            _, sh_type, _, _, offset, size, link, _, _, entsize = shdr(i)
            if sh_type != 11:  # SHT_DYNSYM
                continue
            stroff = shdr(link)[4]
            for at in range(offset, offset + size, entsize):
                st_name, = struct.unpack_from("<I", data, at)
                end = data.index(b"\0", stroff + st_name)
                if bytes(data[stroff + st_name:end]) == name:
                    value, = struct.unpack_from("<Q", data, at + 8)
                    struct.pack_into("<Q", data, at + 8, value + delta)
                    moved += 1
        f.seek(0)
        f.write(data)
    return moved


def test_fake_libc(cleanup):
    """Process A maps a fake libc.so.6 (the real one's bytes and build-id, its malloc symbol
    one byte into the real malloc's first instruction, `push %r12`); process B, with the real
    libc, is watched after A. B's probes come from B's own file: every malloc of B gives %r12
    back (a breakpoint one byte in makes the kernel run `push %rsp` instead, and malloc return
    with %r12 clobbered), and B's leak is counted to the byte. A's fake malloc is not where an
    instruction starts, so A is not probed at all."""
    require_root()
    d = scratch(cleanup)
    real = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
    fake = os.path.join(d, "fake", "libc.so.6")
    os.makedirs(os.path.dirname(fake))
    shutil.copy(real, fake)
    check(move_dynamic_symbol(fake, b"malloc", 1) >= 1, "no malloc in the fake's .dynsym")
    a = start(cleanup, Fixture("map_file", fake))
    count = 200
    b = start(cleanup, Fixture("keep_r12", str(LEAK), str(count)))
    daemon = start(cleanup, Daemon(pid_config([("faker", a.pid, ""), ("victim", b.pid, "")])))
    log = wait_until(lambda: (lambda t: t if f"pid {a.pid} (map_file)" in t and
                              "not where an instruction starts" in t else None)(
                                  daemon.log_text()), 10, "A's fake malloc to be refused")
    print([line for line in log.splitlines() if "not where an instruction" in line][0][:220])
    check(daemon.process(a.pid) is None, "A (the fake) is watched")
    wait_until(lambda: daemon.process(b.pid), 10, "B to be watched")
    b.go()
    truth = int(b.expect("leaked"))
    kept = int(b.expect("kept"))
    check(kept == count, f"B's malloc gave %r12 back in {kept} of {count} calls: its probe is "
          "not on an instruction boundary")
    wait_until(lambda: site_bytes(daemon, b.pid, "leak_keeping_r12") == truth, 10,
               f"B's leak_keeping_r12 to hold {truth} bytes")
    check(b.proc.poll() is None, f"B exited with {b.proc.returncode}")


# ---- item 4: command lines and cgroups ---------------------------------------------------

def test_cmdline_two_mib(cleanup):
    """A 2 MiB command line (16 arguments of 128 KiB - 1 of 'a', no 'c') against pathological
    patterns: with std::regex the daemon died of a stack overflow within a second. RE2 matches
    the command line (its first 1 MiB) in linear time: no match for (a|b)*c$ (anchored at the
    end: the fixture's own path may hold a c), a match for (a+)+$; the daemon serves all along.
    The rules are restricted by pid, so that no other process of this machine is matched."""
    require_root()
    # execve takes up to a quarter of the stack limit in arguments: 2 MiB needs more than 8.
    resource.setrlimit(resource.RLIMIT_STACK, (64 << 20, 64 << 20))
    args = ["a" * ((128 << 10) - 1)] * 16
    no = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), str(TICK_MS), *args))
    yes = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), str(TICK_MS), *args))
    size = len(open(f"/proc/{no.pid}/cmdline", "rb").read())
    check(size >= 2 << 20, f"the command line is {size} bytes")
    daemon = start(cleanup, Daemon(pid_config([
        ("nomatch", no.pid, "      cmdline: '(a|b)*c$'\n"),
        ("match", yes.pid, "      cmdline: '(a+)+$'\n")])))
    wait_until(lambda: daemon.process(yes.pid), 10, "the (a+)+$ process to be watched")
    check(daemon.process(no.pid) is None, "(a|b)*c$ matched a command line that ends in a")
    # A process started now is matched at its exec event: how long until it is watched.
    t0 = time.time()
    late = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), str(TICK_MS), *args))
    daemon2 = start(cleanup, Daemon(pid_config([
        ("late", late.pid, "      cmdline: '(x+x+)+y|(a+)+$'\n")])))
    p = wait_until(lambda: daemon2.process(late.pid), 10, "the late process to be watched")
    print(f"2 MiB command line: watched {(p['attached_at'] - t0) * 1000:.0f} ms after it was "
          f"started (daemon start included)")
    for d in (daemon, daemon2):
        check_serving(d, "2 MiB command lines")
    yes.go()
    truth = int(yes.expect("leaked"))
    wait_until(lambda: site_bytes(daemon, yes.pid, "leak_record_entry") == truth, 10,
               f"leak_record_entry to hold {truth} bytes")


def cgroup2_root():
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on a hybrid
    system)."""
    for line in open("/proc/self/mounts"):
        fields = line.split()
        if fields[2] == "cgroup2":
            return fields[1]
    raise Failure("no cgroup2 mount")


def move(pid, cgroup_dir):
    with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
        f.write(str(pid))


def test_cgroup_move(cleanup):
    """A rule by cgroup: a process is watched once it is moved into the cgroup the test made
    (matched again at the next rescan, at most 10 s later), counted to the byte there, and no
    longer watched once moved out. Combined with pid, so that nothing else matches it."""
    require_root()
    root = cgroup2_root()
    name = "lwtest-" + uuid.uuid4().hex[:10]
    cgroup = os.path.join(root, name)
    os.mkdir(cgroup)
    fixture = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), str(TICK_MS)))
    original = open(f"/proc/{fixture.pid}/cgroup").read()
    home = os.path.join(root, [line for line in original.splitlines()
                               if line.startswith("0::")][0][3:].lstrip("/"))

    def remove_cgroup():
        for pid in open(os.path.join(cgroup, "cgroup.procs")).read().split():
            move(int(pid), home)
        os.rmdir(cgroup)
    start(cleanup, Cleanup(remove_cgroup))
    daemon = start(cleanup, Daemon(pid_config([
        ("sliced", fixture.pid, f"      cgroup: '/{name}*'\n")])))
    time.sleep(2 * INTERVAL)
    check(daemon.process(fixture.pid) is None, "watched before it was moved into the cgroup")
    t0 = time.monotonic()
    move(fixture.pid, cgroup)
    wait_until(lambda: daemon.process(fixture.pid), 15, "the moved process to be watched")
    print(f"watched {time.monotonic() - t0:.1f}s after the move (the rescan is every 10s)")
    fixture.go()
    truth = int(fixture.expect("leaked"))
    wait_until(lambda: site_bytes(daemon, fixture.pid, "leak_record_entry") == truth, 10,
               f"leak_record_entry to hold {truth} bytes")
    labels = [l for n, l, v in daemon.metrics()
              if n == "leakwatch_outstanding_bytes" and l.get("pid") == str(fixture.pid)]
    check(len(labels) == 1 and labels[0].get("unit") == "", f"series labels {labels}")
    t0 = time.monotonic()
    move(fixture.pid, home)
    wait_until(lambda: daemon.process(fixture.pid) is None, 15,
               "the process moved out to be no longer watched")
    print(f"detached {time.monotonic() - t0:.1f}s after the move out")
    check("moved to cgroup" in daemon.log_text(), "the log does not say why it was detached")
    check_serving(daemon, "cgroup moves")


if __name__ == "__main__":
    run({name[5:]: fn for name, fn in list(globals().items()) if name.startswith("test_")})
