"""A leak inside a C extension called from Python: extleak.leak (extleak.c) mallocs and keeps
COUNT blocks of SIZE bytes, called from leak_through_extension().
Usage: python3 leak_extension.py DIR SIZE COUNT (DIR holds the built extleak module)
Prints "pid N"; waits for FIXTURE_GO; prints "warm"; waits for FIXTURE_GO + ".leak"; leaks;
prints "leaked N"; then sleeps."""
import os
import sys
import time

sys.path.insert(0, sys.argv[1])
import extleak  # noqa: E402


def leak_through_extension(size, count):
    extleak.leak(size, count)


def wait_for(path):
    while path and not os.path.exists(path):
        time.sleep(0.01)


def main():
    size, count = int(sys.argv[2]), int(sys.argv[3])
    print("pid", os.getpid(), flush=True)
    go = os.environ.get("FIXTURE_GO")
    wait_for(go)
    print("warm", flush=True)
    wait_for(go and go + ".leak")
    leak_through_extension(size, count)
    print("leaked", size * count, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
