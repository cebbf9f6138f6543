"""Root tests: source lines and inlined functions from DWARF in the API, never in metric labels.

The fixture tests/progs/leak_inline.c is built with -O2 -g: its allocation is in grab(), inlined
into make_node(), inlined into leak_nodes(). Expected line numbers come from the marker comments
("LINE:name") in its source."""
import os
import re
import time

from lwtest import Daemon, Fixture, check, require_root, run, start, wait_until, within

INTERVAL = 1.0
CONFIG = f"""
interval: {int(INTERVAL * 1000)}ms
watch:
  - name: inline
    tracking: full
    match:
      comm: leak_inline
"""
LEAK, TICKS, TICK_MS = 32768, 20, 20
SOURCE = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "progs", "leak_inline.c"))


def marker(name):
    with open(SOURCE) as f:
        for n, line in enumerate(f, 1):
            if f"LINE:{name} */" in line:
                return n
    raise AssertionError(f"no marker {name} in {SOURCE}")


def test_source_lines(cleanup):
    daemon = start(cleanup, Daemon(CONFIG))
    fixture = start(cleanup, Fixture("leak_inline", str(LEAK), str(TICKS), str(TICK_MS)))
    wait_until(lambda: daemon.process(fixture.pid), 10, "the fixture to be attached")
    fixture.go()
    truth = int(fixture.expect("leaked"))
    time.sleep(2 * INTERVAL)

    stacks = daemon.stacks(fixture.pid)
    leak = [s for s in stacks if s["site"] == "leak_nodes"]
    check(len(leak) == 1, f"one stack with site leak_nodes: {[s['site'] for s in stacks]}")
    stack = leak[0]
    check(within(stack["outstanding_bytes"], truth, 0.10),
          f"leak_nodes holds {stack['outstanding_bytes']}, truth {truth}")
    frames = stack["frames"]
    by_symbol = {f["symbol"]: f for f in frames}
    check("leak_nodes" in by_symbol and "main" in by_symbol, f"frames: {frames}")
    f = by_symbol["leak_nodes"]
    print("leak_nodes frame:", f)
    check(f.get("file") == SOURCE and f.get("line") == marker("leak_nodes_make_node"),
          f"leak_nodes at {f.get('file')}:{f.get('line')}, expected "
          f"{SOURCE}:{marker('leak_nodes_make_node')}")
    expected_inlined = [
        {"function": "grab", "file": SOURCE, "line": marker("grab_malloc")},
        {"function": "make_node", "file": SOURCE, "line": marker("make_node_grab")},
    ]
    check(f.get("inlined") == expected_inlined,
          f"inlined: {f.get('inlined')}, expected {expected_inlined}")
    m = by_symbol["main"]
    check(m.get("file") == SOURCE and m.get("line") == marker("main_leak_nodes")
          and "inlined" not in m, f"main frame: {m}")
    # Every frame keeps what is needed to symbolize it elsewhere.
    for fr in frames:
        check("module" in fr and "module_offset" in fr, f"frame without module: {fr}")
    check(f["build_id"] and f["module"].endswith("/leak_inline"), f"leak_nodes frame: {f}")

    # The metric labels have no file or line anywhere; the site is the function.
    text = daemon.get("/metrics")
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    check(not any("leak_inline.c" in line for line in series), "a label holds the source file")
    check(not any(re.search(r'="[^"]*\.[ch]:\d+"', line) for line in series),
          "a label holds file:line")
    sites = [line for line in series if line.startswith("leakwatch_stack_outstanding_bytes")
             and f'pid="{fixture.pid}"' in line]
    check(any('site="leak_nodes"' in line for line in sites), f"stack series: {sites}")

    # The symbolizer's caches are counted.
    caches = {}
    for name, labels, value in daemon.metrics():
        if name.startswith("leakwatch_symbol_cache_"):
            caches[(name, labels["cache"])] = value
    print("symbol caches:", caches)
    for cache in ("elf_files", "debug_files", "source_lines"):
        check(caches.get(("leakwatch_symbol_cache_misses_total", cache), 0) >= 1,
              f"{cache} misses: {caches}")
        # DWARF files are closed after each interval's symbolization (their memory given
        # back); the parsed ELF files and the source lines found stay.
        want = 0 if cache == "debug_files" else 1
        check(caches.get(("leakwatch_symbol_cache_entries", cache), -1) >= want,
              f"{cache} entries: {caches}")
        check(caches[("leakwatch_symbol_cache_capacity", cache)] >=
              caches[("leakwatch_symbol_cache_entries", cache)], f"{cache}: {caches}")


if __name__ == "__main__":
    require_root()
    run({"source_lines": test_source_lines})
