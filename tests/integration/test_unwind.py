"""Root tests: stacks through code built without frame pointers, walked with the unwind tables
(`unwind: dwarf`), and with the default `unwind: auto` (frame pointers where a file's functions
keep them, the unwind tables elsewhere, frame by frame).

tests/progs/leak_nofp.c (C, -O2 -fomit-frame-pointer) leaks from leak_records, called by
middle_layer, called by outer_layer, called by main. tests/progs/leak_cxx.cpp (C++, -O2) leaks
with `new` in SessionCache::remember, called by serve_clients, called by main; leak_cxx_fp is
the same source built -O1 with frame pointers. tests/progs/churn_nofp.c (C, -O2 without frame
pointers) leaks through leak_block and churns malloc/free with a pointer to random data in rbp."""
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


def test_thin_frames(cleanup):
    """By frame pointers through a function with no locals, which calls malloc right after its
    prologue (its frame record is then just above the return address): the default walk goes
    on to its callers. It once stopped there, and every stack of such code ended at it."""
    fixture = start(cleanup, Fixture("leak_thin", "500", "500"))
    daemon = start(cleanup, Daemon(pid_rules([("thin", fixture.pid, None)])))
    wait_until(lambda: daemon.process(fixture.pid), 10, "the fixture to be attached")
    fixture.go()
    truth = int(fixture.expect("leaked"))
    time.sleep(2 * INTERVAL)
    stacks = daemon.stacks(fixture.pid)
    for s in stacks:
        print("leak_thin", s["site"], s["outstanding_bytes"], s["complete"], symbols(s))
    leak = [s for s in stacks if s["site"] == "thin_grab"]
    check(sum(s["outstanding_bytes"] for s in leak) == truth,
          f"site thin_grab holds {sum(s['outstanding_bytes'] for s in leak)} bytes, truth {truth}")
    for s in leak:
        check(s["complete"], f"incomplete stack {symbols(s)}")
        check(in_order(symbols(s), ["malloc", "thin_grab", "thin_layer", "main"]),
              f"frames {symbols(s)}")
    check_nothing_lost(daemon, ["stack_truncated", "stack_capture_failed"])


def test_default_cxx(cleanup):
    """The default config names the method that calls `new`, in C++ built without frame
    pointers (-O2) and with them (-O1 -fno-omit-frame-pointer), libstdc++ having none: bytes
    exact, once the path is warm (a running service's is)."""
    fixtures = {name: start(cleanup, Fixture(name, str(SESSIONS), "2000"))
                for name in ("leak_cxx", "leak_cxx_fp")}
    daemon = start(cleanup, Daemon(pid_rules([(name, f.pid, None)
                                              for name, f in fixtures.items()])))
    for f in fixtures.values():
        wait_until(lambda: daemon.process(f.pid), 10, "the fixtures to be attached")
        f.go()
    truths = {}
    for name, f in fixtures.items():
        size = int(f.expect("object"))
        truths[name] = int(f.expect("leaked"))
        check(truths[name] == size * SESSIONS, f"{name} leaked {truths[name]}")
    time.sleep(2 * INTERVAL)
    for name, f in fixtures.items():
        truth = truths[name]
        stacks = daemon.stacks(f.pid)
        for s in stacks:
            print(name, s["site"], s["outstanding_bytes"], s["complete"], symbols(s))
        leak = [s for s in stacks if s["site"] == "SessionCache::remember"]
        check(leak and sum(s["outstanding_bytes"] for s in leak) == truth,
              f"{name}: site SessionCache::remember holds "
              f"{sum(s['outstanding_bytes'] for s in leak)} bytes, truth {truth}")
        for s in leak:
            check(s["complete"], f"{name}: incomplete stack {symbols(s)}")
            check(in_order(symbols(s), ["malloc", "operator new(unsigned long)",
                                        "SessionCache::remember(int)",
                                        "serve_clients(SessionCache&, int)", "main"]),
                  f"{name}: frames {symbols(s)}")
        # No other site holds the leak's bytes (a wrong site is worse than none).
        others = sum(s["outstanding_bytes"] for s in stacks
                     if s["site"] != "SessionCache::remember")
        check(others < size * 10, f"{name}: {others} bytes at other sites")
    check_nothing_lost(daemon, ["unwind_snapshots_full", "stack_capture_failed",
                                "stack_map_full", "stack_truncated"])


CHURN_LEAKS, CHURN_PER_LEAK = 4000, 25


def test_nofp_churn(cleanup):
    """C built without frame pointers that churns with random data in rbp: by frame pointers
    nearly every churn allocation is a new junk stack; the default walks none, fills nothing,
    and attributes the leak exactly."""
    auto = start(cleanup, Fixture("churn_nofp", str(BLOCK), str(CHURN_LEAKS), str(CHURN_PER_LEAK)))
    fp = start(cleanup, Fixture("churn_nofp", str(BLOCK), str(CHURN_LEAKS), str(CHURN_PER_LEAK)))
    daemon = start(cleanup, Daemon(pid_rules([("auto", auto.pid, None)])))
    fp_daemon = start(cleanup, Daemon(pid_rules([("fp", fp.pid, "frame-pointer")])))
    for d, f in ((daemon, auto), (fp_daemon, fp)):
        wait_until(lambda: d.process(f.pid), 10, "the fixtures to be attached")
        f.go()
    truth = int(auto.expect("leaked"))
    fp.expect("leaked")
    time.sleep(2 * INTERVAL)

    # Distinct stacks stored (churn stacks hold nothing once freed, so the API lists none).
    def stored(d):
        return metric(d, "leakwatch_bpf_map_entries", map="stacks")
    fp_lost = metric(fp_daemon, "leakwatch_lost_events_total", reason="stack_map_full")
    print(f"unwind: frame-pointer: {stored(fp_daemon):.0f} stacks stored, "
          f"stack_map_full {fp_lost:.0f}")
    check(stored(fp_daemon) + fp_lost > 1000, "frame pointers made few stacks: the fixture "
          "does not put random data where the walk follows it")

    stacks = daemon.stacks(auto.pid, top=1000)  # the API gives at most 1000
    print(f"unwind: auto: {stored(daemon):.0f} stacks stored")
    for s in stacks[:6]:
        print("unwind: auto:", s["site"], s["outstanding_bytes"], s["complete"], symbols(s))
    print(f"unwind: auto: {len(stacks)} stacks")
    leak = [s for s in stacks if s["site"] == "leak_block"]
    check(sum(s["outstanding_bytes"] for s in leak) == truth,
          f"leak_block holds {sum(s['outstanding_bytes'] for s in leak)}, truth {truth}")
    check(any(in_order(symbols(s), ["malloc", "leak_block", "keep_layer", "main"])
              for s in leak), f"leak_block's callers: {[symbols(s) for s in leak]}")
    check(stored(daemon) < 50, f"{stored(daemon):.0f} stacks stored for two paths")
    check_nothing_lost(daemon, ["stack_map_full", "stack_totals_map_full", "stack_truncated"])


if __name__ == "__main__":
    require_root()
    run({"nofp_callers": test_nofp_callers, "cxx_method": test_cxx_method,
         "default_cxx": test_default_cxx, "nofp_churn": test_nofp_churn,
         "thin_frames": test_thin_frames})
