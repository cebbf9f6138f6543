#!/usr/bin/python3
"""End-to-end test of the leakwatch .deb under a real systemd, PID 1 of a systemd-nspawn
container (ctest: systemd.nspawn_service; labels systemd, root, slow).

  1. A Debian 12 root file system with systemd, dbus, curl, bpftool and the .deb's own
     Depends, made with debootstrap and cached outside the build tree
     (tests/harness/debian_rootfs.py: /var/cache/leakwatch/rootfs/nspawn-KEY, KEY a hash of the
     package list). Each run boots a copy-on-write overlay of it, so the cache stays clean.
  2. Boot systemd in it under systemd-nspawn (the harness: tests/systemd/nspawn.py); the
     guest's port 10071 is its own (--private-network).
  3. A bpffs at /sys/fs/bpf in the guest (systemd mounts one on a host; nspawn gives the guest
     none); dpkg -i the .deb: enabled, started, conffile registered, the unit installed once.
  4. A rule for the fixture (/root/leak_steady, the program in tests/progs that leaks through
     leak_record_entry), by the systemd unit it runs in (`match: {unit: ...}`), and
     `systemctl start leakwatch`: active, /metrics shows the leak at its site with the exact
     bytes and the process's `unit` label; kernel tracking is on too, and its stacks are
     symbolized (CAP_SYSLOG and /proc/kallsyms under the unit's sandbox). The fixture's probe
     link is pinned under /sys/fs/bpf/leakwatch (by the unit's dynamic user).
  4b. `systemctl restart leakwatch`: the daemon hands its maps and links to the file
     descriptor store at the stop, systemd hands them back, the new leakwatchd adopts the
     fixture, whose bytes are exactly what they were (it leaked before the restart: a
     leakwatchd that attached anew would show 0).
  4c. `systemctl kill -s KILL leakwatch`: Restart= starts it again 5 s later, and the pins keep
     the exact bytes.
  5. A second rule + `systemctl reload`: still active, the new rule's process (a copy of the
     fixture under /home, which the unit hides from the daemon's own view) is watched, and
     the first fixture's outstanding bytes are exactly what they were (state kept).
  6. A broken YAML + reload: still active, leakwatch_config_last_reload_successful 0, the
     journal names the bad key, both fixtures still watched.
  7. `systemctl stop leakwatch`: inactive within 5 s, bpftool on the host lists none of the
     BPF programs and links the daemon had loaded (the store's copies are closed), nothing is
     pinned under /sys/fs/bpf/leakwatch; the fixtures still run.
  8. An upgrade (the same .deb with a higher version) keeps the operator's edited conffile and
     restarts the service, which adopts a third fixture with its exact bytes; `dpkg --purge`
     stops it and removes the unit, binary, config, enablement link, state directory and
     /sys/fs/bpf/leakwatch, and no BPF program or link of leakwatchd is left.
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
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nspawn import Container, cleanup_stale_runs, log, rootfs_for  # noqa: E402
from nspawn import wait_until  # noqa: E402
from lwtest import Failure, check, parse_metrics  # noqa: E402

PORT = 10071
LEAK1 = (4096, 20)   # fixture 1: 20 leaks of 4 KiB through leak_record_entry
LEAK2 = (8192, 20)   # fixture 2 (added by reload): 20 leaks of 8 KiB


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


# Fixture 1 is matched by the systemd unit systemd-run starts it in (its cgroup), fixture 2
# by its comm.
UNIT1 = "lw-fixture1"
RULE1 = ("steady1", {"unit": f"{UNIT1}.service"})
RULE2 = ("steady2", {"comm": "leak_other"})


def config(rules):
    text = (f'listen_address: "127.0.0.1:{PORT}"\ninterval: 1s\nkernel:\n  enabled: true\n'
            '  tracking: full\nwatch:\n')
    for name, criteria in rules:
        text += f"  - name: {name}\n    tracking: full\n    match:\n"
        text += "".join(f"      {k}: {v}\n" for k, v in criteria.items())
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


def main_pid(c):
    return c.run(["systemctl", "show", "-p", "MainPID", "--value", "leakwatch"]).stdout.strip()


def wait_restarted(c, old_pid, timeout=30):
    """Waits until leakwatch runs again under another main pid, ready (READY=1) and listing
    what it watches; returns the new pid."""
    def up():
        pid = main_pid(c)
        return (pid if pid not in ("0", old_pid) and c.is_active("leakwatch") == "active"
                and metrics(c) is not None else None)
    return wait_until(up, timeout, "leakwatch to run again")


def pinned(c):
    """What is pinned under /sys/fs/bpf/leakwatch in the guest (relative paths)."""
    r = c.run(["find", "/sys/fs/bpf/leakwatch", "-mindepth", "1"], check=False)
    return sorted(r.stdout.split()) if r.returncode == 0 else []


def wait_bpf_gone(objects, what):
    left = {}

    def gone():
        live = {"prog": bpf_names("prog"), "link": bpf_names("link")}
        left.clear()
        left.update({(k, i): live[k][i] for k, i in objects if i in live[k]})
        return not left
    try:
        wait_until(gone, 10, f"the BPF programs and links of leakwatchd to go ({what})")
    except Failure:
        raise Failure(f"BPF objects of leakwatchd remain after {what} (bpftool): {left}") from None


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
    # A bpffs at /sys/fs/bpf, as systemd mounts it on a host (nspawn gives the guest none), for
    # the pins that let the daemon's state survive a crash.
    c.run(["sh", "-c", "mount -o remount,rw /sys && mkdir -p /sys/fs/bpf && "
           "mount -t bpf -o mode=700 bpf /sys/fs/bpf; mount -o remount,ro /sys"])
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
    c.write("/etc/leakwatch/leakwatch.yaml", config([RULE1]))
    pid1 = start_fixture(c, UNIT1, "/root/leak_steady", LEAK1, "/root/go1")
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
    units = {l.get("unit") for n, l, v in ms
             if n == "leakwatch_outstanding_bytes" and l.get("watch") == "steady1"}
    check(units == {f"{UNIT1}.service"},
          f"fixture 1 (matched by its unit) has unit labels {units}, not {UNIT1}.service")
    # ProtectProc=invisible: the daemon's /proc shows only what it may ptrace, which with
    # CAP_SYS_PTRACE is every process (the fixture, root's, was found above).
    proc_mounts = [l for l in c.run(["cat", f"/proc/{main_pid(c)}/mountinfo"]).stdout.splitlines()
                   if l.split()[4] == "/proc" and " - proc " in l]
    check(proc_mounts and all("hidepid=invisible" in l for l in proc_mounts),
          f"leakwatchd's /proc is not mounted hidepid=invisible: {proc_mounts}")
    t = step("/metrics shows the leak (exact bytes, unit label) and symbolized kernel stacks", t)

    # ---- restart: the service manager keeps the maps and probes; the bytes stay exact
    check(any("/user-" in p and "/links/p_" in p for p in pinned(c)),
          f"the fixture's probe links are not pinned: {pinned(c)}")
    old_pid = main_pid(c)
    c.run(["systemctl", "restart", "leakwatch"])
    wait_restarted(c, old_pid)
    journal = c.journal("leakwatch", 40)
    check("handed back by the service manager" in journal and f"adopted pid {pid1} " in journal,
          "the restarted leakwatchd did not adopt the fixture from the fd store:\n" + journal)
    ms = wait_stack_bytes(c, "steady1", truth1, timeout=5)
    check(stack_bytes(ms, "steady1") == before,
          f"fixture 1's stacks changed across the restart: {before} -> {stack_bytes(ms, 'steady1')}")
    t = step("systemctl restart: the fd store hands the probes back, exact bytes kept", t)

    # ---- crash: the pins keep the maps and probes until Restart= starts it again
    old_pid = main_pid(c)
    c.run(["systemctl", "kill", "-s", "KILL", "leakwatch"])
    wait_restarted(c, old_pid, timeout=30)  # RestartSec=5s
    journal = c.journal("leakwatch", 40)
    check(f"adopted pid {pid1} " in journal,
          "leakwatchd did not adopt the fixture after a crash:\n" + journal)
    ms = wait_stack_bytes(c, "steady1", truth1, timeout=5)
    check(stack_bytes(ms, "steady1") == before,
          f"fixture 1's stacks changed across the crash: {before} -> {stack_bytes(ms, 'steady1')}")
    t = step("SIGKILL: Restart= starts it again, the pins keep the exact bytes", t)

    # ---- reload with a second rule: state kept, new rule active
    stamp = value(ms, "leakwatch_config_last_reload_success_timestamp_seconds")
    pid2 = start_fixture(c, "lw-fixture2", "/home/lwtest/leak_other", LEAK2, "/root/go2")
    c.write("/etc/leakwatch/leakwatch.yaml",
            config([RULE1, RULE2]))
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
            config([RULE1]) + "    bogus_key: 1\n")
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
    wait_bpf_gone(objects, "stop")
    check(pinned(c) == [], f"pinned under /sys/fs/bpf/leakwatch after stop: {pinned(c)}")
    for unit in ("lw-fixture1", "lw-fixture2"):
        check(c.is_active(unit) == "active", f"{unit} did not survive leakwatch's detach")
    t = step(f"systemctl stop ({stop_s:.1f}s): inactive, no BPF programs or links left, "
             "nothing pinned", t)

    # ---- upgrade keeps the edited conffile and restarts; purge removes everything
    # Fixture 1's rule widened to fixture 3's unit too (a glob with a set).
    edited = (config([("steady1", {"unit": "lw-fixture[13].service"})]) +
              "# edited by the operator\n")
    c.write("/etc/leakwatch/leakwatch.yaml", edited)
    c.run(["systemctl", "start", "leakwatch"])
    # A third fixture leaks under the running leakwatchd (fixture 1, attached anew after the
    # stop, holds nothing at its leak site now: it leaked before).
    pid3 = start_fixture(c, "lw-fixture3", "/root/leak_steady", LEAK1, "/root/go3")
    wait_until(lambda: (lambda m: m if value(m, "leakwatch_outstanding_bytes", watch="steady1",
                                             pid=str(pid3)) is not None
                        else None)(metrics(c)), 20, "fixture 3 to be watched")
    c.write("/root/go3", "")
    wait_stack_bytes(c, "steady1", truth1)
    old_pid = main_pid(c)
    shutil.copy(upgrade_deb(deb, c.run_dir), c.path("/root/leakwatch-upgrade.deb"))
    c.run(["dpkg", "-i", "--force-confdef", "--force-confold", "/root/leakwatch-upgrade.deb"],
          timeout=120)
    check(open(c.path("/etc/leakwatch/leakwatch.yaml")).read() == edited,
          "the upgrade replaced the edited /etc/leakwatch/leakwatch.yaml")
    wait_restarted(c, old_pid)
    check(f"adopted pid {pid3} " in c.journal("leakwatch", 40),
          "the upgraded leakwatchd did not adopt fixture 3:\n" + c.journal("leakwatch"))
    wait_stack_bytes(c, "steady1", truth1, timeout=5)
    objects = leakwatch_bpf_objects(c)
    c.run(["dpkg", "--purge", "leakwatch"], timeout=120)
    wait_bpf_gone(objects, "dpkg --purge")
    check(c.run(["test", "-e", "/sys/fs/bpf/leakwatch"], check=False).returncode != 0,
          f"/sys/fs/bpf/leakwatch is left after dpkg --purge: {pinned(c)}")
    check(c.is_active("leakwatch") in ("inactive", "unknown"), "leakwatch still runs after purge")
    for path in ("/etc/leakwatch/leakwatch.yaml", "/usr/lib/systemd/system/leakwatch.service",
                 "/usr/sbin/leakwatchd", "/var/lib/private/leakwatch",
                 "/etc/systemd/system/multi-user.target.wants/leakwatch.service"):
        check(not os.path.lexists(c.path(path)), f"{path} is left after dpkg --purge")
    step("upgrade keeps the edited conffile, restarts and keeps the exact bytes; purge removes "
         "everything, BPF and pins included", t)


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
    rootfs = rootfs_for(deb)
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
    left = c.overlay.left_behind()
    if left:
        print(f"FAIL cleanup: left behind {left}")
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
