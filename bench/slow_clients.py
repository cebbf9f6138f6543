#!/usr/bin/python3
"""Scrape latency of leakwatchd with slow HTTP clients connected (docs/operations.md).

Starts leakwatchd (LEAKWATCHD, default build/bin/leakwatchd) on 127.0.0.1 watching one
leaking fixture by pid, then for each number N of slow clients (each sends a request's header
one byte a second, and reconnects when the daemon closes it) runs SCRAPERS concurrent scrapers
of /metrics for SECONDS and prints the latency percentiles and the slowest scrape.
As root, from the source tree:  bench/slow_clients.py [N...]   (default 0 4 15 16 32 64)
"""
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
os.environ.setdefault("LEAKWATCHD", "build/bin/leakwatchd")
os.environ.setdefault("FIXTURES_BIN", "build/tests/bin")
from lwtest import Daemon, Fixture, wait_until  # noqa: E402

SCRAPERS = int(os.environ.get("SCRAPERS", "4"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\n\r\n"


def slow_client(port, stop):
    """Sends REQUEST a byte a second, over and over, reconnecting when closed."""
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            time.sleep(0.1)
            continue
        try:
            for b in REQUEST:
                if stop.wait(1.0):
                    break
                s.sendall(bytes([b]))
        except OSError:
            pass
        finally:
            s.close()


def scraper(port, stop, out):
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                r.read()
            out.append(time.monotonic() - t0)
        except OSError:
            out.append(float("inf"))


def measure(port, slow):
    stop = threading.Event()
    slow_threads = [threading.Thread(target=slow_client, args=(port, stop), daemon=True)
                    for _ in range(slow)]
    for t in slow_threads:
        t.start()
    time.sleep(2.0)  # let them all connect and start dribbling
    latencies = []
    scrape_stop = threading.Event()
    scrapers = [threading.Thread(target=scraper, args=(port, scrape_stop, latencies))
                for _ in range(SCRAPERS)]
    for t in scrapers:
        t.start()
    time.sleep(SECONDS)
    scrape_stop.set()
    for t in scrapers:
        t.join()
    stop.set()
    for t in slow_threads:
        t.join()
    ok = sorted(x for x in latencies if x != float("inf"))
    failed = len(latencies) - len(ok)
    q = statistics.quantiles(ok, n=100) if len(ok) > 1 else ok * 99
    print(f"{slow:3d} slow clients, {SCRAPERS} scrapers: {len(ok):5d} scrapes in {SECONDS:.0f}s, "
          f"p50 {q[49] * 1000:7.1f} ms, p99 {q[98] * 1000:7.1f} ms, "
          f"max {ok[-1] * 1000:7.1f} ms, failed {failed}", flush=True)


def main():
    levels = [int(a) for a in sys.argv[1:]] or [0, 4, 15, 16, 32, 64]
    fixture = Fixture("leak_steady", "4096", "1000000", "20")
    daemon = None
    try:
        daemon = Daemon(f"interval: 1s\nwatch:\n  - name: bench\n    tracking: full\n"
                        f"    match:\n      pid: {fixture.pid}\n")
        wait_until(lambda: daemon.process(fixture.pid), 10, "the fixture to be watched")
        fixture.go()
        time.sleep(2)
        size = len(daemon.get("/metrics"))
        print(f"/metrics is {size} bytes; leakwatchd serves with "
              f"{os.environ.get('LEAKWATCHD')}", flush=True)
        for slow in levels:
            measure(daemon.port, slow)
    finally:
        if daemon:
            daemon.stop()
        fixture.stop()


if __name__ == "__main__":
    main()
