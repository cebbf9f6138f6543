"""Root test: the kernel's series of a process carry its `unit` label, as its user series do.

kleak_pipes (pipes with 16 KiB written, never read: kernel memory held in the context of the
process) is moved into a cgroup this test makes, named like a systemd unit at the root of the
cgroup v2 hierarchy (lwtest-<random>.service, which unit_label reads as that unit), before it
allocates. With kernel tracking on (tracking: full), its leakwatch_outstanding_bytes and
leakwatch_outstanding_allocations series with watch="kernel" must carry that unit and hold the
pipes' pages (at least 90% of them); kernel-wide series (stacks) keep an empty unit. A second
kleak_pipes left where it started shows the label follows each process's own cgroup.
"""
import os
import time
import uuid

from lwtest import Daemon, Fixture, check, require_root, run, start
from test_hostile import Cleanup, cgroup2_root, move

NPIPES, BYTES = 200, 16384
CONFIG = """interval: 1s
kernel:
  enabled: true
  tracking: full
"""


def cgroup_of(pid):
    return [line for line in open(f"/proc/{pid}/cgroup").read().splitlines()
            if line.startswith("0::")][0][3:]


def test_kernel_unit(cleanup):
    root = cgroup2_root()
    name = f"lwtest-{uuid.uuid4().hex[:10]}.service"
    cgroup = os.path.join(root, name)
    os.mkdir(cgroup)
    moved = start(cleanup, Fixture("kleak_pipes", str(NPIPES), str(BYTES)))
    stayed = start(cleanup, Fixture("kleak_pipes", str(NPIPES), str(BYTES)))
    home = os.path.join(root, cgroup_of(moved.pid).lstrip("/"))

    def remove_cgroup():
        moved.stop()  # its pipes go with it; anything else left is moved back
        for pid in open(os.path.join(cgroup, "cgroup.procs")).read().split():
            move(int(pid), home)
        os.rmdir(cgroup)
    start(cleanup, Cleanup(remove_cgroup))
    move(moved.pid, cgroup)
    check(cgroup_of(moved.pid) == "/" + name, f"moved into /{name}: {cgroup_of(moved.pid)}")
    print(f"the other process stays in {cgroup_of(stayed.pid)}")

    daemon = start(cleanup, Daemon(CONFIG))
    moved.go()
    stayed.go()
    truth = int(moved.expect("pipe_pages")) * 4096
    stayed.expect("pipe_pages")

    def series(pid):
        return {n: (l, v) for n, l, v in daemon.metrics()
                if n in ("leakwatch_outstanding_bytes", "leakwatch_outstanding_allocations")
                and l.get("watch") == "kernel" and l.get("pid") == str(pid)}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        mine = series(moved.pid)
        if len(mine) == 2 and mine["leakwatch_outstanding_bytes"][1] >= 0.9 * truth:
            break
        time.sleep(0.5)
    for family, (labels, value) in sorted(mine.items()):
        print(f"{family}{labels} {value:.0f}")
    check(len(mine) == 2, f"both kernel series of the moved process: {mine}")
    check(all(l.get("unit") == name for l, _ in mine.values()),
          f"the moved process's kernel series carry unit={name}: {mine}")
    check(mine["leakwatch_outstanding_bytes"][1] >= 0.9 * truth,
          f"they hold its pipes' pages: {mine['leakwatch_outstanding_bytes'][1]:.0f} of {truth}")
    other = series(stayed.pid)
    print(f"the other process: {other}")
    check(other and all(l.get("unit") != name for l, _ in other.values()),
          f"the process left in place does not carry the moved one's unit: {other}")
    stacks = [l for n, l, v in daemon.metrics()
              if n == "leakwatch_stack_outstanding_bytes" and l.get("watch") == "kernel"]
    check(stacks and all(l.get("unit") == "" for l in stacks),
          "kernel-wide stack series have an empty unit")


if __name__ == "__main__":
    require_root()
    run({"kernel_unit": test_kernel_unit})
