"""Root tests: leakwatchd speaks the service manager's notify protocol, to a socket the test
owns as systemd would (READY only once probes are attached and HTTP listens; watchdog pings;
RELOADING with MONOTONIC_USEC then READY on SIGHUP; STOPPING on SIGTERM, gone within 5 s)."""
import os
import signal
import socket
import tempfile
import threading
import time
import urllib.request

from lwtest import Daemon, Fixture, check, require_root, run, wait_until

CONFIG = """
interval: 1s
watch:
  - name: steady
    tracking: full
    match:
      comm: leak_steady
"""


class NotifySocket:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="leakwatch-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []  # (monotonic time, {key: value})
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(l.split("=", 1) for l in data.decode().splitlines() if "=" in l)
            with self.lock:
                self.messages.append((time.monotonic(), fields))
            on = getattr(self, "on_message", None)
            if on:
                on(fields)

    def find(self, key, value=None, after=0.0):
        with self.lock:
            for t, m in self.messages:
                if t >= after and key in m and (value is None or m[key] == value):
                    return t, m
        return None

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def test_notify_lifecycle(cleanup):
    fixture = Fixture("leak_steady", "4096", "100000", "50")
    cleanup.append(fixture)
    notify = NotifySocket()
    cleanup.append(notify)
    seen_at_ready = {}

    def on_message(fields):
        # What a client sees the moment READY=1 arrives: HTTP answers, the fixture is watched.
        if fields.get("READY") == "1" and "processes" not in seen_at_ready:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{daemon.port}/api/v1/processes", timeout=5) as r:
                    seen_at_ready["processes"] = r.read().decode()
            except Exception as e:  # noqa: BLE001 - recorded and asserted below
                seen_at_ready["processes"] = f"error: {e}"

    notify.on_message = on_message
    daemon = Daemon(CONFIG, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"},
                    wait=False)
    cleanup.append(daemon)
    ready = wait_until(lambda: notify.find("READY", "1"), 20, "READY=1")
    wait_until(lambda: "processes" in seen_at_ready, 5, "the check made at READY")
    check(f'"pid": {fixture.pid}' in seen_at_ready["processes"],
          f"at READY=1 the running fixture was not attached or HTTP did not answer: "
          f"{seen_at_ready['processes'][:300]}")
    check("watching 1 processes" in ready[1].get("STATUS", ""), f"STATUS: {ready[1]}")

    t0 = time.monotonic()
    time.sleep(2.2)
    with notify.lock:
        pings = [t for t, m in notify.messages if m.get("WATCHDOG") == "1" and t >= t0]
    check(len(pings) >= 3, f"{len(pings)} watchdog pings in 2.2 s with WATCHDOG_USEC=1s")

    t_hup = time.monotonic()
    daemon.proc.send_signal(signal.SIGHUP)
    reloading = wait_until(lambda: notify.find("RELOADING", "1", after=t_hup), 5, "RELOADING=1")
    usec = int(reloading[1]["MONOTONIC_USEC"])
    check(abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 5,
          f"MONOTONIC_USEC {usec} is not CLOCK_MONOTONIC now")
    wait_until(lambda: notify.find("READY", "1", after=reloading[0]), 5, "READY=1 after reload")

    t_term = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: notify.find("STOPPING", "1", after=t_term), 5, "STOPPING=1")
    daemon.proc.wait(timeout=30)
    took = time.monotonic() - t_term
    print(f"stopped {took:.2f}s after SIGTERM, exit {daemon.proc.returncode}")
    check(daemon.proc.returncode == 0, f"exit status {daemon.proc.returncode}")
    check(took < 5, f"took {took:.2f}s to stop (limit 5 s)")


def test_reload_keeps_state(cleanup):
    """Unchanged rules keep their live allocations and history across a reload; a removed
    rule's process is detached and its series go; an added rule attaches."""
    steady = Fixture("leak_steady", "65536", "20", "10")
    cleanup.append(steady)
    other = Fixture("leak_all")
    cleanup.append(other)
    daemon = Daemon(CONFIG + """  - name: all
    match:
      comm: leak_all
""")
    cleanup.append(daemon)
    wait_until(lambda: daemon.process(steady.pid) and daemon.process(other.pid), 10,
               "both fixtures attached")
    steady.go()
    other.go()
    truth = int(steady.expect("leaked"))
    other.expect("done")
    time.sleep(2.2)
    before = daemon.process(steady.pid)
    sites_before = daemon.site_bytes(steady.pid)
    check(before["outstanding_bytes"] >= truth, f"before the reload: {before}")

    # Same rule for leak_steady, rule for leak_all removed, a new rule added.
    with open(daemon.config, "w") as f:
        f.write(CONFIG + """  - name: entry_points_again
    match:
      comm: reexec
""")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: daemon.process(other.pid) is None, 5, "the removed rule's process detached")
    time.sleep(2.2)
    after = daemon.process(steady.pid)
    check(after is not None, "the unchanged rule's process was detached by the reload")
    check(after["attached_at"] == before["attached_at"], "it was attached anew")
    # The fixture keeps churning (64 blocks of at most 8 KiB at a time): a snapshot may catch
    # some of them; the leak itself must be exactly what it was.
    check(abs(after["outstanding_bytes"] - before["outstanding_bytes"]) <= 64 * 8192,
          f"outstanding bytes across the reload: {before['outstanding_bytes']} -> "
          f"{after['outstanding_bytes']}")
    check(after["allocated_bytes_total"] >= before["allocated_bytes_total"],
          "the allocation counter went back: the process was re-attached")
    sites_after = daemon.site_bytes(steady.pid)
    check(sites_after.get("leak_record_entry") == sites_before.get("leak_record_entry"),
          f"stacks changed: {sites_before} -> {sites_after}")
    gone = [l for n, l, v in daemon.metrics() if l.get("pid") == str(other.pid)]
    check(not gone, f"series of the removed rule's process remain: {gone[:3]}")
    check("rules changed" in daemon.log_text(), "the detach is logged")


if __name__ == "__main__":
    require_root()
    run({"notify_lifecycle": test_notify_lifecycle,
         "reload_keeps_state": test_reload_keeps_state})
