"""Harness for leakwatch's root tests: a real leakwatchd, real fixture programs, real HTTP.

Each test starts what it needs on 127.0.0.1 and stops it on exit, pass or fail."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

LEAKWATCHD = os.environ.get("LEAKWATCHD", "build/bin/leakwatchd")
FIXTURES = os.environ.get("FIXTURES_BIN", "build/tests/bin")


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def require_root():
    # Root is what loading BPF and probing other processes takes; without it these tests
    # cannot measure anything, so they fail (ctest -LE root leaves them out).
    check(os.geteuid() == 0, "this test loads BPF programs and must run as root "
          "(run `ctest -LE root` for the tests that need no root)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, what, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def parse_metrics(text):
    """Prometheus text format -> list of (name, labels dict, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)', line)
        check(m, f"unparsable metrics line: {line!r}")
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


class Server:
    """A process that logs to `log_path` in its own temporary `dir`; stop() ends it (TERM,
    then KILL) and removes the dir. Subclasses set proc, log, log_path and dir."""

    stop_timeout = 60

    def log_text(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Daemon(Server):
    def __init__(self, config_text, extra_args=(), env=None, wait=True, prefix=()):
        # prefix: runs leakwatchd under it (e.g. setpriv, for another user and capabilities)
        self.dir = tempfile.mkdtemp(prefix="leakwatch-test-")
        self.config = os.path.join(self.dir, "leakwatch.yaml")
        # LEAKWATCH_UNWIND runs a test's rules with that stack walk (frame-pointer or dwarf)
        unwind = os.environ.get("LEAKWATCH_UNWIND")
        if unwind:
            config_text = re.sub(r"^(\s*)- name: (.*)$",
                                 lambda m: f"{m.group(0)}\n{m.group(1)}  unwind: {unwind}",
                                 config_text, flags=re.M)
        with open(self.config, "w") as f:
            f.write(config_text)
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "leakwatchd.log")
        self.log = open(self.log_path, "w")
        # LEAKWATCH_PROBE_MODE runs a test with classic or multi-uprobe links (default: auto)
        mode = os.environ.get("LEAKWATCH_PROBE_MODE")
        if mode:
            extra_args = (*extra_args, "--probe-mode", mode)
        # Nothing pinned in the host's /sys/fs/bpf unless a test asks (test_restart.py mounts a
        # bpffs of its own): a test's state is never another's.
        if "--bpf-pin-dir" not in extra_args:
            extra_args = (*extra_args, "--bpf-pin-dir", "")
        self.proc = subprocess.Popen(
            [*prefix, LEAKWATCHD, "--config", self.config, "--web.listen-address",
             f"127.0.0.1:{self.port}", "--log-level", "debug", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))
        if wait:
            try:
                wait_until(self._up, 20, "leakwatchd to serve /metrics")
            except BaseException:
                # Not yet in the test's cleanup list: a daemon that did not come up is stopped
                # here, not left running after the test.
                self.stop()
                raise

    def _up(self):
        check(self.proc.poll() is None, f"leakwatchd exited with {self.proc.returncode}:\n"
              + self.log_text())
        try:
            self.get("/metrics")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return r.read().decode()

    def json(self, path):
        return json.loads(self.get(path))

    def metrics(self):
        return parse_metrics(self.get("/metrics"))

    def process(self, pid):
        for p in self.json("/api/v1/processes")["processes"]:
            if p["pid"] == pid:
                return p
        return None

    def stacks(self, pid, top=100):
        return self.json(f"/api/v1/stacks?pid={pid}&top={top}")["stacks"]

    def site_bytes(self, pid):
        """Outstanding bytes per site, summed over the stacks of one process."""
        out = {}
        for s in self.stacks(pid, 1000):
            out[s["site"]] = out.get(s["site"], 0) + s["outstanding_bytes"]
        return out



