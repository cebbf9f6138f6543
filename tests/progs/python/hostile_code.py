"""A CPython process whose code object's name lies on a page no reader gets: the co_qualname
of Hostile.leak's code object is pointed at a page of FILE (mapped, never touched), a file of a
file system that never answers reads (tests/harness/stall_fs.py). Whoever reads the name
through this process's memory (/proc/PID/mem) waits for as long as the file system lives.
The interpreter itself never reads a running function's qualname.
Usage: /usr/bin/python3 hostile_code.py FILE SIZE TICK_MS
Prints "pid N"; maps FILE; waits for the file named by FIXTURE_GO; points the name away,
prints "pointed ADDRESS"; then keeps a bytearray of SIZE bytes every TICK_MS from
Hostile.leak, for ever (killed at the end: its code object must not be freed)."""
import ctypes
import os
import struct
import sys
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


def main():
    path, size, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000
    print("pid", os.getpid(), flush=True)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    fd = os.open(path, os.O_RDONLY)
    mapped = libc.mmap(None, 1 << 20, 1, 2, fd, 0)  # PROT_READ, MAP_PRIVATE
    if mapped in (None, ctypes.c_void_p(-1).value):
        raise SystemExit(f"mmap {path}: {os.strerror(ctypes.get_errno())}")
    go = os.environ.get("FIXTURE_GO")
    while go and not os.path.exists(go):
        time.sleep(0.01)
    code = Hostile.leak.__code__
    assert code.co_qualname is not code.co_name
    where = id(code) + field_offset(code, code.co_qualname)
    ctypes.c_uint64.from_address(where).value = mapped + 0x10000
    print("pointed", hex(mapped + 0x10000), flush=True)
    Hostile().leak(size, tick)


if __name__ == "__main__":
    main()
