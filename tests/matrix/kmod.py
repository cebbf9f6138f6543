"""The test module of tests/kmod (lw_kleak) in the kernel matrix: built for each guest's kernel
against that kernel's Debian headers (fetched by kernels.py), and what leakwatchd showed of it.

The guest side is checks.sh's `kmod_leak LABEL [PARAM=VALUE...]`: it loads the module, waits
until it has made every allocation and free, and leaves what the module reports it leaked in
/out/LABEL_truth. leaked(out, LABEL) reads that back as {kind: (bytes, allocations)}.

Compilers. The module is built with this machine's compiler (Debian 12: gcc 12, and
aarch64-linux-gnu-gcc 12 for arm64), whatever compiler the kernel was built with: gcc 10 for
bullseye's 5.10, 12 for bookworm's 6.1, 14 for trixie's 6.12, 16 for sid's 7.x; Debian 12 has no
gcc 10, 14 or 16. A kernel's configuration records what its compiler can do (CONFIG_CC_HAS_*),
and the headers' Makefile passes options on that word. Where this machine's compiler lacks one
(FALLBACKS), the symbol is switched off on make's command line, and the kernel's Makefile takes
the fallback it has for older compilers (-falign-functions for -fmin-function-alignment). Module
BTF is not generated (CONFIG_DEBUG_INFO_BTF_MODULES off): it needs pahole, and neither loading
the module nor tracing its allocations uses it."""
import datetime
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import kernels

MODULE = "lw_kleak"
SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kmod")
# kind (as leakwatchd names it) -> the module's function that leaks it
SITES = {"kmalloc": "lwk_leak_kmalloc", "kmem_cache": "lwk_leak_cache",
         "page": "lwk_leak_pages", "percpu": "lwk_leak_percpu"}
# Configuration symbols that say the kernel's compiler has an option, with that option.
FALLBACKS = [("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT", "-fmin-function-alignment=16")]
# No exception for runs the kernel skipped: every kmem tracepoint has a backup program
# (bpf/kmem.bpf.c), and an event is lost only when both were skipped.
TOLERANCE = 0.05


class BuildError(Exception):
    pass


def compiler(arch):
    return "gcc" if arch == "x86_64" else "aarch64-linux-gnu-gcc"


def supports(cc, option):
    r = subprocess.run([cc, option, "-Werror", "-x", "c", "-c", "-o", os.devnull, os.devnull],
                       capture_output=True)
    return r.returncode == 0


def config_symbols(build_dir):
    with open(os.path.join(build_dir, ".config")) as f:
        return {k: v.strip() for k, _, v in (line.partition("=") for line in f) if v}


