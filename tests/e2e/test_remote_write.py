"""The fleet's long-term storage, run: the remote_write configuration of docs/operations.md.

One run, as root. The Prometheus configuration docs/operations.md gives for a fleet (the
```yaml block that starts with "# prometheus.yml" and holds `remote_write:`) is read from the
doc and run by the real Debian `prometheus`, with only what cannot be the same here replaced
(see runnable_config): the node list (DNS of a Kubernetes Service) by leakwatchd's
127.0.0.1:PORT, the /etc/... files by ones this test makes, the store's URL by the receiver's,
and the 15 s scrape interval by 1 s. Everything else, the TLS and basic auth on both sides,
`server_name`, `queue_config` and `write_relabel_configs`, runs as written.

The long-term store is a second real Prometheus started with --web.enable-remote-write-receiver
over TLS with basic auth (its own --web.config.file): it takes the same remote-write protocol
as Thanos Receive, Mimir and VictoriaMetrics, none of which is a Debian package.

leakwatchd (TLS, basic auth, a certificate for leakwatch.leakwatch.svc, the name the doc's
`server_name` asks for) watches leak_steady by pid with every allocation recorded: 64 KiB every
100 ms for 600 ticks in leak_record_entry (the truth, 39,321,600 bytes, printed by the fixture
when done), with leak_detection.window 20s. Passes when the receiver holds:
  - the leak's stack series with site="leak_record_entry", its last value the truth exactly,
    and the process's outstanding bytes within 1 MiB above it (churn in flight, libc's own);
  - the LeakwatchLeakSuspected expression of packaging/prometheus/leakwatch-alerts.yml,
    evaluated on the receiver, naming that pid and site while it grew;
  - the same samples as the scraping Prometheus (the leak's series, point by point);
  - `up` and leakwatch_* series but not the ones write_relabel_configs drops
    (scrape_duration_seconds).
"""
import copy
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from lwtest import Fixture, check, require_root, run, wait_until  # noqa: E402
from test_alerting import BinaryServer, require_binary, start  # noqa: E402
from test_dashboard import Files, bcrypt, https_get, tls_daemon  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OPERATIONS = os.path.join(REPO, "docs", "operations.md")
RULES = os.path.join(REPO, "packaging", "prometheus", "leakwatch-alerts.yml")
PROMETHEUS = os.environ.get("PROMETHEUS") or "/usr/bin/prometheus"

LEAK, TICKS, TICK_MS = 65536, 600, 100
SITE = "leak_record_entry"
STORE_USER, STORE_PASSWORD = "tenant-1", "long-term-store-secret"
SUSPECT_TIMEOUT = 120  # s for the receiver to hold the alert expression's series
TRUTH_TIMEOUT = 90  # s after the fixture is done for the receiver to hold its final figure


def doc_config():
    """The fleet's Prometheus configuration in docs/operations.md, parsed."""
    with open(OPERATIONS) as f:
        found = re.findall(r"^```yaml\n(# prometheus\.yml.*?)^```", f.read(), re.M | re.S)
    fleet = [b for b in found if "remote_write:" in b]
    check(len(fleet) == 1, f"one Prometheus configuration with remote_write in {OPERATIONS}: "
          f"{len(fleet)}")
    return yaml.safe_load(fleet[0])


def runnable_config(doc, files, leakwatch_port, store_port):
    """The doc's configuration with what cannot be the same here replaced; fails if its shape
    changed (then this function must follow the doc, so they cannot drift apart)."""
    config = copy.deepcopy(doc)
    check(list(config) == ["global", "scrape_configs", "remote_write"],
          f"the doc's configuration has the sections {list(config)}")
    check(config["global"] == {"scrape_interval": "15s"}, f"global: {config['global']}")
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s"}

    check(len(config["scrape_configs"]) == 1, "one scrape job")
    job = config["scrape_configs"][0]
    sd = job.pop("dns_sd_configs")
    check(len(sd) == 1 and sd[0]["type"] == "A", f"dns_sd_configs: {sd}")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{leakwatch_port}"]}]

    check(len(config["remote_write"]) == 1, "one remote_write")
    config["remote_write"][0]["url"] = f"https://127.0.0.1:{store_port}/api/v1/write"

    # Every /etc/... file the doc names: CAs are the test's CA, passwords the users'.
    known = {"/etc/prometheus/leakwatch-ca.crt": files.ca,
             "/etc/prometheus/store-ca.crt": files.ca,
             "/etc/prometheus/leakwatch-password": files.password,
             "/etc/prometheus/remote-write-password": files.store_password}
    text = yaml.safe_dump(config, sort_keys=False)
    named = set(re.findall(r"/etc/\S+", text))
    check(named == set(known), f"the files the doc names: {sorted(named)}")
    for path, local in known.items():
        text = text.replace(path, local)
    return text


