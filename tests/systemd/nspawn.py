"""systemd as PID 1 of a systemd-nspawn container, booted on a copy-on-write overlay of a
cached Debian root file system (tests/harness/debian_rootfs.py), and driven from the host: the
harness of tests/systemd/test_nspawn.py.

  - Boot: systemd-nspawn -b with --register=no --keep-unit (no systemd/machined on the host),
    --capability=all and --system-call-filter='bpf perf_event_open' (BPF inside the
    container), --private-network (the guest's ports are its own). Commands run in the guest
    through nsenter into the namespaces of the container's PID 1 (machinectl and systemd-run
    -M need a registered machine).
  - Cleanup, pass or fail: the container is powered off (killed if it does not stop), the
    overlay unmounted, the cgroups nspawn made removed, the run directory deleted; a run killed
    by a timeout is cleaned up by the next one (cleanup_stale_runs).
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import debian_rootfs  # noqa: E402
from lwtest import Failure, check  # noqa: E402
from lwtest import wait_until  # noqa: E402

SUITE = "bookworm"
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "curl", "bpftool"]
GUEST_ENV = ["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
             "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"]


def log(msg):
    debian_rootfs.log(msg)


# ---- the root file system ----------------------------------------------------------------

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


def rootfs_for(deb):
    """The cached Debian 12 root file system with systemd, curl, bpftool and the .deb's own
    Depends (first built with debootstrap: ~45 s)."""
    try:
        return debian_rootfs.ensure("nspawn", SUITE, BASE_PACKAGES + deb_depends(deb))
    except debian_rootfs.RootfsError as e:
        raise Failure(str(e)) from None


# ---- mounts, cgroups and processes a run leaves --------------------------------------------

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
    debian_rootfs.unmount_all(run_dir)
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
        self.overlay = debian_rootfs.Overlay(rootfs, self.run_dir)
        self.root = self.overlay.root
        self.proc = None
        self.leader = None
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
        return self.overlay.path(guest_path)

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
