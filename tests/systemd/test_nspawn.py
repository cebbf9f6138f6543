#!/usr/bin/python3
"""End-to-end test of the leakwatch .deb under a real systemd, PID 1 of a systemd-nspawn
container (ctest: systemd.nspawn_service; labels systemd, root, slow).

  1. A Debian 12 root file system, made with debootstrap and cached under the build tree
     (BUILD/nspawn/rootfs-KEY, KEY a hash of the package list: systemd, dbus, curl, bpftool and
     the .deb's own Depends). Each run boots a copy-on-write overlay of it, so the cache stays
     clean and a run leaves nothing in it.
  2. Boot: systemd-nspawn -b with --register=no --keep-unit (no systemd/machined on the host),
     --capability=all and --system-call-filter='bpf perf_event_open' (BPF inside the
     container), --private-network (the guest's port 10071 is its own). Commands run in the
     guest through nsenter into the namespaces of the container's PID 1 (machinectl and
     systemd-run -M need a registered machine).
  3. dpkg -i the .deb: enabled, started, conffile registered, the unit installed once.
  4. A rule for the fixture (/root/leak_steady, the program in tests/progs that leaks through
     leak_record_entry) and `systemctl start leakwatch`: active, /metrics shows the leak at
     its site with the exact bytes; kernel tracking is on too, and its stacks are symbolized
     (CAP_SYSLOG and /proc/kallsyms under the unit's sandbox).
  5. A second rule + `systemctl reload`: still active, the new rule's process (a copy of the
     fixture under /home, which the unit hides from the daemon's own view) is watched, and
     the first fixture's outstanding bytes are exactly what they were (state kept).
  6. A broken YAML + reload: still active, leakwatch_config_last_reload_successful 0, the
     journal names the bad key, both fixtures still watched.
  7. `systemctl stop leakwatch`: inactive within 5 s, and bpftool on the host lists none of
     the BPF programs and links the daemon had loaded; the fixtures still run.
  8. An upgrade (the same .deb with a higher version) keeps the operator's edited conffile and
     restarts the service; `dpkg --purge` stops it and removes the unit, binary, config,
     enablement link and state directory.
  Cleanup, pass or fail: the container is powered off (killed if it does not stop), the
  overlay unmounted, the cgroups nspawn made removed, the run directory deleted; only the
  cached root file system stays.

How long it takes (2 cores, measured): the first run builds the root file system, 44 s with
debootstrap from the Debian mirror the host's apt uses (then cached); a run with the cache takes
about 15-20 s: boot 0.4 s, dpkg -i 2.5 s, start 0.4 s, reload and bad reload 2 s, stop 2 s,
upgrade and purge 5 s, power-off and cleanup 0.3 s, plus the waits for the fixtures' leaks to
show in 1 s samples (a few seconds). The test prints its own timings at the end.

Environment: LEAKWATCH_BUILD_DIR (the build tree; required), LEAKWATCH_DEB (default: the
newest BUILD/leakwatch_*.deb, which the systemd.package test builds), FIXTURES_BIN (default
BUILD/tests/bin), LEAKWATCH_DEBIAN_MIRROR (default: the host's apt source for Debian 12),
LEAKWATCH_NSPAWN_KEEP=1 (on failure, leave the container running to look into it; the next
run removes it).
Needs root, debootstrap, systemd-nspawn (systemd-container), nsenter and bpftool on the host.
"""
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from lwtest import Failure, check, parse_metrics  # noqa: E402
from lwtest import wait_until as _wait_until  # noqa: E402

SUITE = "bookworm"
# Bump when the way the root file system is made changes: a new cache key, a fresh rootfs.
ROOTFS_RECIPE = 1
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "curl", "bpftool"]
GUEST_ENV = ["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
             "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"]
PORT = 10071
LEAK1 = (4096, 20)   # fixture 1: 20 leaks of 4 KiB through leak_record_entry
LEAK2 = (8192, 20)   # fixture 2 (added by reload): 20 leaks of 8 KiB


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_until(predicate, timeout, what, step=0.2):
    return _wait_until(predicate, timeout, what, step)


# ---- the cached root file system ------------------------------------------------------------

