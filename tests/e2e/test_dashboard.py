"""End to end over TLS with basic authentication, and the Grafana dashboard's every query.

One run, as root. leakwatchd serves with --web.config.file: a certificate for 127.0.0.1 signed
by a CA this test makes (openssl), and one basic-auth user whose bcrypt hash comes from
libcrypt; `promtool check web-config` validates the file first. It watches leak_steady (a leak
of 64 KiB every 100 ms in leak_record_entry) by pid with its allocator probed (tracking: full),
patterns' leak_steady_growth (256 KiB every 100 ms, up to 64 MiB) by pid in the default
tracking (the watch tier, escalated once suspected), with leak_detection.window 20s, and the
kernel's page allocations. The real Debian `prometheus` scrapes it every second as three jobs:

  leakwatch            https, the CA, the right user and password: must be up
  leakwatch_wrongauth  https, the CA, a wrong password: must be down with HTTP 401
  leakwatch_plain      plain http to the TLS port: must be down

The API is protected the same way: without credentials or with wrong ones /api/v1/* and the
pprof paths answer 401, and plain HTTP gets no answer. Then every query of
packaging/grafana/leakwatch.json (every panel's targets, collapsed rows included, and the
template variables' label_values) runs against that Prometheus, with the dashboard's
variables and Grafana's built-ins substituted, and must return data: the leak's panels once
leakwatchd suspects it.
"""
import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from lwtest import Daemon, Fixture, check, free_port, require_root, run, wait_until  # noqa: E402
from test_alerting import BinaryServer, require_binary, start  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARD = os.path.join(REPO, "packaging", "grafana", "leakwatch.json")
PROMETHEUS = os.environ.get("PROMETHEUS") or "/usr/bin/prometheus"
PROMTOOL = os.environ.get("PROMTOOL") or "/usr/bin/promtool"
USER, PASSWORD = "prometheus", "leak-watcher-secret"
LEAK_TIMEOUT = 120  # s for leakwatchd to suspect the leak (window 20 s)
# Grafana's built-ins, as it would set them for a 15-minute view scraped every second.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000",
            "__range": "15m", "__range_s": "900", "__range_ms": "900000"}


def bcrypt(password):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024))