def build(fetcher, entry):
    """The path of lw_kleak.ko for a matrix entry (kernel() already resolved), built once per
    content: the module's source, the headers, the compiler and the make arguments."""
    arch = entry["arch"]
    try:
        hdir, hmeta = fetcher.headers(arch, entry["pkg"], entry["kmeta"], entry["suites"])
    except kernels.FetchError as e:
        raise BuildError(f"headers: {e}")
    cc = compiler(arch)
    if not shutil.which(cc):
        raise BuildError(f"{cc} is missing: run scripts/matrix-deps.sh")
    config = config_symbols(hdir)
    args = [f"CC={cc}", "CONFIG_DEBUG_INFO_BTF_MODULES="]
    if arch == "aarch64":
        args += ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
    args += [f"{sym}=" for sym, option in FALLBACKS
             if config.get(sym) == "y" and not supports(cc, option)]
    sources = sorted(os.listdir(SOURCE))
    h = hashlib.sha256(hmeta["key"].encode())
    for name in sources:
        with open(os.path.join(SOURCE, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    h.update((version + " ".join(args)).encode())
    key = h.hexdigest()
    fetcher.used.add(key)
    out = os.path.join(kernels.cache_dir(), "prepared", key)
    ko = os.path.join(out, MODULE + ".ko")
    note = (f"{MODULE}.ko for {hmeta['release']}: kernel built by {hmeta['cc']}, module by "
            f"{version.splitlines()[0]}" + (f", make {' '.join(args[2:])}" if args[2:] else ""))
    if os.path.exists(ko):
        return ko, note + " (cached)"
    with tempfile.TemporaryDirectory(dir=kernels.cache_dir()) as tmp:
        for name in sources:
            shutil.copy(os.path.join(SOURCE, name), tmp)
        r = subprocess.run(["nice", "-n", "10", "make", "-C", hdir, f"M={tmp}", *args, "modules"],
                           capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(os.path.join(tmp, MODULE + ".ko")):
            raise BuildError(f"make for {hmeta['release']} failed ({note}):\n"
                             + (r.stdout + r.stderr)[-3000:])
        os.makedirs(out + ".tmp", exist_ok=True)
        shutil.copy(os.path.join(tmp, MODULE + ".ko"), out + ".tmp")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(out + ".tmp", out)
    return ko, note


def leaked(out, label):
    """What the module said it leaked, as checks.sh's kmod_leak LABEL left it:
    {kind: (bytes, allocations)}, plus "freed": (0, objects freed again); None if it never
    finished."""
    try:
        with open(os.path.join(out, f"{label}_truth")) as f:
            lines = [line.split() for line in f if line.strip()]
    except OSError:
        return None
    values = {line[0]: line[1] for line in lines if len(line) == 2}
    if values.get("done") != "Y":
        return None
    result = {kind: (int(values[f"leaked_{kind}_bytes"]), int(values[f"leaked_{kind}_count"]))
              for kind in SITES}
    result["freed"] = (0, int(values.get("freed", 0)))
    return result


def module_stacks(kernel_json, kind):
    """Stacks of `kind` whose site is the module's function for it."""
    return [s for s in kernel_json["stacks"] if s["kind"] == kind and s["site"] == SITES[kind]]


def named(stack, kind):
    """True when a frame of the stack is the module's function, in the module."""
    return any(f.get("symbol") == SITES[kind] and f.get("module") == f"[{MODULE}]"
               for f in stack["frames"])


def stack_text(stack):
    return "\n".join(f"      {f.get('symbol') or '?'}+{f.get('offset', 0):#x} {f.get('module')}"
                     for f in stack["frames"])


def series_bytes(metrics_text, site):
    """The sum of the kernel's leakwatch_stack_outstanding_bytes series with this site label."""
    pattern = re.compile(r'^leakwatch_stack_outstanding_bytes\{watch="kernel",[^}]*'
                         r'site="' + re.escape(site) + r'"\} (\d+)$', re.M)
    return sum(int(m.group(1)) for m in pattern.finditer(metrics_text or ""))


def evaluate(truth, held, unloaded, fail, metrics=(None, None)):
    """Checks one guest's run: per kind, the stacks at the module's function hold what it leaked
    within TOLERANCE, in bytes and in allocations (so the freed share is not counted), each
    names the function in [lw_kleak]; after rmmod the same, still named. `metrics`, the
    /metrics texts taken with `held` and `unloaded` (None: not checked): the series with the
    function as their site must hold the same within TOLERANCE.
    Returns {kind: {...}} for the table, and the kmalloc stack as text."""
    rows = {}
    example = None
    for kind in SITES:
        t_bytes, t_count = truth[kind]
        row = {"truth": t_bytes, "truth_count": t_count}
        for phase, k, text in (("held", held, metrics[0]), ("unloaded", unloaded, metrics[1])):
            if k is None:
                fail(("kmod", f"no /api/v1/kernel answer {phase}"))
                continue
            stacks = module_stacks(k, kind)
            got = sum(s["outstanding_bytes"] for s in stacks)
            count = sum(s["outstanding_allocations"] for s in stacks)
            row[phase] = got
            row[phase + "_count"] = count
            what = "after rmmod" if phase == "unloaded" else "loaded"
            if not within(got, t_bytes) or not within(count, t_count):
                sites = sorted({(s["kind"], s["site"]) for s in k["stacks"]
                                if any(f.get("module") == f"[{MODULE}]" for f in s["frames"])})
                fail(("kmod", f"{kind} ({what}): stacks at {SITES[kind]} hold {got} bytes in "
                      f"{count} allocations, the module leaked {t_bytes} in {t_count} (5%); "
                      f"stacks with [{MODULE}] frames: {sites}"))
            if text is not None:
                series = series_bytes(text, SITES[kind])
                row[phase + "_series"] = series
                if not within(series, t_bytes):
                    fail(("kmod", f"{kind} ({phase}): the /metrics series with site="
                          f"{SITES[kind]} hold {series} bytes, the module leaked {t_bytes} (5%)"))
            unnamed = [s["stack_id"] for s in stacks if not named(s, kind)]
            if unnamed:
                fail(("kmod", f"{kind} ({what}): stacks {unnamed} do not name {SITES[kind]} in "
                      f"[{MODULE}]"))
            if kind == "kmalloc" and stacks and example is None:
                example = stack_text(max(stacks, key=lambda s: s["outstanding_bytes"]))
        rows[kind] = row
    return rows, example


def within(actual, expected, tolerance=TOLERANCE):
    return expected > 0 and abs(actual - expected) <= tolerance * expected


# ---------------------------------------------------------------- found by escalation

# checks.sh's escalation phase loads the module with its cache under this name.
ESCALATE_CACHE = "lw_kleak_esc"
SLAB_KINDS = ("kmalloc", "kmem_cache")


def counter_kind(name):
    """The kind leakwatchd traces a counter's allocations as (daemon/service/daemon.cpp's
    kind_of), None for vmalloc."""
    if name in ("page", "percpu"):
        return name
    if name == "vmalloc":
        return None
    return "kmalloc" if name.startswith(("kmalloc-", "dma-kmalloc-")) else "kmem_cache"


def slab_sizes(text):
    """{cache: object size} of a /proc/slabinfo text."""
    sizes = {}
    for line in (text or "").splitlines():
        f = line.split()
        if len(f) > 4 and f[1].isdigit() and f[3].isdigit():
            sizes[f[0]] = int(f[3])
    return sizes


def module_counters(truth, sizes):
    """The counter each kind of the module grows: its own cache, the kmalloc cache of its
    objects' size, and the page and percpu estimates."""
    unit = truth["kmalloc"][0] // max(truth["kmalloc"][1], 1)
    kmalloc = [n for n, s in sizes.items() if n.startswith("kmalloc-") and s == unit and
               not n.startswith(("kmalloc-cg-", "kmalloc-rcl-"))]
    return {"kmalloc": kmalloc[0] if kmalloc else f"kmalloc-{unit}",
            "kmem_cache": ESCALATE_CACHE, "page": "page", "percpu": "percpu"}


def recording_start(kind, size, escalated, sizes):
    """When leakwatchd began recording the module's allocations of `kind` (object size `size`):
    the kernel programs record an allocation when its kind is escalated and, for the slab kinds,
    its object size is one of the escalated caches' (the filter holds kinds and sizes apart, so
    both must be on). `escalated`: {counter: escalated_at}. Returns (unix seconds, the counter
    whose escalation completed the filter), or (None, None)."""
    by_kind = [(t, n) for n, t in escalated.items() if counter_kind(n) == kind]
    if not by_kind:
        return None, None
    first = min(by_kind)
    if kind not in SLAB_KINDS:
        return first
    by_size = [(t, n) for n, t in escalated.items()
               if counter_kind(n) in SLAB_KINDS and sizes.get(n) == size]
    if not by_size:
        return None, None
    return max(first, min(by_size))


def ticks(text):
    """checks.sh's esc_ticks (the module's `ticks`): [(ms after load, objects kept so far)]."""
    out = []
    for line in (text or "").splitlines():
        f = line.split()
        if len(f) == 2 and f[0].isdigit() and f[1].isdigit():
            out.append((int(f[0]), int(f[1])))
    return out


def kept_since(history, loaded_at, since, final):
    """Objects of each kind the module kept in the ticks that started after `since` (unix
    seconds): final minus what it had kept by the last tick before. Also the time from `since`
    to the nearest tick (s): a tick that near may have run while the tracepoints were being
    attached, on either side."""
    before = 0
    nearest = None
    for ms, kept in history:
        at = loaded_at + ms / 1000.0
        if at < since:
            before = kept
        if nearest is None or abs(at - since) < abs(nearest):
            nearest = at - since
    return final - before, nearest


# A fall of the page estimate between two of checks.sh's polls larger than this is not the
# module's: it frees 2 of its 8 blocks of 64 KiB a tick while it allocates 8.
PAGE_FALL = 1 << 20


def page_falls(meminfo_text, log_text, loaded_at):
    """Where the page estimate (daemon/proc/kernel_memory.cpp) fell by PAGE_FALL or more between
    two polls (checks.sh's esc_meminfo), as text: the seconds after insmod, the fall, what
    AnonPages, AnonHugePages and MemFree did meanwhile, and when leakwatchd read the kernel's
    symbols again (from its log). In the runs looked at, the falls and jumps came with those
    rereads, with AnonPages and AnonHugePages moving while MemFree did not follow: transparent
    huge pages of processes' memory being split or collapsed move the estimate by megabytes."""
    samples, cur = [], None
    for line in (meminfo_text or "").splitlines():
        if line.startswith("at "):
            cur = {"uptime": float(line.split()[1])}
            samples.append(cur)
        elif cur is not None and ":" in line:
            k, _, v = line.partition(":")
            cur[k] = int(v.split()[0]) * 1024
    if not samples:
        return []

    def estimate(m):
        return m.get("MemTotal", 0) - m.get("MemFree", 0) - sum(m.get(k, 0) for k in (
            "Buffers", "Cached", "AnonPages", "Slab", "KernelStack", "PageTables", "Percpu"))
    reads = []
    for stamp in re.findall(r"^(\S+) info kernel symbols read again", log_text or "", re.M):
        at = datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.timezone.utc)
        reads.append(at.timestamp() - loaded_at)
    # Poll times are the guest's uptime; the first poll is at insmod, give or take a second.
    t0 = samples[0]["uptime"]
    out = []
    for a, b in zip(samples, samples[1:]):
        fall = estimate(a) - estimate(b)
        if fall >= PAGE_FALL:
            def d(k):
                return (b.get(k, 0) - a.get(k, 0)) >> 20
            out.append(f"{fall >> 20} MiB at about {b['uptime'] - t0:.0f}s after insmod "
                       f"(AnonPages {d('AnonPages'):+d} MiB, AnonHugePages "
                       f"{d('AnonHugePages'):+d} MiB, MemFree {d('MemFree'):+d} MiB)")
    if out and reads:
        out.append("leakwatchd read the kernel's symbols again at "
                   + ", ".join(f"{r:.0f}s" for r in reads))
    return out


def escalation_reasons(log_text):
    """{counter: the reason leakwatchd logged} for its escalations, and the counters released."""
    escalated = dict(re.findall(r"kernel: escalated (\S+): (.*?); tracing", log_text or ""))
    released = re.findall(r"kernel: released (\S+): (.*?); its tracepoints off", log_text or "")
    return escalated, released


def evaluate_escalation(data, fail):
    """Checks the escalation phase of one guest. `data`: the phase's files as read (see
    run_matrix.evaluate_escalation). What is compared, per kind: the module's objects kept in
    the ticks that started after leakwatchd began recording that kind (recording_start), times
    their size, against the bytes and allocations of the stacks at the module's function for
    the kind, within TOLERANCE.
    Allocations made before the escalation are not traced, so only what came after can be
    outstanding. Returns the table rows and notes on what else was escalated."""
    truth, ticks_text, base, held = (data.get(k) for k in ("truth", "ticks", "base", "held"))
    if base is None or held is None:
        fail(("kmod_escalate", f"no /api/v1/kernel answer "
              f"{'before the module' if base is None else 'at the end'}"))
        return [], []
    if base.get("stacks"):
        fail(("kmod_escalate", f"kernel stacks before any escalation (tracepoints attached "
              f"before a counter grew): {[s['site'] for s in base['stacks']][:8]}"))
    if "following the kernel's counters" not in (data.get("log") or ""):
        fail(("kmod_escalate", "leakwatchd did not start following the kernel's counters"))
    sizes = slab_sizes(data.get("slabinfo_after")) or slab_sizes(data.get("slabinfo_before"))
    counters = module_counters(truth, sizes)
    escalated = {c["counter"]: c["escalated_at"] for c in held["counters"] if c["escalated"]}
    reasons, released = escalation_reasons(data.get("log"))
    base_bytes = {c["counter"]: c["bytes"] for c in base["counters"]}
    # A counter's bytes in the first answer that showed it escalated.
    at_escalation = {}
    for poll in data.get("polls", []):
        for c in poll["counters"]:
            if c["escalated"] and c["counter"] not in at_escalation:
                at_escalation[c["counter"]] = c["bytes"]
    loaded_at = data["loaded_at"]
    history = ticks(ticks_text)
    if not history or history[-1][1] != truth["kmalloc"][1]:
        fail(("kmod_escalate", f"the module's ticks end at {history[-1] if history else None}, "
              f"before its last ({truth['kmalloc'][1]} kept): the times are incomplete"))
        return [], []
    rows = []
    for kind, counter in counters.items():
        t_bytes, t_count = truth[kind]
        unit = t_bytes // t_count if t_count else 0
        row = {"kind": kind, "counter": counter, "unit": unit,
               "grown": (at_escalation.get(counter, 0) - base_bytes.get(counter, 0)
                         if counter in at_escalation else None)}
        rows.append(row)
        since, by = recording_start(kind, unit, escalated, sizes)
        if since is None:
            final = next((c for c in held["counters"] if c["counter"] == counter), None)
            grew = (final["bytes"] - base_bytes.get(counter, 0)) if final else None
            gone = [why for name, why in released if name == counter]
            row["missing"] = ((f"escalated, then released ({gone[0]}), and not escalated again"
                               if gone else "not escalated") +
                              f": the counter grew {grew} bytes from insmod to the "
                              f"end, the module kept {t_bytes}"
                              + (f"; growth {final['growth_bytes_per_second']:.0f} B/s, suspected "
                                 f"{final['leak_suspected']}" if final else ""))
            falls = page_falls(data.get("meminfo"), data.get("log"), loaded_at)
            if kind == "page" and falls:
                # The estimate fell, which the module cannot make it do: the detector judges a
                # series with such a fall on its envelopes for 4 windows (docs/detection.md).
                row["missing"] += "; the page estimate fell " + "; ".join(falls)
                row["explained"] = True
            else:
                fail(("kmod_escalate", f"{kind}: {counter} {row['missing']}"))
            continue
        count, nearest = kept_since(history, loaded_at, since, t_count)
        row.update(after=since - loaded_at, by=by, truth=count * unit, truth_count=count,
                   nearest=nearest)
        if count == 0 and kind == "page":
            # Escalated after the module's last tick: nothing it kept is left to attribute. Only
            # the page estimate is that late (its noise delays a suspicion by up to 4 windows,
            # docs/detection.md); the counters of the other kinds are exact, and there a late
            # escalation stays a failure (within() of 0 is false).
            row["missing"] = (f"escalated {since - loaded_at:.1f}s after insmod, after the "
                              f"module's last tick: nothing it kept is left to attribute")
            row["explained"] = True
            continue
        stacks = module_stacks(held, kind)
        got = sum(s["outstanding_bytes"] for s in stacks)
        n = sum(s["outstanding_allocations"] for s in stacks)
        row.update(got=got, got_count=n)
        unnamed = [s["stack_id"] for s in stacks if not named(s, kind)]
        if unnamed:
            fail(("kmod_escalate", f"{kind}: stacks {unnamed} do not name {SITES[kind]} in "
                  f"[{MODULE}]"))
        ok = within(got, count * unit) and within(n, count)
        row["verdict"] = "yes" if ok else "NO"
        if not ok:
            fail(("kmod_escalate", f"{kind}: stacks at {SITES[kind]} hold {got} bytes in {n} "
                  f"allocations; the module kept {count * unit} in {count} after {by} was "
                  f"escalated {since - loaded_at:.1f}s after insmod (5%; nearest tick "
                  f"{nearest:+.3f}s from it)"))
        if kind == "kmalloc" and stacks:
            row["stack"] = stack_text(max(stacks, key=lambda s: s["outstanding_bytes"]))
    mine = {r["counter"] for r in rows}
    others = []
    for name, at in sorted(escalated.items(), key=lambda kv: kv[1]):
        if name in mine:
            continue
        grown = at_escalation.get(name, 0) - base_bytes.get(name, 0)
        others.append(f"{name} ({counter_kind(name) or 'not traceable'}) escalated "
                      f"{at - loaded_at:.1f}s after insmod, grown {grown} bytes since: "
                      f"{reasons.get(name, 'no reason logged')}")
        if grown <= 0:
            fail(("kmod_escalate", f"{name} was escalated but had not grown: {others[-1]}"))
    # A counter of the module's released before the end has its records dropped: it is compared
    # from its escalation again, or reported as not escalated above.
    for name, why in released:
        others.append(f"{name} released before the end: {why}")
    return rows, others
