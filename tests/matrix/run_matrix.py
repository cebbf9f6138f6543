"""Kernel and architecture matrix: boots each kernel of MATRIX under QEMU (software emulation)
and runs leakwatchd in it against the real fixture programs, then checks what it reported.

Each guest: a busybox initramfs with the kernel's virtio/9p modules, the host's root over 9p
read-only (leakwatchd and the fixtures run from it in a chroot: the x86_64 build for x86_64
guests, the aarch64 cross build for aarch64 guests), and a writable 9p share where
guest/checks.sh leaves the daemon's answers. Checks, per kernel:
  user_leak    leak_steady's leak is attributed to leak_record_entry within 10%
  default_unwind  with the default unwinding, leak_nofp (-O2, no frame pointers) holds its leak
               under leak_records to the byte; on x86_64 (unwind rules) in a stack naming
               middle_layer, outer_layer, main; on aarch64 (the kernel's walk of frame
               records) the site alone is checked: callers without frame records are missing
  kernel_held  the pages of kleak_pipes' pipes show at the pipe write sites within 10%, in
               kernel stacks naming the pipe functions, attributed to the fixture
  kernel_freed after the fixture exits, less than 10% is left and its series is gone
  kmod         the test module lw_kleak (tests/kmod, built against the kernel's own headers),
               loaded after leakwatchd started: per kind, the stacks whose site is its leaking
               function hold what it reports it leaked within 5%, in bytes and allocations (its
               freed share not counted), naming the function in [lw_kleak], and so do the
               /metrics series with that site; after rmmod the same, still named
  kmod_escalate the same module with kernel.tracking: escalate (the default), leakwatchd
               started first with no allocation tracepoint: the counters the module grows (its
               own cache, kmalloc-1k, page, percpu) are escalated, nothing escalated had not
               grown, and per kind the stacks at its function hold, within 5%, what the module
               kept in the ticks after leakwatchd began recording that kind
               (kmod.evaluate_escalation says precisely what is compared)
Prints one table, kernel by kernel; each failure names the kernel and the check. Exit 0 when
all pass, 1 when any fails, 77 (skipped) when kernels could not be fetched and the matrix is
optional (--optional or LEAKWATCH_MATRIX_OPTIONAL=1)."""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernels  # noqa: E402
import kmod  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# arch, series (None: whatever the suite's newest is), suites searched, newest first wins
MATRIX = [
    ("aarch64", "5.10", ["bullseye", "bullseye-security"]),
    ("aarch64", "6.1", ["bookworm", "bookworm-security"]),
    ("x86_64", "5.10", ["bullseye", "bullseye-security"]),
    ("x86_64", "6.1", ["bookworm", "bookworm-security"]),
    ("x86_64", "6.12", ["trixie", "trixie-security"]),
    ("x86_64", None, ["sid"]),
]
GUEST_TIMEOUT = 600
PIPE_SITES = ("anon_pipe_write", "pipe_write")
PIPE_FRAMES = ("pipe_write", "anon_pipe_write", "vfs_write")
LOCK = threading.Lock()