def deb_depends(deb):
    """Package names in the .deb's Depends (first of each alternative, no versions), virtual
    packages (libspdlog1.10-fmt9) replaced by the host's installed package that provides them:
    debootstrap resolves only real names, and the build host has every library installed."""
    out = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], check=True, capture_output=True,
                         text=True).stdout
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Provides}\n"],
                               check=True, capture_output=True, text=True).stdout
    real, provider = set(), {}
    for line in installed.splitlines():
        package, _, provides = line.partition("\t")
        real.add(package)
        for p in provides.split(","):
            if p.strip():
                provider.setdefault(p.split()[0], package)
    names = []
    for dep in out.split(","):
        dep = dep.split("|")[0].strip()
        if dep:
            name = re.split(r"[\s(:]", dep, maxsplit=1)[0]
            names.append(name if name in real else provider.get(name, name))
    return names


def host_debian_mirror():
    """The URI the host's apt uses for Debian 12's main archive (None: debootstrap's default)."""
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
                if (SUITE in fields.get("Suites", "").split()
                        and "main" in fields.get("Components", "").split()
                        and "deb" in fields.get("Types", "").split()):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
                if m and m.group(2) == SUITE and "main" in m.group(3).split():
                    return m.group(1)
    return None


def ensure_rootfs(nspawn_dir, deb):
    packages = sorted(set(BASE_PACKAGES + deb_depends(deb)))
    key = hashlib.sha256(json.dumps({"recipe": ROOTFS_RECIPE, "suite": SUITE,
                                     "packages": packages}).encode()).hexdigest()[:16]
    rootfs = os.path.join(nspawn_dir, f"rootfs-{key}")
    # Old caches (another package list) go: each is ~260 MB.
    for old in glob.glob(os.path.join(nspawn_dir, "rootfs-*")):
        if old != rootfs:
            log(f"removing stale root file system {old}")
            shutil.rmtree(old, ignore_errors=True)
    if os.path.isfile(os.path.join(rootfs, "usr/lib/os-release")):
        log(f"cached root file system {rootfs}")
        return rootfs
    check(shutil.which("debootstrap"), "debootstrap is not installed (scripts/deps.sh)")
    tmp = rootfs + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    mirror = host_debian_mirror()
    cmd = ["debootstrap", "--variant=minbase", "--include=" + ",".join(packages), SUITE, tmp]
    if mirror:
        cmd.append(mirror)
    log(f"building the root file system ({len(packages)} packages): {' '.join(cmd)}")
    start = time.monotonic()
    debootstrap_log = os.path.join(nspawn_dir, "debootstrap.log")
    with open(debootstrap_log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = open(debootstrap_log).read()[-3000:]
        shutil.rmtree(tmp, ignore_errors=True)
        raise Failure(f"debootstrap failed ({r.returncode}):\n{tail}")
    # Smaller cache; a container needs no downloaded .debs.
    for deb_file in glob.glob(os.path.join(tmp, "var/cache/apt/archives/*.deb")):
        os.unlink(deb_file)
    os.rename(tmp, rootfs)
    log(f"root file system built in {time.monotonic() - start:.0f}s")
    return rootfs


# ---- mounts, cgroups and processes a run leaves --------------------------------------------

def mounts_under(path):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt == path or mnt.startswith(path.rstrip("/") + "/"):
                out.append(mnt)
    return sorted(out, key=len, reverse=True)


def nspawn_pids_for(nspawn_dir):
    """systemd-nspawn processes (started by earlier runs of this test) booting a run dir here."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"systemd-nspawn" and any(
                a.startswith(os.path.join(nspawn_dir, "run-").encode()) for a in argv):
            pids.append(int(d))
    return pids


def container_leader(nspawn_pid):
    """The container's PID 1 (systemd, in another pid namespace): a descendant of nspawn."""
    own_ns = os.readlink("/proc/self/ns/pid")
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop(0)
        try:
            children = []
            for task in os.listdir(f"/proc/{pid}/task"):
                children += open(f"/proc/{pid}/task/{task}/children").read().split()
            for c in map(int, children):
                if os.readlink(f"/proc/{c}/ns/pid") != own_ns:
                    return c
                todo.append(c)
        except OSError:
            continue
    return None


def kill_container(nspawn_pid, leader):
    """SIGKILL to the container's PID 1 ends every process of its pid namespace; nspawn then
    exits (or is killed too)."""
    for pid in (leader, nspawn_pid):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
            p and os.path.exists(f"/proc/{p}") and _not_zombie(p) for p in (leader, nspawn_pid)):
        time.sleep(0.1)