class StoreFiles(Files):
    """Files, with leakwatchd's certificate also for leakwatch.leakwatch.svc (the doc's
    server_name), and the receiver's web config and the remote-write password."""

    san = "IP:127.0.0.1,DNS:localhost,DNS:leakwatch.leakwatch.svc"

    def __init__(self):
        super().__init__()
        self.store_web = self.write(
            "store-web.yml", "tls_server_config:\n  cert_file: server.crt\n"
            f"  key_file: server.key\nbasic_auth_users:\n  {STORE_USER}: "
            f"'{bcrypt(STORE_PASSWORD)}'\n")
        self.store_password = self.write("store-password", STORE_PASSWORD + "\n")


class Prometheus(BinaryServer):
    """The scraping Prometheus, running the doc's configuration."""

    name = "prometheus"

    def __init__(self, config, extra=()):
        super().__init__(lambda d, port: [
            PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
            f"--web.listen-address=127.0.0.1:{port}", *extra], {"prometheus.yml": config})

    def api(self, path, **params):
        r = json.loads(self.get(path + "?" + urllib.parse.urlencode(params, doseq=True)))
        check(r["status"] == "success", f"{path} {params}: {r}")
        return r["data"]


class Receiver(Prometheus):
    """The long-term store: a Prometheus taking remote writes, over TLS with basic auth."""

    name = "receiver"

    def __init__(self, files):
        self.files = files
        super().__init__("scrape_configs: []\n", (
            "--web.enable-remote-write-receiver", f"--web.config.file={files.store_web}"))

    def get(self, path):
        status, body = https_get(self.port, path, self.files, (STORE_USER, STORE_PASSWORD))
        if status != 200:
            raise urllib.error.URLError(f"{path}: HTTP {status}: {body[:200]!r}")
        return body.decode()


def leak_alert_expr():
    with open(RULES) as f:
        rules = yaml.safe_load(f)
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]
             if r.get("alert") == "LeakwatchLeakSuspected"]
    check(len(exprs) == 1, f"LeakwatchLeakSuspected in {RULES}")
    return exprs[0]


def last(series):
    return float(series["values"][-1][1]) if "values" in series else float(series["value"][1])