class Files:
    """A directory with the CA, the server's certificate and key, the web config and the
    password file; removed at cleanup."""

    san = "IP:127.0.0.1,DNS:localhost"  # the names of the server's certificate

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="leakwatch-e2e-tls-")
        self.ca = self.path("ca.crt")
        for args in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                      "-out", "ca.crt", "-days", "2", "-subj", "/CN=leakwatch e2e CA"],
                     ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
                      "server.csr", "-subj", "/CN=127.0.0.1"]):
            self.openssl(*args)
        self.write("san.cnf", f"subjectAltName={self.san}\n")
        self.openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")
        self.web = self.write("web.yml", "tls_server_config:\n  cert_file: server.crt\n"
                              "  key_file: server.key\n  min_version: TLS12\n"
                              f"basic_auth_users:\n  {USER}: '{bcrypt(PASSWORD)}'\n")
        self.password = self.write("password", PASSWORD + "\n")
        self.wrong = self.write("wrong", "not-the-password\n")

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    def openssl(self, *args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=self.dir)
        check(r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}")

    def stop(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Prometheus(BinaryServer):
    name = "prometheus"

    def __init__(self, target_port, files):
        target = f"['127.0.0.1:{target_port}']"
        config = f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: leakwatch
    scheme: https
    tls_config: {{ca_file: {files.ca}}}
    basic_auth: {{username: {USER}, password_file: {files.password}}}
    static_configs: [{{targets: {target}}}]
  - job_name: leakwatch_wrongauth
    scheme: https
    tls_config: {{ca_file: {files.ca}}}
    basic_auth: {{username: {USER}, password_file: {files.wrong}}}
    static_configs: [{{targets: {target}}}]
  - job_name: leakwatch_plain
    scheme: http
    static_configs: [{{targets: {target}}}]
"""
        super().__init__(lambda d, port: [
            PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
            f"--web.listen-address=127.0.0.1:{port}"], {"prometheus.yml": config})

    def api(self, path, **params):
        r = self.json(path + "?" + urllib.parse.urlencode(params, doseq=True))
        check(r["status"] == "success", f"{path} {params}: {r}")
        return r["data"]

    def targets(self):
        return {t["labels"]["job"]: t for t in self.api("/api/v1/targets")["activeTargets"]}


def https_get(port, path, files, auth=None):
    """(status, body) of GET https://127.0.0.1:port/path, trusting the test's CA."""
    ctx = ssl.create_default_context(cafile=files.ca)
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    if auth:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def tls_daemon(cleanup, config, files):
    """leakwatchd with the web config of `files`, once it answers over TLS with the user's
    credentials."""
    daemon = start(cleanup, Daemon, config, ("--web.config.file", files.web), None, False)

    def serving():
        check(daemon.proc.poll() is None, "leakwatchd exited:\n" + daemon.log_text())
        try:
            return https_get(daemon.port, "/api/v1/processes", files, (USER, PASSWORD))[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False
    wait_until(serving, 30, "leakwatchd over TLS")
    return daemon


def check_protected(port, files):
    """Every kind of path asks for the credentials; plain HTTP gets no answer."""
    for path in ("/metrics", "/api/v1/processes", "/api/v1/leaks", "/api/v1/stacks?pid=1",
                 "/api/v1/pprof", "/debug/pprof/heap", "/api/v1/folded", "/"):
        none, _ = https_get(port, path, files)
        wrong, _ = https_get(port, path, files, (USER, "wrong"))
        other, _ = https_get(port, path, files, ("nobody", PASSWORD))
        good, _ = https_get(port, path, files, (USER, PASSWORD))
        check(none == wrong == other == 401, f"{path}: no credentials {none}, a wrong password "
              f"{wrong}, an unknown user {other}: all must be 401")
        check(good in (200, 404), f"{path} with the right credentials: {good}")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        raise AssertionError("plain HTTP to the TLS port was answered")
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        print(f"plain HTTP to the TLS port: {type(e).__name__}: {e}")


# ---- the dashboard's queries -------------------------------------------------------------

def panels_of(items):
    for p in items:
        yield p
        yield from panels_of(p.get("panels", []))  # collapsed rows hold their panels


def substitute(expr, variables):
    """The expression as Grafana would send it, every $var, ${var}, ${var:fmt} and [[var]]
    replaced; fails on one the dashboard does not define."""
    def value(name):
        check(name in variables, f"undefined variable ${name} in {expr!r}")
        return variables[name]
    out = re.sub(r"\$\{(\w+)(?::[^}]*)?\}", lambda m: value(m.group(1)), expr)
    out = re.sub(r"\[\[(\w+)(?::[^\]]*)?\]\]", lambda m: value(m.group(1)), out)
    out = re.sub(r"\$(\w+)", lambda m: value(m.group(1)), out)
    return out


def dashboard_queries(dashboard):
    """(panel title, refId, expr, instant) of every target with an expression."""
    out = []
    for p in panels_of(dashboard["panels"]):
        for t in p.get("targets", []):
            if t.get("expr") and not t.get("hide"):
                out.append((p["title"], t["refId"], t["expr"], bool(t.get("instant"))))
    return out


def variable_values(dashboard, prom):
    """The dashboard's variables: each query variable's values from label_values(...) must be
    non-empty; "All" (its allValue) is what the panels are queried with."""
    variables = dict(BUILTINS)
    for v in dashboard["templating"]["list"]:
        if v["type"] == "datasource":
            variables[v["name"]] = "prometheus"
            continue
        check(v["type"] == "query", f"variable {v['name']}: type {v['type']}")
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", substitute(query, variables))
        check(m, f"variable {v['name']}: {query!r} is not label_values(...)")
        params = {"match[]": m.group(1)} if m.group(1) else {}
        values = prom.api(f"/api/v1/label/{m.group(2)}/values", **params)
        print(f"  ${v['name']}: {query} -> {values}")
        check(values, f"variable {v['name']}: {query} has no values")
        variables[v["name"]] = v.get("allValue") or ".+"
    return variables


def run_queries(dashboard, prom, variables):
    """Each query's result: [(title, refId, expr, series)]."""
    results = []
    end = time.time()
    for title, ref, expr, instant in dashboard_queries(dashboard):
        q = substitute(expr, variables)
        if instant:
            data = prom.api("/api/v1/query", query=q)
        else:  # as Grafana asks for a time series panel
            data = prom.api("/api/v1/query_range", query=q, start=end - 120, end=end, step=5)
        results.append((title, ref, q, data["result"]))
    return results


def test_dashboard_tls(cleanup):
    require_binary(PROMETHEUS, "prometheus")
    require_binary(PROMTOOL, "prometheus")
    files = start(cleanup, Files)
    r = subprocess.run([PROMTOOL, "check", "web-config", files.web], capture_output=True,
                       text=True)
    print(f"promtool check web-config: {(r.stdout + r.stderr).strip()}")
    check(r.returncode == 0, "promtool rejects the web config")

    fixture = start(cleanup, Fixture, "leak_steady", "65536", "100000", "100")
    tier = start(cleanup, Fixture, "patterns", "leak", "chunk=256KiB", "tick_ms=100", "cap=64MiB")
    config = f"""interval: 1s
leak_detection:
  window: 20s
kernel:
  enabled: true
  tracking: full
  kinds: [page]
watch:
  - name: steady
    tracking: full
    match:
      pid: {fixture.pid}
  - name: tier
    match:
      pid: {tier.pid}
"""
    daemon = tls_daemon(cleanup, config, files)
    check_protected(daemon.port, files)
    prom = start(cleanup, Prometheus, daemon.port, files)
    try:
        prom.wait_ready()

        def scraped():
            t = prom.targets()
            return t if len(t) == 3 and all(x["lastScrape"] != "0001-01-01T00:00:00Z"
                                            for x in t.values()) else None
        wait_until(lambda: scraped() and scraped()["leakwatch"]["health"] == "up", 30,
                   "Prometheus to scrape leakwatchd over TLS with basic auth", step=0.5)
        targets = scraped()
        for job, t in sorted(targets.items()):
            print(f"  {job}: {t['health']} {t['lastError']!r}")
        check(targets["leakwatch_wrongauth"]["health"] == "down" and
              "401" in targets["leakwatch_wrongauth"]["lastError"],
              f"a wrong password: {targets['leakwatch_wrongauth']}")
        check(targets["leakwatch_plain"]["health"] == "down",
              f"plain HTTP to the TLS port: {targets['leakwatch_plain']}")

        fixture.go()
        tier.go()
        t_go = time.monotonic()
        wait_until(lambda: prom.api("/api/v1/query", query='leakwatch_leak_suspected{job='
                                    '"leakwatch",scope="stack",site="leak_record_entry"} == 1')
                   ["result"], LEAK_TIMEOUT, "Prometheus to see the leak suspected", step=1)
        print(f"leak suspected {time.monotonic() - t_go:.0f}s after it started")
        time.sleep(5)  # rate() windows of the dashboard's queries hold a few samples

        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        print("variables:")
        variables = variable_values(dashboard, prom)
        results = run_queries(dashboard, prom, variables)
        empty = []
        for title, ref, q, series in results:
            print(f"  {title} [{ref}]: {len(series)} series")
            if not series:
                empty.append(f"{title} [{ref}]: {q}")
        check(len(results) >= 15, f"only {len(results)} queries in the dashboard")
        check(not empty, "queries without data:\n  " + "\n  ".join(empty))
        leaks = [s for title, _, _, series in results if title == "Suspected leaks"
                 for s in series]
        check(any(s["metric"].get("site") == "leak_record_entry" for s in leaks),
              f"the Suspected leaks table names leak_record_entry: {leaks}")
        print(f"{len(results)} queries of {DASHBOARD} returned data")
    except Exception:
        print("---- prometheus log ----\n" + prom.log_text()[-3000:])
        raise


if __name__ == "__main__":
    require_root()
    run({"dashboard_tls": test_dashboard_tls})
