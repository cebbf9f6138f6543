"""End to end: leakwatchd → Prometheus with the shipped alert rules → Alertmanager → a webhook.

One run, as root: leakwatchd (interval 1s, leak_detection.window 20s) watches five `patterns`
fixtures, the steady leak and four distractors (a cache that fills and plateaus, churn, a
one-time step, a sawtooth). The real Debian `prometheus` scrapes it every second and evaluates
packaging/prometheus/leakwatch-alerts.yml every second, with every `for:` divided by 60 (see
shorten_for); the real `prometheus-alertmanager` routes every alert to a webhook receiver in
this process. All of them listen on 127.0.0.1 only, in temporary directories.

Passes when the leak's LeakwatchLeakSuspected, with site="leak_steady_growth", reaches the
webhook within LEAK_ALERT_TIMEOUT of the fixture starting to leak, and by the end (OBSERVE
after that start, and at least AFTER_ALERT after the alert) no LeakwatchLeakSuspected or
LeakwatchProcessLeakSuspected names a distractor's pid or site. Prints the detection latency.
"""
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import lwtest  # noqa: E402
from lwtest import (LEAKWATCHD, Daemon, Fixture, check, free_port,  # noqa: E402
                    require_root, run, wait_until)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RULES = os.path.join(REPO, "packaging", "prometheus", "leakwatch-alerts.yml")
PROMETHEUS = os.environ.get("PROMETHEUS") or "/usr/bin/prometheus"
ALERTMANAGER = os.environ.get("ALERTMANAGER") or "/usr/bin/prometheus-alertmanager"

INTERVAL = 1  # s: leakwatchd's sampling, Prometheus' scrape and rule evaluation
WINDOW = 20  # s: leak_detection.window
LEAK_ALERT_TIMEOUT = 120  # s from the leak's start to its alert at the webhook
OBSERVE = 120  # s from the fixtures' start: 6 windows, 15 sawtooth periods
AFTER_ALERT = 30  # s watched at least after the leak's alert

# mode: (the site its allocations show, arguments). The leak grows 640 KiB/s; the plateau fills
# 8 MiB in 10 s and stays; the churn holds ~4 MiB; the step takes 16 MiB once; the sawtooth
# grows 640 KiB/s for 8 s and frees it all.
PATTERNS = {
    "leak": ("leak_steady_growth", ["chunk=64KiB", "tick_ms=100"]),
    "plateau": ("cache_fill", ["cap=8MiB", "fill_ms=10000", "tick_ms=100"]),
    "churn": ("churn_alloc_free", ["slots=512", "size=32KiB", "ops=64", "tick_ms=100"]),
    "step": ("startup_allocation", ["size=16MiB"]),
    "sawtooth": ("sawtooth_grow", ["chunk=64KiB", "tick_ms=100", "period_ms=8000"]),
}
LEAK_ALERTS = ("LeakwatchLeakSuspected", "LeakwatchProcessLeakSuspected")

CONFIG = f"""
interval: {INTERVAL}s
leak_detection:
  window: {WINDOW}s
watch:
""" + "".join(f"""  - name: {mode}
    tracking: full
    match:
      comm: patterns
      cmdline: 'patterns {mode}( |$)'
""" for mode in PATTERNS)


def require_binary(path, package):
    check(os.path.isfile(path) and os.access(path, os.X_OK),
          f"{path} is missing: install the Debian package {package} (scripts/deps.sh)")


def start(cleanup, cls, *args, **kwargs):
    """cls(*args), registered for cleanup before it starts: one that fails to come up (a
    daemon that never serves) is stopped too."""
    thing = cls.__new__(cls)
    cleanup.append(thing)
    thing.__init__(*args, **kwargs)
    return thing


DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000,
           "y": 31536000000}
FOR_LINE = re.compile(r"^(\s*for:\s*)(\S+)\s*$", re.M)


