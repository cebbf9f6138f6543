"""Root tests: stacks through code built without frame pointers, walked with the unwind tables
(`unwind: dwarf`).

tests/progs/leak_nofp.c (C, -O2 -fomit-frame-pointer) leaks from leak_records, called by
middle_layer, called by outer_layer, called by main. tests/progs/leak_cxx.cpp (C++, -O2) leaks
with `new` in SessionCache::remember, called by serve_clients, called by main."""
import time

from lwtest import (Daemon, Fixture, check, check_nothing_lost, in_order, metric, pid_rules,
                    require_root, run, start, symbols, wait_until)

INTERVAL = 1.0
BLOCK, BLOCKS = 1000, 20000
SESSIONS = 20000


def check_pending(daemon, full, partial, unit, truth):
    """The allocations made while their stack's first snapshot was in flight keep the frames
    walked so far (`partial`) and are counted as unwind_pending; the rest have the whole stack
    (`full`). Both together are the truth, to the byte."""
    pending = metric(daemon, "leakwatch_lost_events_total", reason="unwind_pending")
    print(f"whole stack: {full} bytes; frames so far only: {partial} bytes; "
          f"unwind_pending: {pending:.0f} allocations")
    check(full + partial == truth, f"{full} + {partial} bytes, truth {truth}")
    check(partial == pending * unit, f"{partial} bytes with partial stacks, {pending:.0f} "
          f"allocations of {unit} counted unwind_pending")
    # The window is the time from the first snapshot to its rules (milliseconds on this VM):
    # most of the leak comes after it.
    check(full >= truth / 2, f"only {full} of {truth} bytes have their whole stack")


def test_nofp_callers(cleanup):
    dwarf = start(cleanup, Fixture("leak_nofp", str(BLOCK), str(BLOCKS)))
    fp = start(cleanup, Fixture("leak_nofp", str(BLOCK), str(BLOCKS)))
    daemon = start(cleanup, Daemon(pid_rules([("dwarf", dwarf.pid, "dwarf"),
                                           ("fp", fp.pid, "frame-pointer")])))
    for f in (dwarf, fp):
        wait_until(lambda: daemon.process(f.pid), 10, "the fixtures to be attached")
        f.go()
    truth = int(dwarf.expect("leaked"))
    check(int(fp.expect("leaked")) == truth, "both fixtures leak the same")
    time.sleep(2 * INTERVAL)

    stacks = daemon.stacks(dwarf.pid)
    leak = [s for s in stacks if s["site"] == "leak_records"]
    for s in leak:
        print("unwind: dwarf:", s["outstanding_bytes"], symbols(s))
    whole = [s for s in leak if "middle_layer" in symbols(s)]
    check(len(whole) == 1, f"one whole stack with site leak_records: {[symbols(s) for s in leak]}")
    check(in_order(symbols(whole[0]), ["malloc", "leak_records", "middle_layer", "outer_layer",
                                       "main"]),
          f"callers of leak_records: {symbols(whole[0])}")
    partial = [s for s in leak if s is not whole[0]]
    check(all(symbols(s) == ["malloc", "leak_records"] for s in partial),
          f"partial stacks: {[symbols(s) for s in partial]}")
    check_pending(daemon, whole[0]["outstanding_bytes"],
                  sum(s["outstanding_bytes"] for s in partial), BLOCK, truth)
    proc = daemon.process(dwarf.pid)
    check(proc["outstanding_bytes"] >= truth, f"process bytes {proc}")

    # The same program walked by frame pointers: the caller of malloc is known (read at its
    # entry), everything above it is lost. This is what the unwind tables recover.
    fp_leak = [s for s in daemon.stacks(fp.pid) if s["site"] == "leak_records"]
    for s in fp_leak:
        print("unwind: frame-pointer:", s["outstanding_bytes"], symbols(s))
    check(fp_leak and sum(s["outstanding_bytes"] for s in fp_leak) == truth,
          f"frame-pointer stacks: {fp_leak}")
    check(not any("middle_layer" in symbols(s) for s in fp_leak),
          "frame pointers found middle_layer: the fixture does not need the unwind tables")

    # The CFI is read for the first allocations of each stack, not for every allocation.
    snapshots = metric(daemon, "leakwatch_unwind_snapshots_total")
    print(f"snapshots unwound: {snapshots} for {BLOCKS} allocations")
    check(1 <= snapshots <= 4, f"{snapshots} snapshots for {BLOCKS} allocations")
    check_nothing_lost(daemon, ["unwind_snapshots_full", "stack_capture_failed",
                                "stack_map_full"])


def test_cxx_method(cleanup):
    fixture = start(cleanup, Fixture("leak_cxx", str(SESSIONS)))
    fp = start(cleanup, Fixture("leak_cxx", str(SESSIONS)))
    daemon = start(cleanup, Daemon(pid_rules([("cxx", fixture.pid, "dwarf"),
                                           ("fp", fp.pid, "frame-pointer")])))
    for f in (fixture, fp):
        wait_until(lambda: daemon.process(f.pid), 10, "the fixtures to be attached")
        f.go()
    size = int(fixture.expect("object"))
    truth = int(fixture.expect("leaked"))
    check(truth == size * SESSIONS, f"leaked {truth}")
    time.sleep(2 * INTERVAL)

    stacks = daemon.stacks(fixture.pid)
    leak = [s for s in stacks if s["site"] == "SessionCache::remember"]
    for s in stacks:
        print(s["site"], s["outstanding_bytes"], symbols(s))
    check(len(leak) == 1, f"one stack with site SessionCache::remember: "
          f"{[(s['site'], symbols(s)) for s in stacks]}")
    # Made before operator new's rule was known: the walk stopped at its return address.
    partial = [s for s in stacks
               if symbols(s) == ["malloc", "operator new(unsigned long)"]]
    check_pending(daemon, leak[0]["outstanding_bytes"],
                  sum(s["outstanding_bytes"] for s in partial), size, truth)
    names = symbols(leak[0])
    check(in_order(names, ["malloc", "operator new(unsigned long)", "SessionCache::remember(int)",
                           "serve_clients(SessionCache&, int)", "main"]),
          f"frames: {names}")
    check_nothing_lost(daemon, ["unwind_snapshots_full", "stack_capture_failed"])

    # By frame pointers the walk ends at operator new: the method is lost, and no frame
    # outside the allocator is left to be the site.
    fp.expect("leaked")
    fp_stacks = daemon.stacks(fp.pid)
    for s in fp_stacks:
        print("unwind: frame-pointer:", s["site"], s["outstanding_bytes"], symbols(s))
    check(not any("SessionCache::remember(int)" in symbols(s) for s in fp_stacks),
          "frame pointers found SessionCache::remember: the fixture does not need the unwind "
          "tables")


if __name__ == "__main__":
    require_root()
    run({"nofp_callers": test_nofp_callers, "cxx_method": test_cxx_method})
