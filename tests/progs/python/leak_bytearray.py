"""The reference article's Python leak: bytearrays kept in a list and never released.
Usage: python3 leak_bytearray.py SIZE COUNT
Prints "pid N"; waits for the file named by FIXTURE_GO, if set; runs leak_buffers() once and
frees what it kept (so that a tracer has seen the path: a running service's has), prints
"warm"; waits for FIXTURE_GO + ".leak"; leaks COUNT bytearrays of SIZE bytes from
leak_buffers(); prints "leaked N"; then sleeps."""
import os
import sys
import time

kept = []


def leak_buffers(size, count):
    for _ in range(count):
        kept.append(bytearray(size))


def wait_for(path):
    while path and not os.path.exists(path):
        time.sleep(0.01)


def main():
    size, count = int(sys.argv[1]), int(sys.argv[2])
    print("pid", os.getpid(), flush=True)
    go = os.environ.get("FIXTURE_GO")
    wait_for(go)
    leak_buffers(size, 1)
    kept.clear()
    print("warm", flush=True)
    wait_for(go and go + ".leak")
    leak_buffers(size, count)
    print("leaked", size * count, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
