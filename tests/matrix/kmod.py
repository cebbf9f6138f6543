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
TOLERANCE = 0.05
# Below TOLERANCE, only when the kernel's count of skipped program runs accounts for it.
SHORT_TOLERANCE = 0.20


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


def evaluate(truth, held, unloaded, fail, metrics=(None, None), missed=0):
    """Checks one guest's run: per kind, the stacks at the module's function hold what it leaked
    within TOLERANCE, in bytes and in allocations (so the freed share is not counted), each
    names the function in [lw_kleak]; after rmmod the same, still named. `metrics`, the
    /metrics texts taken with `held` and `unloaded` (None: not checked): the series with the
    function as their site must hold the same within TOLERANCE.

    `missed`: kmem program runs the kernel skipped while the module ran (kernel_program_missed;
    each loses at most one allocation or free). A shortfall beyond TOLERANCE is accepted only
    when those skipped runs account for every allocation missing, and never beyond
    SHORT_TOLERANCE; the row then says "short" (7.2, where tracepoints run with preemption on).
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
            explained = (t_count - count <= missed and
                         within(got, t_bytes, SHORT_TOLERANCE) and
                         within(count, t_count, SHORT_TOLERANCE) and got <= t_bytes)
            if not (within(got, t_bytes) and within(count, t_count)) and explained:
                row["short"] = True
            elif not within(got, t_bytes) or not within(count, t_count):
                sites = sorted({(s["kind"], s["site"]) for s in k["stacks"]
                                if any(f.get("module") == f"[{MODULE}]" for f in s["frames"])})
                fail(("kmod", f"{kind} ({what}): stacks at {SITES[kind]} hold {got} bytes in "
                      f"{count} allocations, the module leaked {t_bytes} in {t_count} (5%); "
                      f"stacks with [{MODULE}] frames: {sites}"))
            if text is not None:
                series = series_bytes(text, SITES[kind])
                row[phase + "_series"] = series
                if not within(series, t_bytes) and not (
                        explained and within(series, t_bytes, SHORT_TOLERANCE) and
                        series <= t_bytes):
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