def _not_zombie(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def own_cgroup_dirs():
    """The cgroup directories of this process (unified and name=systemd), where nspawn
    --keep-unit makes its "payload" and "supervisor" children."""
    dirs = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "":
                for base in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                    if os.path.exists(os.path.join(base, "cgroup.controllers")):
                        dirs.append(base + path)
                        break
            elif controllers == "name=systemd":
                dirs.append("/sys/fs/cgroup/systemd" + path)
    return dirs


def remove_cgroup_tree(path):
    """Removes a cgroup and its children, deepest first (a cgroup empties a moment after its
    last process has died, hence the retries)."""
    if not os.path.isdir(path):
        return
    for root, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
        for attempt in range(50):
            try:
                os.rmdir(root)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if attempt == 49:
                    log(f"could not remove cgroup {root}: {e}")
                time.sleep(0.1)


def cleanup_run(run_dir, proc=None, leader=None):
    if proc is not None and proc.poll() is None:
        # SIGTERM to nspawn powers the container off (SIGRTMIN+3 to its systemd).
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log("the container did not power off in 30 s: killing it")
            kill_container(proc.pid, leader)
            proc.wait()
    for mnt in mounts_under(run_dir):
        r = subprocess.run(["umount", mnt], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", mnt])
    for cg in own_cgroup_dirs():
        for child in ("payload", "supervisor"):
            remove_cgroup_tree(os.path.join(cg, child))
    shutil.rmtree(run_dir, ignore_errors=True)


def cleanup_stale_runs(nspawn_dir):
    """What a run killed by a ctest timeout left: its container, overlay and directory."""
    for pid in nspawn_pids_for(nspawn_dir):
        log(f"killing the container of an earlier run (systemd-nspawn pid {pid})")
        kill_container(pid, container_leader(pid))
    for run_dir in glob.glob(os.path.join(nspawn_dir, "run-*")):
        log(f"removing an earlier run's {run_dir}")
        cleanup_run(run_dir)


# ---- the container -----------------------------------------------------------------------

class Container:
    def __init__(self, nspawn_dir, rootfs):
        self.name = f"lwtest-{os.getpid()}-{int(time.time()) % 100000}"
        self.run_dir = os.path.join(nspawn_dir, "run-" + self.name)
        self.root = os.path.join(self.run_dir, "merged")
        self.proc = None
        self.leader = None
        for d in ("upper", "work", "merged"):
            os.makedirs(os.path.join(self.run_dir, d))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={rootfs},upperdir={self.run_dir}/upper,"
                        f"workdir={self.run_dir}/work", self.root], check=True)
        self.console_path = os.path.join(self.run_dir, "console.log")

    def boot(self):
        self.console = open(self.console_path, "w")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--register=no", "--keep-unit", "--capability=all",
             "--system-call-filter=bpf perf_event_open", "--private-network",
             "--console=read-only", "-b", "-D", self.root, "-M", self.name],
            stdin=subprocess.DEVNULL, stdout=self.console, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.leader = wait_until(self._find_leader, 30, "the container's systemd to start")
        state = wait_until(self._system_state, 60, "systemd in the container to finish booting")
        if state == "degraded":
            log("the container booted degraded:\n" +
                self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout)

    def _find_leader(self):
        check(self.proc.poll() is None,
              f"systemd-nspawn exited with {self.proc.returncode}:\n{self.console_text()}")
        leader = container_leader(self.proc.pid)
        try:
            if leader and open(f"/proc/{leader}/comm").read().strip() == "systemd":
                return leader
        except OSError:
            pass
        return None

    def _system_state(self):
        r = self.run(["systemctl", "is-system-running"], check=False)
        state = r.stdout.strip()
        return state if state in ("running", "degraded") else None

    def run(self, argv, check=True, timeout=60):
        cmd = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w",
               *GUEST_ENV, *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise Failure(f"in the container, {' '.join(argv)} exited {r.returncode}:\n"
                          f"{r.stdout}{r.stderr}")
        return r

    def path(self, guest_path):
        return os.path.join(self.root, guest_path.lstrip("/"))

    def write(self, guest_path, text, mode=0o644):
        with open(self.path(guest_path), "w") as f:
            f.write(text)
        os.chmod(self.path(guest_path), mode)

    def is_active(self, unit):
        return self.run(["systemctl", "is-active", unit], check=False).stdout.strip()

    def console_text(self):
        try:
            return open(self.console_path, errors="replace").read()[-4000:]
        except OSError:
            return ""

    def journal(self, unit, lines=60):
        return self.run(["journalctl", "--no-pager", "-o", "short-monotonic", "-n", str(lines),
                         "-u", unit], check=False).stdout

    def pid_ns(self):
        return os.readlink(f"/proc/{self.leader}/ns/pid")

    def cleanup(self):
        try:
            self.console.close()
        except Exception:  # noqa: BLE001 - cleanup goes on
            pass
        cleanup_run(self.run_dir, self.proc, self.leader)