class Fixture:
    """A fixture program from tests/progs, held at its start line until go() is called."""

    def __init__(self, name, *args, argv0=None, env=None, prefix=(), tmpdir=None):
        # tmpdir: where its go files are, e.g. outside /tmp for a fixture with a /tmp of its own
        self.dir = tempfile.mkdtemp(prefix="leakwatch-fixture-", dir=tmpdir)
        self.go_file = os.path.join(self.dir, "go")
        e = dict(os.environ, FIXTURE_GO=self.go_file, **(env or {}))
        path = os.path.join(FIXTURES, name) if not prefix else name
        self.proc = subprocess.Popen([*prefix, path, *args], stdout=subprocess.PIPE, env=e,
                                     text=True)
        self.lines = []
        self.pid = int(self.expect("pid"))

    def go(self, name="go"):
        open(os.path.join(self.dir, name), "w").close()

    def expect(self, key, timeout=60):
        """Reads stdout until a line 'key value' and returns value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            check(line, f"fixture exited before printing {key!r}: {self.lines}")
            self.lines.append(line.rstrip())
            parts = line.split()
            if parts and parts[0] == key:
                return parts[1] if len(parts) > 1 else ""
        raise Failure(f"fixture did not print {key!r} in {timeout}s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["rm", "-rf", self.dir])


def start(cleanup, thing):
    """Registers a Daemon, Fixture or anything with stop() for cleanup; returns it."""
    cleanup.append(thing)
    return thing


def pid_rules(rules, interval_ms=1000, tracking="full"):
    """A config with one rule per (name, pid, unwind); unwind None: the default. The
    allocator probes are on from the start (tracking: full) unless `tracking` says otherwise
    (None: the default, escalate)."""
    text = f"interval: {interval_ms}ms\nwatch:\n"
    for name, pid, unwind in rules:
        text += f"  - name: {name}\n    match:\n      pid: {pid}\n"
        if tracking is not None:
            text += f"    tracking: {tracking}\n"
        if unwind is not None:
            text += f"    unwind: {unwind}\n"
    return text


def metric(daemon, name, **labels):
    """The sum of a metric's samples whose labels include these."""
    return sum(v for n, l, v in daemon.metrics()
               if n == name and all(l.get(k) == w for k, w in labels.items()))


def symbols(stack):
    """The symbols of a stack's frames, innermost first ("" where unknown)."""
    return [f.get("symbol", "") for f in stack["frames"]]


def in_order(have, want):
    """`want` appear in `have` in this order (not necessarily adjacent)."""
    i = 0
    for s in have:
        if i < len(want) and s == want[i]:
            i += 1
    return i == len(want)


def within(actual, expected, tolerance):
    return abs(actual - expected) <= tolerance * expected


def check_nothing_lost(daemon, reasons):
    """leakwatch_lost_events_total is 0 for each of these reasons."""
    lost = {l["reason"]: v for n, l, v in daemon.metrics() if n == "leakwatch_lost_events_total"}
    for reason in reasons:
        check(lost[reason] == 0, f"lost events {reason} = {lost[reason]}")


def run(tests):
    """Runs the test named on the command line (or all), cleaning up after each."""
    names = sys.argv[1:] or list(tests)
    failed = 0
    for name in names:
        cleanup = []
        start = time.monotonic()
        try:
            tests[name](cleanup)
            print(f"PASS {name} ({time.monotonic() - start:.1f}s)")
        except Exception as e:  # noqa: BLE001 - report any failure of the test
            failed += 1
            print(f"FAIL {name}: {e}")
            if not isinstance(e, Failure):
                traceback.print_exc()
            for c in cleanup:
                if isinstance(c, Daemon):
                    print("---- leakwatchd log ----\n" + c.log_text()[-6000:])
        finally:
            for c in reversed(cleanup):
                try:
                    c.stop()
                except Exception:  # noqa: BLE001 - cleanup must go on
                    traceback.print_exc()
    print(f"{len(names) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
