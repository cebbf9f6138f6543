"""Debian root file systems for the tests, made with debootstrap and cached outside the build
tree, and copy-on-write overlays of them for one run each.

A root file system is cached under CACHE (LEAKWATCH_ROOTFS_CACHE, default
/var/cache/leakwatch/rootfs) as NAME-KEY, KEY a hash of what makes it (the recipe number, the
suite, the variant and the package list): a fresh clone, a new build tree or another
checkout reuse it, and a changed package list makes a new one (the old one of the same NAME
is removed, ~100-300 MB each). Runs never write into the cache: each mounts an overlay whose
upper layer is its own and is removed afterwards.

Needs root and debootstrap.
"""
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import time

CACHE = os.environ.get("LEAKWATCH_ROOTFS_CACHE", "/var/cache/leakwatch/rootfs")
# Bump when the way a root file system is made changes: new cache keys, fresh root file systems.
RECIPE = 1


class RootfsError(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def host_debian_mirror(suite):
    """The URI the host's apt uses for a Debian suite's main archive (None: debootstrap's
    default). LEAKWATCH_DEBIAN_MIRROR overrides it."""
    if os.environ.get("LEAKWATCH_DEBIAN_MIRROR"):
        return os.environ["LEAKWATCH_DEBIAN_MIRROR"]
    files = glob.glob("/etc/apt/sources.list") + sorted(glob.glob("/etc/apt/sources.list.d/*"))
    for path in files:
        try:
            text = open(path).read()
        except OSError:
            continue
        if path.endswith(".sources"):  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if ("main" in fields.get("Components", "").split()
                        and "deb" in fields.get("Types", "").split()
                        and "/debian" in fields.get("URIs", "")
                        and not fields.get("URIs", "").rstrip("/").endswith("-security")):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
                if m and "main" in m.group(3).split() and m.group(2) == suite:
                    return m.group(1)
    return None


def ensure(name, suite, packages=(), variant="minbase"):
    """The cached root file system NAME for this suite, variant and package list (debootstrap
    --include), made when missing. Returns its path."""
    packages = sorted(set(packages))
    key = hashlib.sha256(json.dumps({"recipe": RECIPE, "suite": suite, "variant": variant,
                                     "packages": packages}).encode()).hexdigest()[:16]
    os.makedirs(CACHE, exist_ok=True)
    rootfs = os.path.join(CACHE, f"{name}-{key}")
    with open(os.path.join(CACHE, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for old in glob.glob(os.path.join(CACHE, f"{name}-*")):
            if old != rootfs and not old.endswith(".tmp"):
                log(f"removing stale root file system {old}")
                shutil.rmtree(old, ignore_errors=True)
        if os.path.isfile(os.path.join(rootfs, "usr/lib/os-release")):
            log(f"cached root file system {rootfs}")
            return rootfs
        if not shutil.which("debootstrap"):
            raise RootfsError("debootstrap is not installed (scripts/deps.sh)")
        tmp = rootfs + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = ["debootstrap", f"--variant={variant}"]
        if packages:
            cmd.append("--include=" + ",".join(packages))
        cmd += [suite, tmp]
        mirror = host_debian_mirror(suite)
        if mirror:
            cmd.append(mirror)
        log(f"building root file system {name} ({suite}, {len(packages)} packages): "
            f"{' '.join(cmd)}")
        start = time.monotonic()
        debootstrap_log = os.path.join(CACHE, f"{name}.debootstrap.log")
        with open(debootstrap_log, "w") as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            tail = open(debootstrap_log, errors="replace").read()[-3000:]
            shutil.rmtree(tmp, ignore_errors=True)
            raise RootfsError(f"debootstrap failed ({r.returncode}):\n{tail}")
        # A smaller cache: nothing needs the downloaded .debs again.
        for deb_file in glob.glob(os.path.join(tmp, "var/cache/apt/archives/*.deb")):
            os.unlink(deb_file)
        os.rename(tmp, rootfs)
        log(f"root file system {name} built in {time.monotonic() - start:.0f}s")
        return rootfs


def mounts_under(path):
    """Mount points at or below `path`, deepest first."""
    out = []
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt == path or mnt.startswith(prefix):
                out.append(mnt)
    return sorted(out, key=len, reverse=True)


def unmount_all(path):
    for mnt in mounts_under(path):
        if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mnt], capture_output=True)


class Overlay:
    """A copy-on-write view of a cached root file system at RUN_DIR/merged: writes go to
    RUN_DIR/upper. remove() unmounts everything below RUN_DIR and deletes it."""

    def __init__(self, rootfs, run_dir):
        self.run_dir = run_dir
        self.root = os.path.join(run_dir, "merged")
        for d in ("upper", "work", "merged"):
            os.makedirs(os.path.join(run_dir, d))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={rootfs},upperdir={run_dir}/upper,workdir={run_dir}/work",
                        self.root], check=True)

    def path(self, guest_path):
        return os.path.join(self.root, guest_path.lstrip("/"))

    def remove(self):
        unmount_all(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def left_behind(self):
        """What remove() could not remove: mounts, or the directory itself."""
        return mounts_under(self.run_dir) or ([self.run_dir] if os.path.exists(self.run_dir)
                                              else [])
