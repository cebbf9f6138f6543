"""The landing page in a real browser: Debian's headless Chromium, driven by chromedriver over
the WebDriver protocol (plain HTTP and JSON, so no client library).

leakwatchd watches two fixtures by pid: leak_steady, whose leak_record_entry() leaks 64 KiB
every 100 ms (a growing line, a flagged leak), and leak_all, which leaks from one function per
allocator entry point (a wide flame graph). The page, drawn by its own script from the API,
must show for each process its outstanding bytes over time and a flame graph whose frames name
the leaking functions, and list leak_record_entry among the suspected leaks. A third fixture,
patterns' leak_steady_growth() (256 KiB every 100 ms), is watched in the default tracking, the
watch tier (no allocator probe): its chart follows its memory as the kernel counts it, and its
flame graph is drawn from the stacks that first touched that memory (sampled page faults), so
leak_steady_growth must appear in it too. The test writes a
screenshot into the build tree and prints its path.

Environment: LEAKWATCHD, FIXTURES_BIN, LEAKWATCH_SCREENSHOT (the PNG to write), CHROMIUM and
CHROMEDRIVER (default /usr/bin/chromium, /usr/bin/chromedriver: Debian's chromium and
chromium-driver).
"""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from lwtest import Daemon, Fixture, check, free_port, require_root, run, start, wait_until

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT = os.environ.get("LEAKWATCH_SCREENSHOT",
                            os.path.join(tempfile.gettempdir(), "leakwatch-landing-page.png"))
# The flags that let Chromium run here as root without a display, a sandbox or network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1900"]
# leak_all's leaking functions, one per allocator entry point (tests/progs/leak_all.c).
LEAK_ALL_FUNCTIONS = {"leak_malloc", "leak_calloc", "leak_realloc"}


class WebDriver:
    """chromedriver on a free port of 127.0.0.1, and one browser session."""

    def __init__(self):
        for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
            check(os.access(path, os.X_OK),
                  f"{path} is missing: install the Debian package {package} (scripts/deps.sh)")
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="leakwatch-chromium-")
        self.proc = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.session = None
        wait_until(self._up, 20, "chromedriver to answer", step=0.1)
        caps = {"browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM,
                                       "args": CHROMIUM_ARGS + [f"--user-data-dir={self.profile}"]}}
        self.session = self.call("POST", "/session",
                                 {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _up(self):
        try:
            return self.call("GET", "/status")["ready"]
        except (urllib.error.URLError, ConnectionError):
            return False

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def open(self, url):
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, source):
        return self.call("POST", f"/session/{self.session}/execute/sync",
                         {"script": source, "args": []})

    def screenshot(self, path):
        png = base64.b64decode(self.call("GET", f"/session/{self.session}/screenshot"))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)
        return len(png)

    def stop(self):
        try:
            if self.session:
                self.call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


# What the page shows of one process, read from its DOM: the flame graph's frame names (each
# <title> is "name\nbytes (percent)"), the chart's points and the heading.
PAGE_STATE = """
if (document.body.dataset.loaded !== '1') return null;
const out = {processes: {}, leaks: []};
for (const box of document.querySelectorAll('.process')) {
  const line = box.querySelector('svg.chart polyline');
  out.processes[box.dataset.pid] = {
    heading: box.querySelector('h3').textContent,
    figures: box.querySelector('.figures').textContent,
    chart_caption: box.querySelector('.chart-caption').textContent,
    flame_caption: box.querySelector('.flame-caption').textContent,
    frames: [...box.querySelectorAll('svg.flame title')].map(t => t.textContent.split('\\n')[0]),
    points: line ? line.getAttribute('points').trim().split(/\\s+/).length : 0,
  };
}
for (const tr of document.querySelectorAll('#leak-table tbody tr'))
  out.leaks.push([...tr.children].map(td => td.textContent));
return out;
"""


def test_landing_page(cleanup):
    steady = start(cleanup, Fixture("leak_steady", "65536", "100000", "100"))
    every = start(cleanup, Fixture("leak_all"))
    tier = start(cleanup, Fixture("patterns", "leak", "chunk=256KiB", "tick_ms=100", "cap=64MiB"))
    config = f"""interval: 1s
leak_detection:
  window: 20s
watch:
  - name: steady
    tracking: full
    match:
      pid: {steady.pid}
  - name: every
    tracking: full
    match:
      pid: {every.pid}
  - name: tier
    match:
      pid: {tier.pid}
"""
    daemon = start(cleanup, Daemon(config))
    for f in (steady, every, tier):
        wait_until(lambda f=f: daemon.process(f.pid), 20, f"pid {f.pid} attached")
    steady.go()
    every.go()
    tier.go()
    every.expect("done")
    browser = start(cleanup, WebDriver())
    browser.open(f"http://127.0.0.1:{daemon.port}/")

    def shown():
        state = browser.script(PAGE_STATE)
        if not state:
            return None
        s, e = state["processes"].get(str(steady.pid)), state["processes"].get(str(every.pid))
        t = state["processes"].get(str(tier.pid))
        leak_listed = any("leak_record_entry" in row for row in state["leaks"])
        if s and e and t and "leak_record_entry" in s["frames"] and s["points"] >= 5 and \
                LEAK_ALL_FUNCTIONS <= set(e["frames"]) and leak_listed and \
                "leak_steady_growth" in t["frames"] and t["points"] >= 5:
            return state
        return None

    # The leak is flagged after one detection window (20 s) of growth; the page redraws every
    # 5 s.
    try:
        state = wait_until(shown, 90, "the page to show both processes, their flame graphs "
                           "and the suspected leak", step=1)
    finally:
        size = browser.screenshot(SCREENSHOT)
        print(f"screenshot: {SCREENSHOT} ({size} bytes)")
    s, e = state["processes"][str(steady.pid)], state["processes"][str(every.pid)]
    print(f"steady: {s['heading']}: {s['points']} points over time; flame graph frames "
          f"{sorted(set(s['frames']))}")
    print(f"every: {e['heading']}: flame graph frames {sorted(set(e['frames']))}")
    t = state["processes"][str(tier.pid)]
    print(f"tier: {t['heading']}: {t['figures']!r}; {t['chart_caption']!r}: {t['points']} "
          f"points; {t['flame_caption']!r}: frames {sorted(set(t['frames']))}")
    print("suspected leaks listed: " + "; ".join(" | ".join(r) for r in state["leaks"]))
    check(f"pid {steady.pid}" in s["heading"] and "steady" in s["heading"],
          f"heading {s['heading']!r}")
    # The flame graph holds the whole stack: the leaking function between main and malloc.
    check({"main", "leak_record_entry", "malloc"} <= set(s["frames"]),
          f"leak_steady's flame graph: {s['frames']}")
    # The watch tier (or escalated from it: the detector may have suspected the leak by now):
    # the chart is the process's memory, and its figure the kernel's count.
    tp = daemon.process(tier.pid)
    check(tp["tracking"] in ("watch", "escalated"), f"the tier fixture is tracked {tp['tracking']}")
    check(t["chart_caption"] == "Anonymous memory and swap over time",
          f"the tier fixture's chart caption {t['chart_caption']!r}")
    check("(tracking: watch)" in t["figures"] or "(tracking: escalated)" in t["figures"],
          f"the tier fixture's figures {t['figures']!r}")
    # The page's figures are the API's.
    api = {st["site"] for st in daemon.stacks(every.pid, 100)}
    check(LEAK_ALL_FUNCTIONS <= api, f"the API's sites for leak_all: {api}")


if __name__ == "__main__":
    require_root()
    run({"landing_page": test_landing_page})
