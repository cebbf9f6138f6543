#!/usr/bin/python3
"""The README's two commands on a pristine Debian 12 (ctest: install.from_nothing; labels
install, root, slow).

A machine that has run the suite before hides a broken install script: its packages are
already there. This test runs the two commands in a root file system that has nothing but
Debian's minimal base (debootstrap --variant=minbase, cached by tests/harness/debian_rootfs.py
outside the build tree), through a copy-on-write overlay, so that every run starts from the
same pristine state:

  1. A copy of the source tree (the files git knows, as they are in the working tree) goes to
     /root/leakwatch in the overlay, which gets /proc, /sys, /dev and the host's resolv.conf.
  2. The run command's set-up, in a chroot: `scripts/run.sh --check-config` installs what the
     daemon needs, builds it alone, and checks the shipped config and that the BPF programs
     load. Checked: the verdict; that no test-only package was installed (a JDK, QEMU,
     Prometheus, jemalloc, a cross compiler) and no test, fixture or benchmark built.
  3. The run command itself: `scripts/run.sh --web.listen-address 127.0.0.1:PORT` serves
     /metrics (leakwatch_build_info) until SIGTERM, and exits 0.
  4. The test command's install and build steps: `BUILD_TYPE=Release scripts/test.sh
     --build-only` (so CI also builds Release, with warnings as errors). Checked: the unit
     tests, the fixtures and the benchmarks are built, in Release, with -Werror on. The
     tests themselves are not run here: the suite around this test runs them.

Downloaded .debs are kept in /var/cache/leakwatch/apt-archives (bind-mounted over the
overlay's apt cache) so that a rerun does not download them again; the package state is
pristine every time.

The two builds compile through the host's ccache, with its cache (/var/cache/leakwatch/ccache,
the one scripts/ccache.sh gives the sanitized and fuzz builds) bind-mounted at the same path:
a rerun compiles only what changed, in the chroot's own path (/root/leakwatch, the same on
every run, so no path is rewritten). The ccache program and the one library it needs that
minbase lacks (libhiredis) are copied to /opt/leakwatch-test-ccache in the overlay, outside
dpkg's view and the guest's PATH, and reached only through CMAKE_C_COMPILER_LAUNCHER and
CMAKE_CXX_COMPILER_LAUNCHER in the commands' environment; the package state the commands start
from is still minbase's. A cache cannot hide a missing package: configuring (find_package,
pkg-config), running protoc, bpftool and clang for the BPF objects, and linking are never
cached, and a compile whose header is gone misses the cache (ccache checks every header a
cached result was made from) and fails in the preprocessor. Checked once by hand: with the
cache warm, libcrypt-dev purged after a first build and the objects removed, the rebuild
stopped at "crypt.h: No such file or directory". LEAKWATCH_INSTALL_CCACHE=0 compiles without
it. The first run on a machine, with the cache cold, takes as long as without it.

Everything else is removed afterwards, pass or fail: processes left in the chroot are killed,
mounts undone, the run directory deleted.

Environment: LEAKWATCH_SOURCE_DIR (the tree to copy; required), LEAKWATCH_BUILD_DIR (where the
run directory goes; required), LEAKWATCH_DEBIAN_MIRROR, LEAKWATCH_ROOTFS_CACHE.
Needs root, debootstrap and network access to the Debian mirror.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import debian_rootfs  # noqa: E402
from debian_rootfs import log  # noqa: E402
from lwtest import Failure, check, wait_until  # noqa: E402

SUITE = "bookworm"
APT_ARCHIVES = os.environ.get("LEAKWATCH_APT_ARCHIVES", "/var/cache/leakwatch/apt-archives")
GUEST_ENV = ["/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"]
TREE = "/root/leakwatch"
CCACHE_DIR = os.environ.get("LEAKWATCH_CCACHE_DIR", "/var/cache/leakwatch/ccache")
GUEST_CCACHE = "/opt/leakwatch-test-ccache"
# Packages only the tests need: the run command must not install them. (Not catch2: Debian's
# libspdlog-dev depends on it.)
TEST_ONLY = ["openjdk-17-jdk-headless", "qemu-system-x86", "prometheus", "libjemalloc2",
             "gcc-aarch64-linux-gnu", "debootstrap", "rpm", "golang-go", "chromium"]


def source_files(src):
    """Paths (relative) of the tree: what git tracks or would track, else every file outside
    build trees."""
    r = subprocess.run(["git", "-C", src, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], capture_output=True)
    if r.returncode == 0:
        return [p.decode() for p in r.stdout.split(b"\0") if p]
    out = []
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if not d.startswith("build") and d != ".git"]
        out += [os.path.relpath(os.path.join(root, f), src) for f in files]
    return out


def copy_tree(src, dst):
    n = 0
    for rel in source_files(src):
        s = os.path.join(src, rel)
        if not os.path.lexists(s):
            continue  # deleted in the working tree
        d = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        shutil.copy2(s, d, follow_symlinks=False)
        n += 1
    return n


class Chroot:
    def __init__(self, overlay):
        self.overlay = overlay
        self.root = overlay.root
        self.logs = os.path.join(overlay.run_dir, "logs")
        os.makedirs(self.logs)
        self.env = []  # the guest's compiler cache, when prepare() sets it up

    def prepare(self):
        root = self.root
        subprocess.run(["mount", "-t", "proc", "proc", f"{root}/proc"], check=True)
        for d in ("sys", "dev"):
            subprocess.run(["mount", "--rbind", f"/{d}", f"{root}/{d}"], check=True)
            subprocess.run(["mount", "--make-rslave", f"{root}/{d}"], check=True)
        shutil.copy("/etc/resolv.conf", f"{root}/etc/resolv.conf")
        os.makedirs(os.path.join(APT_ARCHIVES, "partial"), exist_ok=True)
        subprocess.run(["mount", "--bind", APT_ARCHIVES, f"{root}/var/cache/apt/archives"],
                       check=True)
        self.env = []
        if os.environ.get("LEAKWATCH_INSTALL_CCACHE", "1") != "0":
            self.env = self.mount_ccache()

    def mount_ccache(self):
        """The host's ccache for the guest's compiles (see the module's comment); returns the
        environment that turns it on, empty when the host has no ccache."""
        host = shutil.which("ccache")
        if not host:
            log("no ccache on the host: the builds compile everything")
            return []
        r = subprocess.run(["ldd", host], capture_output=True, text=True, check=True)
        libs = re.findall(r"=> (/\S+/libhiredis\.so[.\d]*) ", r.stdout)
        guest = self.overlay.path(GUEST_CCACHE)
        os.makedirs(os.path.join(guest, "lib"))
        shutil.copy2(host, os.path.join(guest, "ccache.bin"))
        for lib in libs:
            shutil.copy2(lib, os.path.join(guest, "lib"))
        # A wrapper: the library path is ccache's own, not the guest's (no LD_LIBRARY_PATH
        # for the compilers it runs).
        with open(os.path.join(guest, "ccache"), "w") as f:
            f.write(f"#!/bin/sh\nexec /lib64/ld-linux-x86-64.so.2 --library-path "
                    f"{GUEST_CCACHE}/lib {GUEST_CCACHE}/ccache.bin \"$@\"\n")
        os.chmod(os.path.join(guest, "ccache"), 0o755)
        os.makedirs(CCACHE_DIR, exist_ok=True)
        os.makedirs(self.overlay.path(CCACHE_DIR), exist_ok=True)
        subprocess.run(["mount", "--bind", CCACHE_DIR, self.overlay.path(CCACHE_DIR)],
                       check=True)
        launcher = f"{GUEST_CCACHE}/ccache"
        return [f"CMAKE_C_COMPILER_LAUNCHER={launcher}",
                f"CMAKE_CXX_COMPILER_LAUNCHER={launcher}", f"CCACHE_DIR={CCACHE_DIR}",
                f"CCACHE_MAXSIZE={os.environ.get('CCACHE_MAXSIZE', '4G')}",
                f"CCACHE_STATSLOG={TREE}/ccache-stats.log"]

    def ccache_counts(self):
        """(hits, misses) of the guest's compiles so far: ccache's per-compile log."""
        try:
            text = open(self.overlay.path(f"{TREE}/ccache-stats.log")).read()
        except OSError:
            return 0, 0
        hits = len(re.findall(r"^(?:direct|preprocessed)_cache_hit$", text, re.M))
        misses = len(re.findall(r"^cache_miss$", text, re.M))
        return hits, misses

    def argv(self, command, env=()):
        return ["chroot", self.root, *GUEST_ENV, *self.env, *env, "bash", "-c",
                f"cd {TREE} && {command}"]

    def run(self, name, command, env=(), timeout=3600):
        """Runs a shell command in the tree, its output to logs/NAME.log; returns (seconds,
        output)."""
        path = os.path.join(self.logs, name + ".log")
        log(f"chroot: {command}")
        start = time.monotonic()
        with open(path, "w") as f:
            r = subprocess.run(self.argv(command, env), stdout=f, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=timeout)
        took = time.monotonic() - start
        out = open(path, errors="replace").read()
        if r.returncode != 0:
            raise Failure(f"`{command}` exited {r.returncode} after {took:.0f}s:\n"
                          f"{out[-6000:]}")
        return took, out

    def installed(self, package):
        r = subprocess.run(["chroot", self.root, "dpkg-query", "-W", "-f=${db:Status-Abbrev}",
                            package], capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.startswith("ii")

    def kill_all(self):
        """Kills every process whose root is in the chroot (a daemon apt's scripts started)."""
        real = os.path.realpath(self.root)
        for _ in range(3):
            found = []
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                try:
                    root = os.readlink(f"/proc/{d}/root")
                except OSError:
                    continue
                if root == real or root.startswith(real + "/"):
                    found.append(int(d))
            if not found:
                return
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode(errors="replace")
    except OSError:
        return None


def scenario(c, timings):
    def step(name, seconds):
        timings.append((name, seconds))
        log(f"{name}: {seconds:.0f}s")

    def cached(before):
        if not c.env:
            return ""
        hits, misses = c.ccache_counts()
        return f" (ccache: {hits - before[0]} hits, {misses - before[1]} misses)"

    # 2. the run command's set-up
    took, out = c.run("run-check-config", "scripts/run.sh --check-config")
    step("run command: install the daemon's packages, build the daemon, --check-config"
         + cached((0, 0)), took)
    check("configuration config/leakwatch.yaml is valid" in out and "BPF programs load" in out,
          f"--check-config did not pass:\n{out[-2000:]}")
    wrong = [p for p in TEST_ONLY if c.installed(p)]
    check(not wrong, f"the run command installed test-only packages: {wrong}")
    built = os.listdir(c.overlay.path(f"{TREE}/build/bin"))
    check("leakwatchd" in built, f"no build/bin/leakwatchd: {built}")
    extra = [b for b in built if b != "leakwatchd"]
    check(not extra and not os.path.exists(c.overlay.path(f"{TREE}/build/tests/bin")),
          f"the run command built more than the daemon: {extra}")

    # 3. the run command serves /metrics on 127.0.0.1
    port = free_port()
    path = os.path.join(c.logs, "run-serve.log")
    start = time.monotonic()
    with open(path, "w") as f:
        proc = subprocess.Popen(
            c.argv(f"exec scripts/run.sh --web.listen-address 127.0.0.1:{port}"),
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        def served():
            check(proc.poll() is None, f"scripts/run.sh exited {proc.returncode}:\n"
                  f"{open(path, errors='replace').read()[-3000:]}")
            text = fetch(f"http://127.0.0.1:{port}/metrics")
            return text if text and "leakwatch_build_info" in text else None
        text = wait_until(served, 120, "scripts/run.sh to serve /metrics", step=0.2)
        step("run command (installed, built): leakwatchd serves /metrics",
             time.monotonic() - start)
        check("leakwatch_config_last_reload_successful 1" in text,
              "/metrics has no leakwatch_config_last_reload_successful 1")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        check(rc == 0, f"leakwatchd exited {rc} on SIGTERM:\n"
              f"{open(path, errors='replace').read()[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    # 4. the test command's install and build steps, in Release
    before = c.ccache_counts()
    took, out = c.run("test-build-only", "scripts/test.sh --build-only",
                      env=["BUILD_TYPE=Release"])
    step("test command: install the tests' packages, build everything (Release, -Werror)"
         + cached(before), took)
    cache = open(c.overlay.path(f"{TREE}/build/CMakeCache.txt")).read()
    check("CMAKE_BUILD_TYPE:STRING=Release" in cache, "the test command's build is not Release")
    check("LEAKWATCH_WERROR:BOOL=ON" in cache, "the test command's build has -Werror off")
    for f in ("build/bin/unit_config", "build/bin/unit_symbols", "build/tests/bin/leak_steady",
              "build/tests/bin/leak_jemalloc", "build/bin/alloc_bench", "build/bin/leakwatchd"):
        check(os.path.isfile(c.overlay.path(f"{TREE}/{f}")), f"the test command did not build {f}")


def main():
    check(os.geteuid() == 0, "this test makes a chroot and loads BPF: run it as root")
    src = os.environ.get("LEAKWATCH_SOURCE_DIR")
    build = os.environ.get("LEAKWATCH_BUILD_DIR")
    check(src and os.path.isdir(src), "LEAKWATCH_SOURCE_DIR must name the source tree")
    check(build and os.path.isdir(build), "LEAKWATCH_BUILD_DIR must name the build tree")
    work = os.path.join(os.path.abspath(build), "install")
    os.makedirs(work, exist_ok=True)
    for old in os.listdir(work):  # what a run killed by a timeout left
        if old.startswith("run-"):
            log(f"removing an earlier run's {old}")
            debian_rootfs.unmount_all(os.path.join(work, old))
            shutil.rmtree(os.path.join(work, old), ignore_errors=True)

    timings = []
    start = time.monotonic()
    try:
        rootfs = debian_rootfs.ensure("pristine", SUITE)
    except debian_rootfs.RootfsError as e:
        raise Failure(str(e)) from None
    timings.append(("pristine root file system (debootstrap --variant=minbase, or the cache)",
                    time.monotonic() - start))
    overlay = debian_rootfs.Overlay(rootfs, os.path.join(work, f"run-{os.getpid()}"))
    c = Chroot(overlay)
    failed = False
    try:
        t = time.monotonic()
        n = copy_tree(src, overlay.path(TREE))
        c.prepare()
        timings.append((f"copy the tree ({n} files) and mount /proc, /sys, /dev",
                        time.monotonic() - t))
        scenario(c, timings)
    except Exception as e:  # noqa: BLE001 - report, then clean up
        failed = True
        print(f"FAIL from_nothing: {e}")
    finally:
        c.kill_all()
        overlay.remove()
    left = overlay.left_behind()
    if left:
        print(f"FAIL cleanup: left behind {left}")
        failed = True
    print("timings:")
    for name, s in timings:
        print(f"  {s:7.0f}s  {name}")
    print(f"  {time.monotonic() - start:7.0f}s  total")
    if not failed:
        print("PASS from_nothing")
    print(f"{0 if failed else 1} passed, {1 if failed else 0} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"FAIL from_nothing: {e}")
        print("0 passed, 1 failed")
        sys.exit(1)
