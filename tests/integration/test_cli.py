"""Root tests of leakwatchd's command line and config handling, on the real binary."""
import os
import signal
import subprocess
import tempfile
import time

from lwtest import (LEAKWATCHD, Daemon, Fixture, check, free_port, require_root, run,
                    wait_until)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_CONFIG = os.path.join(REPO, "config", "leakwatch.yaml")
BAD = """interval: 5s
watch:
  - name: app
    match:
      comm: app
    min_sise: 1KiB
"""


def write(text):
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix="leakwatch-cli-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def leakwatchd(*args, timeout=30):
    return subprocess.run([LEAKWATCHD, *args], capture_output=True, text=True, timeout=timeout)


def test_check_config_valid(cleanup):
    r = leakwatchd("--check-config", "--config", DEFAULT_CONFIG)
    check(r.returncode == 0, f"exit {r.returncode}: {r.stdout}{r.stderr}")
    check("valid" in r.stdout and "BPF programs load" in r.stdout, f"verdict: {r.stdout}")


def test_check_config_invalid(cleanup):
    path = write(BAD)
    try:
        r = leakwatchd("--check-config", "--config", path)
    finally:
        os.unlink(path)
    check(r.returncode == 1, f"exit {r.returncode}: {r.stdout}{r.stderr}")
    out = r.stdout + r.stderr
    check(":6:" in out and "min_sise" in out and "min_size" in out,
          f"the message names the line, the key and the likely one: {out}")


def test_bad_config_at_start(cleanup):
    path = write(BAD)
    try:
        t0 = time.monotonic()
        r = leakwatchd("--config", path, "--web.listen-address", f"127.0.0.1:{free_port()}")
    finally:
        os.unlink(path)
    check(r.returncode != 0, f"started with a bad config: exit {r.returncode}")
    check("min_sise" in r.stderr and ":6:" in r.stderr, f"message: {r.stderr}")
    check(time.monotonic() - t0 < 10, "took long to refuse the config")
    r = leakwatchd("--config", "/nonexistent/leakwatch.yaml")
    check(r.returncode != 0 and "/nonexistent/leakwatch.yaml" in r.stderr,
          f"missing file: exit {r.returncode}, {r.stderr}")


def test_default_config_runs(cleanup):
    with open(DEFAULT_CONFIG) as f:
        d = Daemon(f.read())
    cleanup.append(d)
    check("<title>leakwatch</title>" in d.get("/"), "landing page")
    check(d.json("/api/v1/processes") == {"processes": []}, "nothing watched by default")
    names = {n for n, _, _ in d.metrics()}
    for n in ("leakwatch_build_info", "leakwatch_config_last_reload_successful",
              "leakwatch_attached_processes", "leakwatch_lost_events_total",
              "leakwatch_bpf_map_entries", "leakwatch_bpf_map_capacity"):
        check(n in names, f"{n} missing from /metrics")


def reload_ok(d):
    return [v for n, _, v in d.metrics() if n == "leakwatch_config_last_reload_successful"][0]


def test_reload_keeps_running(cleanup):
    d = Daemon("interval: 1s\nwatch: []\n")
    cleanup.append(d)
    fixture = Fixture("leak_steady", "4096", "1000", "50")
    cleanup.append(fixture)
    check(d.process(fixture.pid) is None, "watched before any rule names it")
    with open(d.config, "w") as f:
        f.write(BAD)
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reload_ok(d) == 0, 5, "last_reload_successful to drop to 0")
    check(d.proc.poll() is None, "a bad reload stopped the daemon")
    check("min_sise" in d.log_text(), "the reload error is logged with the key")
    with open(d.config, "w") as f:
        f.write("interval: 1s\nwatch:\n  - name: steady\n    tracking: full\n    match:\n      comm: leak_steady\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reload_ok(d) == 1, 5, "last_reload_successful back to 1")
    wait_until(lambda: d.process(fixture.pid), 5, "the newly named process attached")


if __name__ == "__main__":
    require_root()
    run({
        "check_config_valid": test_check_config_valid,
        "check_config_invalid": test_check_config_invalid,
        "bad_config_at_start": test_bad_config_at_start,
        "default_config_runs": test_default_config_runs,
        "reload_keeps_running": test_reload_keeps_running,
    })