def shorten_for(rules):
    """The rules with each `for: D` line replaced by `for: D/60` (5m becomes 5s, 15m 15s):
    one second of this test stands for one minute of production. Nothing else changes; in
    particular the range windows ([10m], [1h], [5m]) stay, so only the two leak alerts, whose
    evidence comes from leakwatchd's own (short) window, are judged by this test."""
    def shorter(m):
        parts = DURATION.findall(m.group(2))
        check(parts and "".join(n + u for n, u in parts) == m.group(2),
              f"unparsable duration in {m.group(0)!r}")
        ms = sum(int(n) * UNIT_MS[u] for n, u in parts) // 60
        return m.group(1) + (f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms")
    short, n = FOR_LINE.subn(shorter, rules)
    check(n > 0, "no `for:` in the rules")
    return short


class Webhook:
    """Alertmanager's webhook receiver: records every POST with the time it came."""

    def __init__(self):
        self.posts = []  # (time.monotonic(), payload)
        self.lock = threading.Lock()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparsable": body.decode(errors="replace")}
                with hook.lock:
                    hook.posts.append((time.monotonic(), payload))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def firing(self):
        """(time received, alert) of every firing alert posted so far."""
        with self.lock:
            posts = list(self.posts)
        return [(t, a) for t, p in posts for a in p.get("alerts", []) if a["status"] == "firing"]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class BinaryServer(lwtest.Server):
    """A server run from its binary in a temporary directory, its log kept there."""

    name = "server"
    stop_timeout = 30

    def __init__(self, argv_of, files):
        self.dir = tempfile.mkdtemp(prefix=f"leakwatch-{self.name}-")
        self.port = free_port()
        for fname, text in files.items():
            with open(os.path.join(self.dir, fname), "w") as f:
                f.write(text)
        self.log_path = os.path.join(self.dir, f"{self.name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv_of(self.dir, self.port), stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=self.dir)

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return r.read().decode()

    def json(self, path):
        return json.loads(self.get(path))

    def wait_ready(self, timeout=30):
        def ready():
            check(self.proc.poll() is None,
                  f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                self.get("/-/ready")
                return True
            except (urllib.error.URLError, ConnectionError):
                return False
        wait_until(ready, timeout, f"{self.name} to be ready", step=0.2)



class Alertmanager(BinaryServer):
    name = "alertmanager"

    def __init__(self, webhook_port):
        config = f"""
route:
  receiver: webhook
  group_by: ['...']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: http://127.0.0.1:{webhook_port}/
        send_resolved: true
"""
        super().__init__(lambda d, port: [
            ALERTMANAGER, f"--config.file={d}/alertmanager.yml", f"--storage.path={d}/data",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            {"alertmanager.yml": config})


class Prometheus(BinaryServer):
    name = "prometheus"

    def __init__(self, rules, target_port, alertmanager_port):
        config = f"""
global:
  scrape_interval: {INTERVAL}s
  scrape_timeout: {INTERVAL}s
  evaluation_interval: {INTERVAL}s
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{alertmanager_port}']
scrape_configs:
  - job_name: leakwatch
    static_configs:
      - targets: ['127.0.0.1:{target_port}']
"""
        super().__init__(lambda d, port: [
            PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
            f"--web.listen-address=127.0.0.1:{port}"],
            {"prometheus.yml": config, "rules.yml": rules})

    def query(self, expr):
        r = self.json("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        check(r["status"] == "success", f"query {expr}: {r}")
        return r["data"]["result"]


def wait_scraping(prom, alertmanager, expected_rules):
    """Prometheus has loaded the rules, scrapes leakwatchd and knows the Alertmanager."""
    def rules_loaded():
        groups = prom.json("/api/v1/rules")["data"]["groups"]
        names = {r["name"] for g in groups for r in g["rules"]}
        return expected_rules <= names
    wait_until(rules_loaded, 30, "Prometheus to load the rules", step=0.5)
    wait_until(lambda: any(s["value"][1] == "1" for s in prom.query('up{job="leakwatch"}')),
               30, "Prometheus to scrape leakwatchd", step=0.5)
    wait_until(lambda: any(f":{alertmanager.port}/" in a["url"] for a in
                           prom.json("/api/v1/alertmanagers")["data"]["activeAlertmanagers"]),
               30, "Prometheus to know the Alertmanager", step=0.5)


def leak_alert_of(webhook, pid):
    for t, a in webhook.firing():
        if a["labels"].get("alertname") == "LeakwatchLeakSuspected" and \
                a["labels"].get("pid") == str(pid):
            return t, a
    return None


def describe(alerts):
    return "\n".join(f"  {a['labels']} {a['annotations'].get('summary', '')}" for _, a in alerts)


def diagnostics(daemon, prom, webhook, alertmanager):
    """What each stage saw: printed when the test fails."""
    print("---- alerts at the webhook ----\n" + (describe(webhook.firing()) or "  none"))
    for expr in ('leakwatch_leak_suspected', 'ALERTS', 'up{job="leakwatch"}'):
        try:
            series = prom.query(expr)
            print(f"---- Prometheus: {expr} ----")
            for s in series:
                print(f"  {s['metric']} {s['value'][1]}")
        except Exception as e:  # noqa: BLE001 - diagnostics only
            print(f"---- Prometheus: {expr}: {e}")
    try:
        print("---- leakwatchd /api/v1/leaks ----\n" + daemon.get("/api/v1/leaks")[:4000])
    except Exception as e:  # noqa: BLE001 - diagnostics only
        print(f"---- leakwatchd /api/v1/leaks: {e}")
    for server in (prom, alertmanager):
        print(f"---- {server.name} log ----\n" + server.log_text()[-3000:])


def test_leak_pages(cleanup):
    require_binary(PROMETHEUS, "prometheus")
    require_binary(ALERTMANAGER, "prometheus-alertmanager")
    require_binary(LEAKWATCHD, "leakwatch (build it: cmake --build build)")
    with open(RULES) as f:
        rules = f.read()
    alert_names = set(re.findall(r"^\s*- alert:\s*(\S+)", rules, re.M))
    check(set(LEAK_ALERTS) <= alert_names, f"the rules lack {LEAK_ALERTS}: {alert_names}")
    short = shorten_for(rules)
    print("for: " + ", ".join(f"{a[1]} -> {b[1]}" for a, b in zip(FOR_LINE.findall(rules),
                                                                 FOR_LINE.findall(short))))

    webhook = start(cleanup, Webhook)
    alertmanager = start(cleanup, Alertmanager, webhook.port)
    daemon = start(cleanup, Daemon, CONFIG)
    prom = start(cleanup, Prometheus, short, daemon.port, alertmanager.port)
    try:
        alertmanager.wait_ready()
        prom.wait_ready()
        wait_scraping(prom, alertmanager, alert_names)

        fixtures = {mode: start(cleanup, Fixture, "patterns", mode, *args)
                    for mode, (_, args) in PATTERNS.items()}
        for mode, fixture in fixtures.items():
            wait_until(lambda f=fixture: daemon.process(f.pid), 10, f"{mode} attached")
        time.sleep(2 * INTERVAL)  # a sample of each before it allocates
        t_go, wall_go = time.monotonic(), time.time()
        for fixture in fixtures.values():
            fixture.go()
        leak = fixtures["leak"]
        distractors = {str(f.pid): mode for mode, f in fixtures.items() if mode != "leak"}
        distractor_sites = {PATTERNS[mode][0] for mode in distractors.values()}
        print("pids: " + ", ".join(f"{m} {f.pid}" for m, f in fixtures.items()))

        def named_distractor():
            return [(t, a) for t, a in webhook.firing()
                    if a["labels"].get("alertname") in LEAK_ALERTS
                    and (a["labels"].get("pid") in distractors
                         or a["labels"].get("site") in distractor_sites)]

        found = None
        while found is None:
            found = leak_alert_of(webhook, leak.pid)
            bad = named_distractor()
            check(not bad, "a leak alert names a distractor:\n" + describe(bad))
            check(time.monotonic() - t_go < LEAK_ALERT_TIMEOUT,
                  f"no LeakwatchLeakSuspected for the leak (pid {leak.pid}) at the webhook "
                  f"{LEAK_ALERT_TIMEOUT}s after it started leaking")
            time.sleep(0.2)
        t_alert, alert = found
        latency = t_alert - t_go
        print(f"detection latency: {latency:.1f}s from the leak's start to the webhook "
              f"(leak_detection.window {WINDOW}s, interval {INTERVAL}s, shortened for:)")
        try:
            flagged = [s for s in daemon.json("/api/v1/leaks")["leaks"]
                       if s["scope"] == "stack" and s["pid"] in (leak.pid, str(leak.pid))]
            for s in flagged:
                print(f"  leakwatchd flagged {s['site']} {s['flagged_since'] - wall_go:.1f}s "
                      f"after the start, at {s['growth_bytes_per_second']:.0f} B/s "
                      f"(the fixture: 655360 B/s at most)")
        except (urllib.error.URLError, KeyError, ValueError, TypeError) as e:
            print(f"  (no breakdown from /api/v1/leaks: {e!r})")
        labels, annotations = alert["labels"], alert["annotations"]
        expected = {"site": "leak_steady_growth", "watch": "leak", "comm": "patterns",
                    "pid": str(leak.pid), "scope": "stack", "job": "leakwatch"}
        check(all(labels.get(k) == v for k, v in expected.items()),
              f"the leak's alert has labels {labels}, expected {expected} among them")
        check(re.fullmatch(r"[0-9a-f]{16}", labels.get("stack_id", "")),
              f"stack_id: {labels.get('stack_id')!r}")
        check(labels.get("severity") and "B/s" in annotations.get("description", "")
              and annotations.get("runbook_url", "").endswith("#leakwatchleaksuspected")
              and annotations.get("summary"), f"the alert's labels {labels}, "
              f"annotations {annotations}")
        print(f"alert: {annotations['summary']}\n  {annotations['description']}")

        end = max(t_go + OBSERVE, t_alert + AFTER_ALERT)
        while time.monotonic() < end:
            bad = named_distractor()
            check(not bad, "a leak alert names a distractor:\n" + describe(bad))
            check(all(f.proc.poll() is None for f in fixtures.values()), "a fixture exited")
            time.sleep(0.5)
        print(f"no leak alert for the distractors in {time.monotonic() - t_go:.0f}s")
        others = [(t, a) for t, a in webhook.firing()
                  if a["labels"].get("alertname") not in LEAK_ALERTS
                  or a["labels"].get("pid") != str(leak.pid)]
        if others:
            print("other alerts that fired (their windows are not shortened; not judged):\n"
                  + describe(others))
        ever = prom.query(f"max_over_time(leakwatch_leak_suspected[{OBSERVE + 60}s]) > 0")
        print("series leakwatchd ever flagged: " + (", ".join(
            f"{s['metric'].get('watch')}/{s['metric'].get('scope')}/"
            f"{s['metric'].get('site', '-')}" for s in ever) or "none"))
    except Exception:
        diagnostics(daemon, prom, webhook, alertmanager)
        raise


if __name__ == "__main__":
    require_root()
    run({"leak_pages": test_leak_pages})