def test_remote_write(cleanup):
    require_binary(PROMETHEUS, "prometheus")
    files = start(cleanup, StoreFiles)
    r = subprocess.run(["openssl", "x509", "-in", files.path("server.crt"), "-noout", "-ext",
                        "subjectAltName"], capture_output=True, text=True)
    check("leakwatch.leakwatch.svc" in r.stdout, f"the certificate's names: {r.stdout}")

    fixture = start(cleanup, Fixture, "leak_steady", str(LEAK), str(TICKS), str(TICK_MS))
    config = f"""interval: 1s
leak_detection:
  window: 20s
watch:
  - name: steady
    tracking: full
    match:
      pid: {fixture.pid}
"""
    daemon = tls_daemon(cleanup, config, files)

    receiver = start(cleanup, Receiver, files)
    receiver.wait_ready()
    prom_config = runnable_config(doc_config(), files, daemon.port, receiver.port)
    print("---- the doc's configuration, as run ----\n" + prom_config)
    prom = start(cleanup, Prometheus, prom_config)
    try:
        prom.wait_ready()
        wait_until(lambda: any(s["value"][1] == "1" for s in
                               receiver.api("/api/v1/query", query='up{job="leakwatch"}')
                               ["result"]),
                   60, "the receiver to hold up == 1 of the doc's job (scraped over TLS with "
                   "basic auth, written over TLS with basic auth)", step=1)

        fixture.go()
        t_go = time.time()
        stack_q = f'sum by (pid, site) (leakwatch_stack_outstanding_bytes{{pid="{fixture.pid}",site="{SITE}"}})'
        alert = leak_alert_expr()

        def suspected():
            return [s for s in receiver.api("/api/v1/query", query=alert)["result"]
                    if s["metric"].get("pid") == str(fixture.pid) and
                    s["metric"].get("site") == SITE]
        wait_until(suspected, SUSPECT_TIMEOUT, "the receiver to hold the LeakwatchLeakSuspected "
                   "expression's series for the leak", step=1)
        alert_series = suspected()
        print(f"LeakwatchLeakSuspected's expression on the receiver "
              f"{time.time() - t_go:.0f}s after the leak started: "
              f"{[(s['metric'], s['value'][1]) for s in alert_series]}")
        rate = float(alert_series[0]["value"][1])
        expected_rate = LEAK * 1000 / TICK_MS
        check(0.5 * expected_rate <= rate <= 1.5 * expected_rate,
              f"the growth rate on the receiver, {rate:.0f} B/s, is the leak's "
              f"{expected_rate:.0f} B/s within 50%")

        truth = int(fixture.expect("leaked", timeout=TICKS * TICK_MS / 1000 + 60))
        check(truth == LEAK * TICKS, f"the fixture leaked {truth}")

        def final():
            res = receiver.api("/api/v1/query", query=stack_q)["result"]
            return res if res and last(res[0]) == truth else None
        wait_until(final, TRUTH_TIMEOUT, f"the receiver's {SITE} series to reach {truth}",
                   step=1)
        print(f"receiver: {stack_q} = {last(final()[0]):.0f} (truth {truth})")

        proc_q = f'leakwatch_outstanding_bytes{{pid="{fixture.pid}"}}'
        proc = receiver.api("/api/v1/query", query=proc_q)["result"]
        check(len(proc) == 1, f"one process series on the receiver: {proc}")
        held = last(proc[0])
        print(f"receiver: {proc_q} = {held:.0f}")
        check(truth <= held <= truth + (1 << 20),
              f"the process's outstanding bytes {held:.0f} are the leak's {truth} + at most 1 MiB")

        # The receiver holds what the scraper scraped, sample for sample.
        end = time.time() - 15  # what the scraper has surely sent (batches within 5 s)
        rng = dict(query=stack_q, start=t_go, end=end, step=1)
        mine = receiver.api("/api/v1/query_range", **rng)["result"]
        theirs = prom.api("/api/v1/query_range", **rng)["result"]
        check(len(mine) == len(theirs) == 1, f"one series each: {len(mine)}, {len(theirs)}")
        check(mine[0]["values"] == theirs[0]["values"],
              f"the receiver's samples are the scraper's: {len(mine[0]['values'])} against "
              f"{len(theirs[0]['values'])}")
        print(f"{len(mine[0]['values'])} points of the leak's series, the same on both")

        kept = receiver.api("/api/v1/query", query='count({__name__=~"leakwatch_.+"})')["result"]
        check(kept and float(kept[0]["value"][1]) > 0, "leakwatch_* series on the receiver")
        for dropped in ("scrape_duration_seconds", "scrape_samples_scraped"):
            check(prom.api("/api/v1/query", query=dropped)["result"],
                  f"the scraper has {dropped}")
            check(not receiver.api("/api/v1/query", query=dropped)["result"],
                  f"{dropped} is dropped by write_relabel_configs before the store")
    except Exception:
        print("---- prometheus log ----\n" + prom.log_text()[-3000:])
        print("---- receiver log ----\n" + receiver.log_text()[-3000:])
        raise


if __name__ == "__main__":
    require_root()
    run({"remote_write": test_remote_write})
