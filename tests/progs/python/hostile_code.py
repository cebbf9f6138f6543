"""A CPython process whose code object's name lies on a page no reader gets: the co_qualname
of Hostile.leak's code object is pointed at a page of FILE (mapped, never touched), a file of a
file system that never answers reads (tests/harness/stall_fs.py). Whoever reads the name
through this process's memory (/proc/PID/mem) waits for as long as the file system lives.
The interpreter itself never reads a running function's qualname.
Usage: /usr/bin/python3 hostile_code.py FILE SIZE TICK_MS [churn]
Prints "pid N"; maps FILE; waits for the file named by FIXTURE_GO; points the name away,
prints "pointed ADDRESS"; then keeps a bytearray of SIZE bytes every TICK_MS from
Hostile.leak, for ever (killed at the end: its code object must not be freed).

With `churn`, once the name is pointed away, two more threads run: one calls mmap (and munmap)
every 10 ms, so that once a reader of the process's memory blocks on the page, holding the
memory map's lock for reading, the mmap waits for that lock as a writer, and every later
reader of the lock (e.g. of /proc/PID/maps) queues behind it; the other keeps allocating
from new code (a function compiled anew each time) through libraries loaded after FIXTURE_GO
(json's and decimal's C modules, whose mappings were not there when the process was first
read), so that its stacks keep needing unwinding and naming. Its allocations come from heap
memory made beforehand (one malloc arena, grown and kept), since any mmap or brk would wait
too. Prints "churning" when both run."""
import ctypes
import itertools
import os
import struct
import sys
import threading
import time

kept = []


class Hostile:
    def leak(self, size, tick):
        while True:
            kept.append(bytearray(size))
            time.sleep(tick)


def field_offset(obj, target):
    """The offset of the pointer to `target` in `obj`'s C structure (8-byte aligned)."""
    raw = ctypes.string_at(id(obj), 256)
    want = struct.pack("Q", id(target))
    offsets = [o for o in range(0, len(raw) - 7, 8) if raw[o:o + 8] == want]
    if len(offsets) != 1:
        raise SystemExit(f"co_qualname found at {offsets}")
    return offsets[0]


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8


def grow_heap(libc):
    """One arena (the brk heap) for every thread, grown by 64 MiB and kept, and pools of small
    objects half free: allocations that follow need no new mapping for a while."""
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    for param, value in ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 32 << 20),
                         (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20)):
        libc.mallopt(param, value)
    libc.free(libc.malloc(16 << 20))
    small = [object() for _ in range(200000)]
    del small[::2]
    return small


def mapper(libc):
    while True:
        area = libc.mmap(None, 1 << 16, 3, 0x22, -1, 0)  # PROT_READ|WRITE, PRIVATE|ANONYMOUS
        libc.munmap(ctypes.c_void_p(area), 1 << 16)
        time.sleep(0.01)


def churn(size):
    import decimal
    import json
    for i in itertools.count():
        scope = {}
        exec(f"def churn_{i}(n, json, decimal):\n"
             f"    if n % 2:\n"
             f"        return json.dumps({{'k{i}': 'x' * n}})\n"
             f"    return decimal.Decimal({i + 3}) ** 40 + decimal.Decimal(n)\n", scope)
        kept.append(scope[f"churn_{i}"](size + i, json, decimal))
        time.sleep(0.02)


def main():
    path, size, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000
    churning = len(sys.argv) > 4 and sys.argv[4] == "churn"
    print("pid", os.getpid(), flush=True)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    fd = os.open(path, os.O_RDONLY)
    mapped = libc.mmap(None, 1 << 20, 1, 2, fd, 0)  # PROT_READ, MAP_PRIVATE
    if mapped in (None, ctypes.c_void_p(-1).value):
        raise SystemExit(f"mmap {path}: {os.strerror(ctypes.get_errno())}")
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    go = os.environ.get("FIXTURE_GO")
    while go and not os.path.exists(go):
        time.sleep(0.01)
    if churning:
        import _decimal  # noqa: F401  (their mappings come after the process was read)
        import _json  # noqa: F401
        pools = grow_heap(libc)  # noqa: F841  (kept: its arenas stay)
    code = Hostile.leak.__code__
    assert code.co_qualname is not code.co_name
    where = id(code) + field_offset(code, code.co_qualname)
    ctypes.c_uint64.from_address(where).value = mapped + 0x10000
    print("pointed", hex(mapped + 0x10000), flush=True)
    if churning:
        threading.Thread(target=mapper, args=(libc,), daemon=True).start()
        threading.Thread(target=churn, args=(size,), daemon=True).start()
        print("churning", flush=True)
    Hostile().leak(size, tick)


if __name__ == "__main__":
    main()
