"""The reference article's Python leak: bytearrays kept in a list and never released.
Usage: python3 leak_bytearray.py SIZE COUNT
Prints "pid N"; waits for the file named by FIXTURE_GO, if set; leaks COUNT bytearrays of SIZE
bytes from leak_buffers(); prints "leaked N"; then sleeps."""
import os
import sys
import time

kept = []


def leak_buffers(size, count):
    for _ in range(count):
        kept.append(bytearray(size))


def main():
    size, count = int(sys.argv[1]), int(sys.argv[2])
    print("pid", os.getpid(), flush=True)
    go = os.environ.get("FIXTURE_GO")
    while go and not os.path.exists(go):
        time.sleep(0.01)
    leak_buffers(size, count)
    print("leaked", size * count, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
