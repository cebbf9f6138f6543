"""A process that holds up every reader of its own memory map's lock, without anyone's help:
one thread reads, through /proc/self/mem, its own page of FILE (mapped, never touched), a file
of a file system that never answers reads (tests/harness/stall_fs.py); the kernel holds the
memory map's lock for reading while that fault waits. Another thread then calls mmap, which
queues for the lock as a writer, and every later reader of the lock (of /proc/PID/cmdline,
smaps, pagemap) queues behind it, for as long as the file system lives.
Usage: /usr/bin/python3 self_stall.py FILE [TOUCH_BYTES]
Prints "pid N"; maps FILE; waits for the file named by FIXTURE_GO; touches TOUCH_BYTES (default
0) of new anonymous memory, kept (first-touch faults for the watch tier to sample, and so pages
whose state the daemon reads from /proc/PID/pagemap); prints "reading ADDRESS" and starts the
reader; a second later calls mmap itself, printing nothing more (it waits there
for as long as the file system lives)."""
import ctypes
import mmap
import os
import sys
import threading
import time

print("pid", os.getpid(), flush=True)
f = open(sys.argv[1], "rb")
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
# Mapped by libc, so that its address is known; never touched by this process itself.
addr = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
mem = os.open("/proc/self/mem", os.O_RDONLY)
go = os.environ["FIXTURE_GO"]
while not os.path.exists(go):
    time.sleep(0.05)
touched = bytearray(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
for i in range(0, len(touched), mmap.PAGESIZE):
    touched[i] = 1
print("reading", hex(addr), flush=True)


def read_own_page():
    os.pread(mem, 1, addr)


threading.Thread(target=read_own_page, daemon=True).start()
time.sleep(1.0)
libc.mmap(None, 1 << 20, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
          -1, 0)
while True:
    time.sleep(3600)
