"""Root tests: kernel allocations held by a user process (pipes kept open) show in kernel
stacks that name the pipe functions, attributed to the process, and go when it exits."""
import time

from lwtest import Daemon, Fixture, check, check_nothing_lost, require_root, run, within

INTERVAL = 1.0
CONFIG = f"""
interval: {int(INTERVAL * 1000)}ms
kernel:
  enabled: true
  tracking: full
"""
NPIPES, BYTES = 300, 16384
PIPE_PAGE_SITES = ("anon_pipe_write", "pipe_write")  # 6.x / before the anon_pipe split


def kernel(daemon):
    return daemon.json("/api/v1/kernel?top=1000")


def site_totals(k, kind, sites):
    return sum(s["outstanding_bytes"] for s in k["stacks"]
               if s["kind"] == kind and s["site"] in sites)


def site_count(k, kind, sites):
    return sum(s["outstanding_allocations"] for s in k["stacks"]
               if s["kind"] == kind and s["site"] in sites)


def settle(daemon):
    """Two fresh snapshots later."""
    time.sleep(2 * INTERVAL + 0.2)
    return kernel(daemon)


def test_pipes_held_and_freed(cleanup):
    daemon = Daemon(CONFIG)
    cleanup.append(daemon)
    base = settle(daemon)
    page_base = site_totals(base, "page", PIPE_PAGE_SITES)
    info_base = site_count(base, "kmalloc", ("alloc_pipe_info",))

    fixture = Fixture("kleak_pipes", str(NPIPES), str(BYTES))
    cleanup.append(fixture)
    fixture.go()
    pages = int(fixture.expect("pipe_pages"))
    truth = pages * 4096
    held = settle(daemon)
    grown = site_totals(held, "page", PIPE_PAGE_SITES) - page_base
    print(f"pipe buffer pages: {grown} bytes grown, truth {truth}")
    check(within(grown, truth, 0.10),
          f"pipe page stacks grew by {grown} bytes, truth {truth} (10%)")
    stack = next(s for s in held["stacks"]
                 if s["kind"] == "page" and s["site"] in PIPE_PAGE_SITES)
    symbols = [f["symbol"] for f in stack["frames"]]
    check(any(s in symbols for s in ("pipe_write", "anon_pipe_write", "vfs_write")),
          f"pipe page stack frames: {symbols}")
    # the BPF program's own frame comes first, then the kernel's
    check(all(f["module"] in ("[kernel]", "[bpf]") for f in stack["frames"] if f["symbol"]),
          f"modules: {[f['module'] for f in stack['frames']]}")
    check(stack["frames"][-1]["module"] == "[kernel]", f"last frame: {stack['frames'][-1]}")
    infos = site_count(held, "kmalloc", ("alloc_pipe_info",)) - info_base
    check(NPIPES <= infos <= 3 * NPIPES,
          f"alloc_pipe_info kmalloc stacks hold {infos} more allocations for {NPIPES} pipes")

    # Attributed to the process that made them.
    mine = [p for p in held["processes"] if p["pid"] == fixture.pid]
    check(mine and mine[0]["outstanding_bytes"] >= truth * 0.9,
          f"kernel bytes attributed to the fixture: {mine}, truth >= {truth}")
    metrics = daemon.metrics()
    series = [v for n, l, v in metrics if n == "leakwatch_outstanding_bytes"
              and l.get("watch") == "kernel" and l.get("pid") == str(fixture.pid)]
    check(series and series[0] >= truth * 0.9, f"kernel series of the fixture: {series}")
    kinds = {l["kind"]: v for n, l, v in metrics if n == "leakwatch_kernel_outstanding_bytes"}
    check(set(kinds) == {"kmalloc", "kmem_cache", "page", "percpu"}, f"kinds: {kinds}")
    check(kinds["page"] >= truth, f"page kind {kinds['page']} < {truth}")
    kstacks = [l for n, l, v in metrics if n == "leakwatch_stack_outstanding_bytes"
               and l.get("watch") == "kernel"]
    check(any(l["site"] in PIPE_PAGE_SITES for l in kstacks),
          f"kernel stack series sites: {sorted({l['site'] for l in kstacks})}")

    fixture.stop()  # exit closes the pipes: the kernel frees their pages and infos
    freed = settle(daemon)
    left = site_totals(freed, "page", PIPE_PAGE_SITES) - page_base
    print(f"after exit: {left} bytes left at the pipe page sites")
    check(left < truth * 0.10, f"{left} bytes of pipe pages still outstanding after exit")
    infos_left = site_count(freed, "kmalloc", ("alloc_pipe_info",)) - info_base
    check(infos_left < NPIPES * 0.10, f"{infos_left} alloc_pipe_info allocations left")
    check(all(p["pid"] != fixture.pid for p in freed["processes"]),
          "the exited fixture still has a kernel series")
    check_nothing_lost(daemon, ("kernel_live_map_full", "kernel_stack_map_full",
                                "kernel_totals_map_full"))


def test_kinds_switch(cleanup):
    daemon = Daemon(CONFIG.replace("enabled: true", "enabled: true\n  kinds: [page]"))
    cleanup.append(daemon)
    k = settle(daemon)
    for kind in ("kmalloc", "kmem_cache", "percpu"):
        check(k["kinds"][kind]["outstanding_allocations"] == 0, f"{kind} traced: {k['kinds']}")
    check("mm_page_alloc" in daemon.log_text() and "kmalloc," not in daemon.log_text(),
          "attached tracepoints logged")


if __name__ == "__main__":
    require_root()
    run({
        "pipes_held_and_freed": test_pipes_held_and_freed,
        "kinds_switch": test_kinds_switch,
    })