def log(msg):
    with LOCK:
        print(f"[matrix {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Skip(Exception):
    pass


# ---------------------------------------------------------------- initramfs (cpio newc)

def cpio_entry(name, mode, data=b"", rdev=(0, 0)):
    name_b = name.encode() + b"\0"
    hdr = "070701" + "".join(f"{v:08x}" for v in (
        0, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0))
    out = hdr.encode() + name_b
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def make_initramfs(path, busybox, kdir, kmeta, env, test_module=None):
    parts = []
    for d in ("bin", "dev", "proc", "sys", "host", "out", "tmp", "modules", "kmod"):
        parts.append(cpio_entry(d, stat.S_IFDIR | 0o755))
    parts.append(cpio_entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    with open(busybox, "rb") as f:
        parts.append(cpio_entry("bin/busybox", stat.S_IFREG | 0o755, f.read()))
    for name in ("init", "checks.sh"):
        with open(os.path.join(HERE, "guest", name), "rb") as f:
            parts.append(cpio_entry(name, stat.S_IFREG | 0o755, f.read()))
    for m in kmeta["modules"]:
        with open(os.path.join(kdir, "modules", m + ".ko"), "rb") as f:
            parts.append(cpio_entry(f"modules/{m}.ko", stat.S_IFREG | 0o644, f.read()))
    if test_module:
        with open(test_module, "rb") as f:
            parts.append(cpio_entry(f"kmod/{kmod.MODULE}.ko", stat.S_IFREG | 0o644, f.read()))
    env_text = "".join(f"{k}='{v}'\n" for k, v in env.items())
    parts.append(cpio_entry("matrix.env", stat.S_IFREG | 0o644, env_text.encode()))
    parts.append(cpio_entry("TRAILER!!!", 0))
    with open(path, "wb") as f:
        f.write(b"".join(parts))


# ---------------------------------------------------------------- builds

def cross_build(args, fetcher):
    """The aarch64 build of leakwatchd and the fixtures, its BPF against an arm64 BTF."""
    build = os.path.abspath(args.aarch64_build)  # the guests run it from /host, not from here
    os.makedirs(build, exist_ok=True)
    btf = os.path.join(build, "vmlinux-arm64.btf")
    pkg, kdir, kmeta = fetcher.kernel("aarch64", "6.1", ["bookworm", "bookworm-security"])
    if not kmeta["btf"]:
        raise RuntimeError(f"no BTF found in {pkg['package']} {pkg['version']}")
    src_btf = os.path.join(kdir, kmeta["btf"])
    if not os.path.exists(btf) or kernels.sha256_file(btf) != kernels.sha256_file(src_btf):
        shutil.copy(src_btf, btf)
    cmd = ["cmake", "-S", args.source, "-B", build,
           f"-DCMAKE_TOOLCHAIN_FILE={args.source}/cmake/aarch64-linux-gnu.cmake",
           f"-DVMLINUX_BTF={btf}", "-DBUILD_TESTING=OFF", "-DLEAKWATCH_FIXTURES=ON",
           *os.environ.get("LEAKWATCH_CROSS_CMAKE_ARGS", "").split()]
    start = time.monotonic()
    for c in (cmd, ["cmake", "--build", build, f"-j{os.cpu_count()}", "--target", "leakwatchd",
                    "leak_steady", "leak_nofp", "kleak_pipes"]):
        r = subprocess.run(["nice", "-n", "10", *c], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"aarch64 build failed ({' '.join(c[:3])}):\n"
                               + (r.stdout + r.stderr)[-4000:])
    log(f"aarch64 build ready in {time.monotonic() - start:.0f}s ({build})")
    return os.path.join(build, "bin/leakwatchd"), os.path.join(build, "tests/bin")


# ---------------------------------------------------------------- guests

def qemu_command(arch, kdir, initrd, out, jobs):
    common = ["-m", "1024", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
              "-serial", "stdio", "-no-reboot",
              "-kernel", os.path.join(kdir, "vmlinuz"), "-initrd", initrd,
              "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
              "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
              "-fsdev", f"local,id=out,path={out},security_model=none",
              "-device", "virtio-9p-pci,fsdev=out,mount_tag=out"]
    append = "panic=-1 loglevel=4 rdinit=/init"
    if arch == "x86_64":
        return ["qemu-system-x86_64", "-M", "pc", "-cpu", "max", *common,
                "-append", f"console=ttyS0 {append}"]
    return ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", *common,
            "-append", f"console=ttyAMA0 {append}"]


def run_guest(entry, kdir, kmeta, busybox, binaries, workdir, jobs):
    arch = entry["arch"]
    name = f"{arch}-{kmeta['release']}"
    out = os.path.join(workdir, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    leakwatchd, fixtures = binaries[arch]
    initrd = os.path.join(workdir, name + ".cpio")
    make_initramfs(initrd, busybox, kdir, kmeta, {
        "MODULES": " ".join(kmeta["modules"]), "LEAKWATCHD": leakwatchd, "FIXTURES": fixtures},
        entry.get("kmod"))
    cmd = qemu_command(arch, kdir, initrd, out, jobs)
    log(f"{name}: booting")
    start = time.monotonic()
    with open(os.path.join(out, "console.log"), "wb") as console:
        p = subprocess.Popen(["nice", "-n", "10", *cmd], stdout=console,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            p.wait(timeout=GUEST_TIMEOUT)
            timed_out = False
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            timed_out = True
    elapsed = time.monotonic() - start
    result = evaluate(out, entry, kmeta, elapsed, timed_out)
    log(f"{name}: {'PASS' if not result['failures'] else 'FAIL'} in {elapsed:.0f}s")
    return result


# ---------------------------------------------------------------- checks

def read(out, name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read()
    except OSError:
        return None


def read_json(out, name):
    text = read(out, name)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def fixture_value(text, key):
    for line in (text or "").splitlines():
        parts = line.split()
        if parts and parts[0] == key and len(parts) > 1:
            return int(parts[1])
    return None


def within(actual, expected, tolerance):
    return abs(actual - expected) <= tolerance * expected


def evaluate(out, entry, kmeta, elapsed, timed_out):
    r = {"arch": entry["arch"], "release": kmeta["release"], "version": entry["version"],
         "seconds": elapsed, "failures": [], "out": out}
    fail = r["failures"].append
    times = {}
    for line in (read(out, "times") or "").splitlines():
        k, v = line.split()
        times[k] = float(v)
    r["boot"] = times.get("boot")
    ops = (read(out, "xol_ops") or "").split()
    r["push"] = "-" if entry["arch"] != "x86_64" else (
        "emulated" if "push_xol_ops" in ops else "single-step")
    uname = (read(out, "uname") or "").strip()
    if timed_out:
        fail(("guest", f"did not power off within {GUEST_TIMEOUT}s"))
    if uname != kmeta["release"]:
        console = (read(out, "console.log") or "")[-1500:]
        fail(("boot", f"guest did not reach the checks (uname {uname!r}); console:\n{console}"))
        return r
    daemon_log = read(out, "leakwatchd.log") or ""
    m = re.search(r"processes watched, (\S+) uprobes", daemon_log)
    r["uprobes"] = m.group(1) if m else "?"
    m = re.search(r"kernel allocations: tracing (.*?) \(", daemon_log)
    r["tracepoints"] = m.group(1) if m else "?"
    if "daemon_up" not in times:
        fail(("daemon_start", "leakwatchd did not serve /metrics: "
              + daemon_log[-1500:].replace("\n", "\n    ")))
        return r

    def user_leak(label, check):
        """What checks.sh's user_leak LABEL left: the fixture's "leaked" and its stacks."""
        truth = fixture_value(read(out, f"{label}.out"), "leaked")
        stacks = read_json(out, f"{label}_stacks.json")
        if truth is None or stacks is None:
            fail((check, f"no measurement (fixture said leaked={truth}, stacks "
                  f"{'read' if stacks else 'missing'})"))
            return None, None
        return truth, stacks

    # user-space leak
    truth, stacks = user_leak("steady", "user_leak")
    if stacks is not None:
        sites = {}
        for s in stacks["stacks"]:
            sites[s["site"]] = sites.get(s["site"], 0) + s["outstanding_bytes"]
        got = sites.get("leak_record_entry", 0)
        r["user"] = (got, truth)
        if not within(got, truth, 0.10):
            fail(("user_leak", f"leak_record_entry holds {got} bytes, truth {truth} (10%): "
                  f"{sites}"))
        frames = [f.get("symbol") for s in stacks["stacks"] if s["site"] == "leak_record_entry"
                  for f in s["frames"]]
        if "leak_record_entry" not in frames:
            fail(("user_leak", f"no stack frame names leak_record_entry: {frames[:8]}"))

    # The default unwinding of code without frame pointers. x86_64: the whole stack, from the
    # unwind rules. aarch64: the kernel's walk of frame records, from the link register: the
    # direct caller (the site) and its bytes, callers above it only where frame records are
    # kept (leak_nofp keeps none, so they are missing, and the stack must not invent them).
    truth, stacks = user_leak("nofp", "default_unwind")
    if stacks is not None:
        leak = [s for s in stacks["stacks"] if s["site"] == "leak_records"]
        got = sum(s["outstanding_bytes"] for s in leak)
        names = [[f.get("symbol") for f in s["frames"]] for s in leak]
        whole = [s for s, n in zip(leak, names) if n[:5] ==
                 ["malloc", "leak_records", "middle_layer", "outer_layer", "main"]]
        r["nofp"] = (sum(s["outstanding_bytes"] for s in whole) if entry["arch"] == "x86_64"
                     else got, truth)
        r["nofp_stack"] = " <- ".join(n for n in (names[0] if names else [])[:5] if n)
        if got != truth:
            fail(("default_unwind", f"leak_records holds {got} bytes, truth {truth}"))
        if entry["arch"] == "x86_64" and not whole:
            fail(("default_unwind", "no stack malloc <- leak_records <- middle_layer <- "
                  f"outer_layer <- main: {names}"))

    # kernel leak from user space
    page = int((read(out, "pagesize") or "4096").strip())
    pages = fixture_value(read(out, "pipes.out"), "pipe_pages")
    pid = int((read(out, "pipes.pid") or "0").strip() or 0)
    base, held, freed = (read_json(out, n) for n in
                         ("kernel_base.json", "kernel_held.json", "kernel_freed.json"))

    def pipe_bytes(k):
        return sum(s["outstanding_bytes"] for s in k["stacks"]
                   if s["kind"] == "page" and s["site"] in PIPE_SITES)

    if pages is None or base is None or held is None:
        fail(("kernel_held", f"no measurement (pipe_pages={pages}, base "
              f"{'read' if base else 'missing'}, held {'read' if held else 'missing'})"))
    else:
        truth = pages * page
        grown = pipe_bytes(held) - pipe_bytes(base)
        r["kernel"] = (grown, truth)
        if not within(grown, truth, 0.10):
            sites = sorted({(s["kind"], s["site"]) for s in held["stacks"]})[:40]
            fail(("kernel_held", f"pipe page stacks grew by {grown} bytes, truth {truth} "
                  f"(10%); sites: {sites}"))
        pipe_stacks = [s for s in held["stacks"]
                       if s["kind"] == "page" and s["site"] in PIPE_SITES]
        symbols = {f.get("symbol") for s in pipe_stacks for f in s["frames"]}
        if not symbols & set(PIPE_FRAMES):
            fail(("kernel_held", f"no pipe function in the pipe page stacks: {sorted(symbols)[:20]}"))
        mine = [p for p in held["processes"] if p["pid"] == pid]
        if not mine or mine[0]["outstanding_bytes"] < 0.9 * truth:
            fail(("kernel_held", f"kernel bytes attributed to kleak_pipes ({pid}): {mine}, "
                  f"truth {truth}"))
        if freed is None:
            fail(("kernel_freed", "no measurement after the fixture exited"))
        else:
            left = pipe_bytes(freed) - pipe_bytes(base)
            r["left"] = left
            if left >= 0.10 * truth:
                fail(("kernel_freed", f"{left} bytes of pipe pages still outstanding after "
                      f"exit (truth {truth})"))
            if any(p["pid"] == pid for p in freed["processes"]):
                fail(("kernel_freed", f"the exited kleak_pipes ({pid}) still has a kernel series"))
    evaluate_kmod(out, entry, r, fail)
    code = (read(out, "daemon_exit") or "").strip()
    if code != "0":
        fail(("daemon_stop", f"leakwatchd exit status on SIGTERM: {code or 'none'}"))

    # without BTF: a clear refusal; with the BTF as /boot/vmlinux-RELEASE: running again
    code = (read(out, "nobtf_exit") or "").strip()
    text = read(out, "nobtf.log") or ""
    if code in ("", "0") or "exposes no BTF" not in text or f"/boot/vmlinux-{uname}" not in text:
        fail(("no_btf", f"without /sys/kernel/btf/vmlinux leakwatchd exited {code or '?'} "
              f"and said: {text[-600:]!r}"))
    metrics = read(out, "metrics_extbtf.txt") or ""
    kinds = re.findall(r'^leakwatch_kernel_outstanding_bytes\{kind="(\w+)"\} (\S+)', metrics,
                       re.M)
    if len({k for k, _ in kinds}) != 4 or not any(float(v) > 0 for _, v in kinds):
        fail(("external_btf", f"with the BTF at /boot/vmlinux-{uname} leakwatchd reported "
              f"kernel kinds {kinds}: {(read(out, 'extbtf.log') or '')[-600:]!r}"))
    r["btf"] = "error+file" if not any(c in ("no_btf", "external_btf")
                                       for c, _ in r["failures"]) else "FAIL"
    return r


def missed_runs(out, name, reason="kernel_program_missed"):
    """A count of skipped kmem program runs in a /metrics text the guest left:
    kernel_program_missed (the backup programs', an upper bound of the events lost) or
    kernel_first_program_missed (the first programs', which the backups covered)."""
    m = re.search(r'^leakwatch_lost_events_total\{reason="%s"\} (\d+)' % reason,
                  read(out, name) or "", re.M)
    return int(m.group(1)) if m else 0


def missed_both(out, before, after):
    """Skipped kmem program runs between two /metrics texts, first programs' and backups'."""
    return tuple(missed_runs(out, after, reason) - missed_runs(out, before, reason)
                 for reason in ("kernel_first_program_missed", "kernel_program_missed"))


def module_truth(out, label, check, fail):
    """What the module reported it leaked in checks.sh's kmod_leak LABEL (kmod.leaked); None,
    and a failure of `check`, when it did not finish."""
    truth = kmod.leaked(out, label)
    if truth is None:
        fail((check, f"{kmod.MODULE} did not finish; insmod said "
              f"{(read(out, f'{label}_insmod.log') or '').strip()!r}"))
    return truth


def evaluate_kmod(out, entry, r, fail):
    if entry.get("kmod_error"):
        fail(("kmod", entry["kmod_error"]))
        return
    truth = module_truth(out, "kmod", "kmod", fail)
    if truth is None:
        return
    code = (read(out, "kmod_rmmod") or "").strip()
    if code != "0":
        fail(("kmod", f"rmmod {kmod.MODULE} exited {code or '?'}: "
              f"{(read(out, 'kmod_rmmod.log') or '').strip()!r}"))
    # Skipped kmem program runs while the module ran: before insmod to the answer checked.
    first, backup = missed_both(out, "metrics_kmod_before.txt", "metrics_kmod.txt")
    rows, example = kmod.evaluate(truth, read_json(out, "kmod_held.json"),
                                  read_json(out, "kmod_unloaded.json"), fail,
                                  (read(out, "metrics_kmod.txt") or "",
                                   read(out, "metrics_kmod_unloaded.txt") or ""))
    r["kmod"] = rows
    r["kmod_stack"] = example
    r["kmod_freed"] = truth["freed"][1]
    r["kmod_missed"] = (f"{missed_runs(out, 'metrics_kmod.txt', 'kernel_first_program_missed')}"
                        f" / {missed_runs(out, 'metrics_kmod.txt')} ({first} / {backup} while "
                        f"it ran)")
    evaluate_escalation(out, r, fail)


def evaluate_escalation(out, r, fail):
    """The module found from the kernel's counters (checks.sh's escalation phase)."""
    if not os.path.exists(os.path.join(out, "esc_leakwatchd.log")):
        fail(("kmod_escalate", "the escalation phase did not run"))
        return
    truth = module_truth(out, "esc", "kmod_escalate", fail)
    if truth is None:
        return
    loaded_at = fixture_value(read(out, "esc_truth"), "loaded_at_ns")
    polls = sorted((int(n[len("esc_poll_"):-len(".json")]), n) for n in os.listdir(out)
                   if re.fullmatch(r"esc_poll_\d+\.json", n))
    data = {"truth": truth, "ticks": read(out, "esc_ticks"), "loaded_at": loaded_at / 1e9,
            "base": read_json(out, "esc_base.json"), "held": read_json(out, "esc_held.json"),
            "polls": [p for p in (read_json(out, n) for _, n in polls) if p],
            "log": read(out, "esc_leakwatchd.log"), "meminfo": read(out, "esc_meminfo"),
            "slabinfo_before": read(out, "esc_slabinfo_before"),
            "slabinfo_after": read(out, "esc_slabinfo_after")}
    rows, others = kmod.evaluate_escalation(data, fail)
    r["esc"] = rows
    r["esc_others"] = others
    r["esc_missed"] = missed_both(out, "metrics_esc_before.txt", "metrics_esc.txt")
    r["esc_tick_us"] = fixture_value(read(out, "esc_truth"), "tick_max_us")


# ---------------------------------------------------------------- table

def table(results, wall):
    rows = [("arch", "kernel", "uprobes", "x86 push", "kmem tracepoints", "user leak (got/truth)",
             "-O2 no FP: whole (x86_64) / site (aarch64)", "kernel held (got/truth)",
             "left after exit",
             "no BTF", "guest s", "result")]

    def pct(pair):
        return f"{pair[0]}/{pair[1]} ({100.0 * pair[0] / pair[1]:.1f}%)" if pair else "-"

    for r in results:
        tps = r.get("tracepoints")
        node = "with *_node" if tps and "kmalloc_node" in tps else (
            "no *_node" if tps and tps != "?" else (tps or "-"))
        rows.append((r["arch"], r["release"], r.get("uprobes", "-"), r.get("push", "-"), node, pct(r.get("user")),
                     pct(r.get("nofp")), pct(r.get("kernel")), str(r.get("left", "-")), r.get("btf", "-"),
                     f"{r['seconds']:.0f}",
                     "PASS" if not r["failures"] else
                     "FAIL: " + ",".join(sorted({c for c, _ in r["failures"]}))))
    print_rows(rows)
    print(f"\ntest module {kmod.MODULE}: what it leaked, and leakwatchd's outstanding bytes "
          f"(allocations) at its leaking function, loaded and after rmmod")
    rows = [("arch", "kernel", "kind", "leaked per the module", "leakwatchd, loaded",
             "after rmmod", "within 5%", "kmem runs missed: first / backup")]
    for r in results:
        for kind, k in (r.get("kmod") or {}).items():
            def fig(phase):
                if phase not in k:
                    return "-"
                return (f"{k[phase]} ({k[phase + '_count']}) "
                        f"{100.0 * k[phase] / k['truth']:.1f}%" if k["truth"] else "-")
            ok = all(kmod.within(k.get(p, -1), k["truth"]) and
                     kmod.within(k.get(p + "_count", -1), k["truth_count"])
                     for p in ("held", "unloaded"))
            verdict = "yes" if ok else "NO"
            rows.append((r["arch"], r["release"], kind, f"{k['truth']} ({k['truth_count']})",
                         fig("held"), fig("unloaded"), verdict,
                         r.get("kmod_missed", "-")))
    print_rows(rows)
    print(f"\n{kmod.MODULE} found from the kernel's counters (kernel.tracking: escalate): the "
          f"counter of each kind it grows, when leakwatchd escalated it (s after insmod), what "
          f"the counter had grown by then, what the module kept after the escalation and what "
          f"leakwatchd holds at its function, bytes (allocations)")
    rows = [("arch", "kernel", "counter", "escalated", "kind", "counter grown",
             "module kept after", "leakwatchd", "ratio", "within 5%", "nearest tick")]
    for r in results:
        for k in r.get("esc") or []:
            if "missing" in k:
                late = "after" in k  # escalated after the module's last tick (kmod.py)
                rows.append((r["arch"], r["release"], k["counter"],
                             f"{k['after']:.1f}s" if late else "no", k["kind"], "-", "-", "-",
                             "-", ("too late to check (below)" if late else
                                   "not escalated (below)") if k.get("explained") else "NO",
                             "-"))
                continue
            by = "" if k["by"] == k["counter"] else f" (filter complete with {k['by']})"
            rows.append((r["arch"], r["release"], k["counter"], f"{k['after']:.1f}s{by}",
                         k["kind"], str(k["grown"]) if k["grown"] is not None else "-",
                         f"{k['truth']} ({k['truth_count']})", f"{k['got']} ({k['got_count']})",
                         f"{k['got'] / k['truth']:.3f}" if k["truth"] else "-", k["verdict"],
                         f"{k['nearest'] * 1000:+.0f}ms" if k["nearest"] is not None else "-"))
    print_rows(rows)
    for r in results:
        if "esc" not in r:
            continue
        first, backup = r.get("esc_missed") or ("?", "?")
        print(f"{r['arch']} {r['release']}: kmem program runs skipped meanwhile: first programs "
              f"{first}, backups {backup} (at most that many lost), longest tick {r.get('esc_tick_us')} us; escalated besides "
              f"the module's counters: {'; '.join(r['esc_others']) or 'nothing'}")
        for k in r["esc"]:
            if "missing" in k:
                print(f"  {k['counter']} {k['missing']}")
    for r in results:
        if r.get("kmod_stack"):
            print(f"\n{r['arch']} {r['release']}: the kmalloc leak's stack "
                  f"({r.get('kmod_freed', '?')} objects freed again by the module, not counted)")
            print(r["kmod_stack"])
    print(f"matrix wall time: {wall:.0f}s")


def print_rows(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="the source tree")
    ap.add_argument("--leakwatchd", required=True, help="the x86_64 leakwatchd")
    ap.add_argument("--fixtures", required=True, help="the x86_64 fixture programs' folder")
    ap.add_argument("--aarch64-build", required=True, help="where to cross-build for aarch64")
    ap.add_argument("--workdir", help="where guests' results go (default: a temporary folder)")
    ap.add_argument("--only", default="", help="comma-separated filters, e.g. x86_64-5.10")
    ap.add_argument("--jobs", type=int, default=2, help="guests at once")
    ap.add_argument("--optional", action="store_true",
                    default=os.environ.get("LEAKWATCH_MATRIX_OPTIONAL") == "1",
                    help="kernels that cannot be fetched skip the matrix instead of failing it")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("the matrix must run as root (it reads the whole host root into the guests)")
        return 1
    wall0 = time.monotonic()
    workdir = args.workdir or tempfile.mkdtemp(prefix="leakwatch-matrix-")
    os.makedirs(workdir, exist_ok=True)
    entries = []
    for arch, series, suites in MATRIX:
        key = f"{arch}-{series or suites[0]}"
        if args.only and not any(f in key for f in args.only.split(",")):
            continue
        entries.append({"arch": arch, "series": series, "suites": suites, "key": key})

    # Fetch: every kernel of the matrix, and busybox for each architecture.
    fetcher = kernels.Fetcher()
    fetch_errors = []
    busyboxes = {}
    t0 = time.monotonic()
    for e in entries:
        try:
            pkg, kdir, kmeta = fetcher.kernel(e["arch"], e["series"], e["suites"])
            e.update(pkg=pkg, kdir=kdir, kmeta=kmeta, version=pkg["version"])
            log(f"{e['key']}: {pkg['package']} {pkg['version']} from {pkg['suite']} "
                f"({'cached' if pkg.get('cached') else 'downloaded'}, sha256 {pkg['sha256'][:12]})")
            if e["arch"] not in busyboxes:
                busyboxes[e["arch"]] = fetcher.busybox(e["arch"])
        except kernels.FetchError as err:
            fetch_errors.append((e["key"], str(err)))
            log(f"{e['key']}: COULD NOT FETCH: {err}")
    t1 = time.monotonic()
    for e in entries:
        if "kmeta" not in e:
            continue
        try:
            e["kmod"], note = kmod.build(fetcher, e)
            log(f"{e['key']}: {note}")
        except kmod.BuildError as err:
            e["kmod_error"] = f"building {kmod.MODULE}: {err}"
            log(f"{e['key']}: {e['kmod_error']}")
    log(f"test module ready in {time.monotonic() - t1:.0f}s")
    for note in fetcher.notes:
        log(note)
    if not args.only and not fetch_errors:
        fetcher.prune()
    log(f"kernels ready in {time.monotonic() - t0:.0f}s")
    if fetch_errors:
        what = "; ".join(f"{k}: {m.splitlines()[0]}" for k, m in fetch_errors)
        if args.optional:
            print(f"matrix SKIPPED (optional): kernels could not be fetched: {what}")
            return 77
        print(f"matrix FAILED: kernels could not be fetched (set LEAKWATCH_MATRIX_OPTIONAL=1 on a "
              f"machine without access to the archive): {what}")
        return 1

    tools = {"x86_64": ["qemu-system-x86_64"],
             "aarch64": ["qemu-system-aarch64", "aarch64-linux-gnu-g++"]}
    missing = sorted({t for e in entries for t in tools[e["arch"]] if not shutil.which(t)})
    if missing:
        print(f"matrix FAILED: {', '.join(missing)} missing: run scripts/matrix-deps.sh "
              f"(scripts/deps.sh does)")
        return 1
    binaries = {"x86_64": (os.path.abspath(args.leakwatchd), os.path.abspath(args.fixtures))}
    unbuilt = {}  # arch -> why its guests cannot run
    if any(e["arch"] == "aarch64" for e in entries):
        try:
            binaries["aarch64"] = cross_build(args, fetcher)
        except (RuntimeError, kernels.FetchError) as err:
            unbuilt["aarch64"] = str(err)
            log(f"aarch64: {err}")
    for arch, (lw, fx) in binaries.items():
        for p in (lw, os.path.join(fx, "leak_steady"), os.path.join(fx, "kleak_pipes")):
            if not os.access(p, os.X_OK):
                unbuilt[arch] = f"{p} is missing: build it first"
            elif p.startswith(("/run/", "/proc/", "/sys/", "/dev/")):
                unbuilt[arch] = (f"{p}: the guests mount their own /run, /proc, /sys and /dev "
                                 f"over the host's, so binaries there cannot run in them")

    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_guest, e, e["kdir"], e["kmeta"], busyboxes[e["arch"]],
                               binaries, workdir, args.jobs)
                   for e in entries if e["arch"] not in unbuilt]
        for e in entries:  # a guest without binaries fails as "build", the others still run
            if e["arch"] in unbuilt:
                results.append({"arch": e["arch"], "release": e["kmeta"]["release"],
                                "seconds": 0, "failures": [("build", unbuilt[e["arch"]])]})
        for f in futures:
            results.append(f.result())
    wall = time.monotonic() - wall0
    print()
    table(results, wall)
    failed = 0
    for r in results:
        for check, message in r["failures"]:
            failed += 1
            print(f"FAIL {r['arch']} {r['release']} {check}: {message}")
    if args.workdir or failed:
        print(f"guest outputs (console, leakwatchd log, JSON answers): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = sum(1 for r in results if not r["failures"])
    print(f"{ok} passed, {len(results) - ok} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