# ---- leakwatch in the guest ---------------------------------------------------------------

def metrics(c):
    r = c.run(["curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{PORT}/metrics"], check=False)
    return parse_metrics(r.stdout) if r.returncode == 0 else None


def value(ms, name, **labels):
    for n, l, v in ms or []:
        if n == name and all(l.get(k) == w for k, w in labels.items()):
            return v
    return None


def stack_bytes(ms, watch, site="leak_record_entry"):
    """{stack_id: bytes} of the given site for one watch rule."""
    return {l["stack_id"]: v for n, l, v in ms or []
            if n == "leakwatch_stack_outstanding_bytes" and l.get("watch") == watch
            and l.get("site") == site}


def wait_stack_bytes(c, watch, truth, timeout=30):
    """Waits until the leak_record_entry stacks of `watch` hold exactly `truth` bytes."""
    seen = {}

    def done():
        m = metrics(c)
        seen["last"] = stack_bytes(m, watch)
        seen["sites"] = {l.get("site"): v for n, l, v in m or []
                         if n == "leakwatch_stack_outstanding_bytes" and l.get("watch") == watch}
        return m if sum(seen["last"].values()) == truth else None
    try:
        return wait_until(done, timeout, f"leak_record_entry of {watch} to hold {truth} bytes")
    except Failure as e:
        raise Failure(f"{e}; last seen: leak_record_entry {seen.get('last')}, "
                      f"all sites of {watch}: {seen.get('sites')}") from None


def config(rules):
    text = f'listen_address: "127.0.0.1:{PORT}"\ninterval: 1s\nkernel:\n  enabled: true\nwatch:\n'
    for name, comm in rules:
        text += f"  - name: {name}\n    match:\n      comm: {comm}\n"
    return text


def start_fixture(c, unit, path, leak, go):
    size, ticks = leak
    c.run(["systemd-run", f"--unit={unit}", f"--setenv=FIXTURE_GO={go}", path, str(size),
           str(ticks), "50"])
    pid = wait_until(lambda: int(c.run(["systemctl", "show", "-p", "MainPID", "--value", unit])
                                 .stdout.strip() or 0), 10, f"{unit} to run")
    return pid


def leakwatch_bpf_objects(c):
    """IDs of the BPF programs and links the guest's leakwatchd holds, from the fdinfo of its
    file descriptors seen from the host (Debian's bpftool has no `pids` column)."""
    ns = c.pid_ns()
    found = set()
    for pid in os.listdir("/proc"):
        try:
            if (not pid.isdigit() or open(f"/proc/{pid}/comm").read().strip() != "leakwatchd"
                    or os.readlink(f"/proc/{pid}/ns/pid") != ns):
                continue
            for fd in os.listdir(f"/proc/{pid}/fdinfo"):
                for line in open(f"/proc/{pid}/fdinfo/{fd}"):
                    key, _, val = line.partition(":")
                    if key in ("prog_id", "link_id"):
                        found.add((key[:4], int(val)))
        except OSError:
            continue
    return found


def bpf_names(kind):
    """{id: name} of the BPF programs or links loaded now (bpftool on the host)."""
    r = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True)
    check(r.returncode == 0, f"bpftool {kind} show failed: {r.stderr}")
    return {o["id"]: o.get("name", o.get("type", "")) for o in json.loads(r.stdout or "[]")}


def scenario(c, deb, fixture, timings):
    def step(name, since):
        timings.append((name, time.monotonic() - since))
        log(f"{name}: {timings[-1][1]:.1f}s")
        return time.monotonic()

    t = time.monotonic()
    shutil.copy(deb, c.path("/root/leakwatch.deb"))
    c.run(["dpkg", "-i", "/root/leakwatch.deb"], timeout=120)
    check(c.run(["systemctl", "is-enabled", "leakwatch"], check=False).stdout.strip() == "enabled",
          "postinst did not enable leakwatch.service")
    wait_until(lambda: c.is_active("leakwatch") == "active", 20,
               "postinst to start leakwatch (shipped config)")
    conffiles = c.run(["dpkg-query", "-W", "-f=${Conffiles}", "leakwatch"]).stdout
    check("/etc/leakwatch/leakwatch.yaml" in conffiles, f"no conffile registered: {conffiles!r}")
    units = c.run(["sh", "-c", "for d in /etc/systemd/system /usr/lib/systemd/system "
                   "/lib/systemd/system /usr/local/lib/systemd/system; do "
                   "[ -f $d/leakwatch.service ] && readlink -f $d/leakwatch.service; done | sort -u"
                   ]).stdout.split()
    check(units == ["/usr/lib/systemd/system/leakwatch.service"],
          f"the unit should be installed once, in /usr/lib/systemd/system: {units}")
    c.run(["systemctl", "stop", "leakwatch"])
    t = step("install the .deb (enabled, started, conffile, one unit)", t)

    # ---- start with one rule
    shutil.copy(fixture, c.path("/root/leak_steady"))
    os.makedirs(c.path("/home/lwtest"), exist_ok=True)
    shutil.copy(fixture, c.path("/home/lwtest/leak_other"))
    c.write("/etc/leakwatch/leakwatch.yaml", config([("steady1", "leak_steady")]))
    pid1 = start_fixture(c, "lw-fixture1", "/root/leak_steady", LEAK1, "/root/go1")
    c.run(["systemctl", "start", "leakwatch"])
    check(c.is_active("leakwatch") == "active",
          f"leakwatch is {c.is_active('leakwatch')} after start:\n{c.journal('leakwatch')}")
    t = step("systemctl start (READY=1)", t)
    ms = wait_until(lambda: (lambda m: m if value(m, "leakwatch_outstanding_bytes",
                                                  watch="steady1", pid=str(pid1)) is not None
                             else None)(metrics(c)), 20, "fixture 1 to be watched")
    c.write("/root/go1", "")
    truth1 = LEAK1[0] * LEAK1[1]
    ms = wait_stack_bytes(c, "steady1", truth1)
    before = stack_bytes(ms, "steady1")
    log(f"fixture 1 (pid {pid1}): leak_record_entry stacks {before}")
    kernel_sites = {l.get("site", "") for n, l, v in ms
                    if n == "leakwatch_stack_outstanding_bytes" and l.get("watch") == "kernel"}
    check(value(ms, "leakwatch_kernel_outstanding_bytes", kind="kmalloc") is not None,
          "no leakwatch_kernel_outstanding_bytes{kind=kmalloc}")
    check(any(re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", s) for s in kernel_sites),
          f"kernel stacks are not symbolized (kallsyms unreadable in the sandbox?): {kernel_sites}")
    t = step("/metrics shows the leak (exact bytes) and symbolized kernel stacks", t)

    # ---- reload with a second rule: state kept, new rule active
    stamp = value(ms, "leakwatch_config_last_reload_success_timestamp_seconds")
    pid2 = start_fixture(c, "lw-fixture2", "/home/lwtest/leak_other", LEAK2, "/root/go2")
    c.write("/etc/leakwatch/leakwatch.yaml",
            config([("steady1", "leak_steady"), ("steady2", "leak_other")]))
    c.run(["systemctl", "reload", "leakwatch"])
    ms = wait_until(lambda: (lambda m: m if value(m, "leakwatch_outstanding_bytes",
                                                  watch="steady2", pid=str(pid2)) is not None
                             else None)(metrics(c)), 20, "the reload to watch fixture 2")
    wait_until(lambda: c.is_active("leakwatch") == "active", 10, "leakwatch active after reload")
    check(value(ms, "leakwatch_config_last_reload_successful") == 1, "reload not successful")
    if stamp is not None:
        check(value(ms, "leakwatch_config_last_reload_success_timestamp_seconds") != stamp,
              "the reload timestamp did not change")
    c.write("/root/go2", "")
    truth2 = LEAK2[0] * LEAK2[1]
    ms = wait_stack_bytes(c, "steady2", truth2)
    check(stack_bytes(ms, "steady1") == before,
          f"fixture 1's stacks changed across the reload: {before} -> {stack_bytes(ms, 'steady1')}")
    t = step("reload: new rule active, fixture 1's bytes unchanged", t)

    # ---- a broken YAML: the running config stays
    c.write("/etc/leakwatch/leakwatch.yaml",
            config([("steady1", "leak_steady")]) + "    bogus_key: 1\n")
    c.run(["systemctl", "reload", "leakwatch"])
    ms = wait_until(lambda: (lambda m: m if value(m, "leakwatch_config_last_reload_successful") == 0
                             else None)(metrics(c)), 20,
                    "leakwatch_config_last_reload_successful to become 0")
    time.sleep(1.5)  # one more sample on the old config
    ms = metrics(c)
    check(c.is_active("leakwatch") == "active", "leakwatch is not active after a bad reload")
    check(stack_bytes(ms, "steady1") == before, "fixture 1's stacks changed after a bad reload")
    check(sum(stack_bytes(ms, "steady2").values()) == truth2,
          "fixture 2 is no longer watched after a bad reload (the old config should stay)")
    check("bogus_key" in c.journal("leakwatch", 200),
          "the journal does not name the bad key:\n" + c.journal("leakwatch"))
    t = step("broken YAML + reload: active, old config, reload_successful 0", t)

    # ---- stop: inactive, no BPF left
    objects = leakwatch_bpf_objects(c)
    check(any(kind == "prog" for kind, _ in objects), "leakwatchd holds no BPF program")
    progs = bpf_names("prog")
    log(f"leakwatchd holds {sum(k == 'prog' for k, _ in objects)} BPF programs and "
        f"{sum(k == 'link' for k, _ in objects)} links: "
        f"{sorted({progs.get(i, '?') for k, i in objects if k == 'prog'})}")
    stop_start = time.monotonic()
    c.run(["systemctl", "stop", "leakwatch"])
    stop_s = time.monotonic() - stop_start
    check(c.is_active("leakwatch") == "inactive", f"leakwatch is {c.is_active('leakwatch')}")
    check(stop_s < 5, f"systemctl stop took {stop_s:.1f}s (at most 5 s)")
    left = {}

    def gone():
        live = {"prog": bpf_names("prog"), "link": bpf_names("link")}
        left.clear()
        left.update({(k, i): live[k][i] for k, i in objects if i in live[k]})
        return not left
    try:
        wait_until(gone, 10, "the BPF programs and links of leakwatchd to go")
    except Failure:
        raise Failure(f"BPF objects of leakwatchd remain after stop (bpftool): {left}") from None
    for unit in ("lw-fixture1", "lw-fixture2"):
        check(c.is_active(unit) == "active", f"{unit} did not survive leakwatch's detach")
    t = step(f"systemctl stop ({stop_s:.1f}s): inactive, no BPF programs or links left", t)

    # ---- upgrade keeps the edited conffile and restarts; purge removes everything
    edited = config([("steady1", "leak_steady")]) + "# edited by the operator\n"
    c.write("/etc/leakwatch/leakwatch.yaml", edited)
    c.run(["systemctl", "start", "leakwatch"])
    old_pid = c.run(["systemctl", "show", "-p", "MainPID", "--value", "leakwatch"]).stdout.strip()
    shutil.copy(upgrade_deb(deb, c.run_dir), c.path("/root/leakwatch-upgrade.deb"))
    c.run(["dpkg", "-i", "--force-confdef", "--force-confold", "/root/leakwatch-upgrade.deb"],
          timeout=120)
    check(open(c.path("/etc/leakwatch/leakwatch.yaml")).read() == edited,
          "the upgrade replaced the edited /etc/leakwatch/leakwatch.yaml")
    wait_until(lambda: c.is_active("leakwatch") == "active", 20, "leakwatch after the upgrade")
    new_pid = c.run(["systemctl", "show", "-p", "MainPID", "--value", "leakwatch"]).stdout.strip()
    check(new_pid != old_pid, "the upgrade did not restart leakwatch")
    c.run(["dpkg", "--purge", "leakwatch"], timeout=120)
    check(c.is_active("leakwatch") in ("inactive", "unknown"), "leakwatch still runs after purge")
    for path in ("/etc/leakwatch/leakwatch.yaml", "/usr/lib/systemd/system/leakwatch.service",
                 "/usr/sbin/leakwatchd", "/var/lib/private/leakwatch",
                 "/etc/systemd/system/multi-user.target.wants/leakwatch.service"):
        check(not os.path.lexists(c.path(path)), f"{path} is left after dpkg --purge")
    step("upgrade keeps the edited conffile and restarts; purge removes everything", t)


def upgrade_deb(deb, work):
    """The same package with a higher version (VERSION+upgrade1), to test an upgrade."""
    tree = os.path.join(work, "upgrade")
    subprocess.run(["dpkg-deb", "-R", deb, tree], check=True)
    control = os.path.join(tree, "DEBIAN", "control")
    text = re.sub(r"^Version: (.*)$", r"Version: \1+upgrade1", open(control).read(), flags=re.M)
    open(control, "w").write(text)
    out = os.path.join(work, "leakwatch-upgrade.deb")
    subprocess.run(["dpkg-deb", "-b", "-Znone", tree, out], check=True, capture_output=True)
    return out


def main():
    check(os.geteuid() == 0, "this test boots a container and loads BPF: run it as root")
    build = os.environ.get("LEAKWATCH_BUILD_DIR")
    check(build and os.path.isdir(build), "LEAKWATCH_BUILD_DIR must name the build tree")
    for tool in ("systemd-nspawn", "nsenter", "bpftool", "dpkg-deb"):
        check(shutil.which(tool), f"{tool} is not installed (scripts/deps.sh)")
    deb = os.environ.get("LEAKWATCH_DEB") or max(
        glob.glob(os.path.join(build, "leakwatch_*.deb")), key=os.path.getmtime, default=None)
    check(deb and os.path.isfile(deb),
          f"no .deb in {build}: `cmake --build {build} --target package` (or ctest -R package)")
    fixture = os.path.join(os.environ.get("FIXTURES_BIN", os.path.join(build, "tests/bin")),
                           "leak_steady")
    check(os.path.isfile(fixture), f"fixture {fixture} is not built")

    nspawn_dir = os.path.join(os.path.abspath(build), "nspawn")
    os.makedirs(nspawn_dir, exist_ok=True)
    lock = open(os.path.join(nspawn_dir, ".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    cleanup_stale_runs(nspawn_dir)

    timings = []
    start = time.monotonic()
    rootfs = ensure_rootfs(nspawn_dir, deb)
    timings.append(("root file system (debootstrap or cache)", time.monotonic() - start))
    c = Container(nspawn_dir, rootfs)
    failed = False
    try:
        t = time.monotonic()
        c.boot()
        timings.append(("boot to systemd running", time.monotonic() - t))
        log(f"container {c.name} booted in {timings[-1][1]:.1f}s (PID 1 = host pid {c.leader})")
        scenario(c, deb, fixture, timings)
    except Exception as e:  # noqa: BLE001 - report, then clean up
        failed = True
        print(f"FAIL nspawn_service: {e}")
        if not isinstance(e, Failure):
            traceback.print_exc()
        if c.leader:
            print("---- journal of leakwatch.service ----\n" + c.journal("leakwatch", 80))
        print("---- container console (tail) ----\n" + c.console_text()[-2000:])
    finally:
        t = time.monotonic()
        if failed and os.environ.get("LEAKWATCH_NSPAWN_KEEP") == "1":
            # Debugging: leave the container up; the next run cleans it up.
            print(f"kept for debugging: nsenter -t {c.leader} -m -u -i -n -p -C -r -w bash")
            sys.exit(1)
        c.cleanup()
        timings.append(("power off and clean up", time.monotonic() - t))
    left = mounts_under(c.run_dir)
    if left or os.path.exists(c.run_dir):
        print(f"FAIL cleanup: left behind {left or c.run_dir}")
        failed = True
    print("timings:")
    for name, s in timings:
        print(f"  {s:6.1f}s  {name}")
    print(f"  {time.monotonic() - start:6.1f}s  total")
    if not failed:
        print("PASS nspawn_service")
    print(f"{0 if failed else 1} passed, {1 if failed else 0} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
