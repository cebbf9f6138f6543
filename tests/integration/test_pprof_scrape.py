"""Root tests: the pprof endpoint fetched over HTTP as a profiling server's scraper fetches it,
and the watch tier's growth profile.

Parca and Pyroscope (with Grafana Alloy) are not Debian packages and npm has neither, so they
cannot run here. What they do to leakwatchd can: a plain HTTP GET of /debug/pprof/heap (no
`seconds` parameter: a heap profile is a snapshot), a gzipped profile.proto back, over TLS
with basic auth when the web config asks for it. Debian's `go tool pprof` (golang-go) fetching
from the live daemon's URL is that kind of client:

  pprof_scrape      plain HTTP: GET /debug/pprof/heap (and ?pid=, ?watch=, /debug/pprof/allocs)
                    is 200, application/octet-stream, gzip; `go tool pprof -top URL` lists
                    leak_steady's leak_record_entry first with the leak's bytes exactly
  pprof_scrape_tls  the same over TLS with basic auth (`-tls_ca`, user and password in the
                    URL); a wrong password is refused with 401
  pprof_watch_tier  a process in the watch tier (tracking: escalate, not escalated): its
                    profile holds its first-touch growth stacks as growth_space/growth_pages
                    samples (default growth_space, inuse_* zero), and `go tool pprof -top`
                    lists its growth site, leak_steady_growth, first, with the API's figure

Environment: LEAKWATCHD, FIXTURES_BIN, GO (default /usr/bin/go).
"""
import gzip
import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request

from lwtest import Daemon, Fixture, check, require_root, run, start, wait_until
from test_client import (LEAK, TICKS, TempDir, go_pprof, leaked_fixture, make_tls,
                         site_total, top_rows, web_config)

GO = os.environ.get("GO", "/usr/bin/go")


def scrape(url, headers=None, context=None):
    """(status, content type, body) of a plain GET, as a scraper sends it."""
    req = urllib.request.Request(url, headers={"User-Agent": "leakwatch-test-scraper",
                                               **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def check_profile_body(status, ctype, body, what):
    check(status == 200, f"{what}: HTTP {status}")
    check(ctype == "application/octet-stream", f"{what}: Content-Type {ctype}")
    check(body[:2] == b"\x1f\x8b", f"{what}: gzip magic")
    raw = gzip.decompress(body)
    check(len(raw) > 0, f"{what}: {len(raw)} bytes of profile.proto")


def first_row(out, truth, fn):
    rows = top_rows(out)
    check(rows and rows[0] == (truth, fn), f"first by inuse_space: {fn} with {truth} B; rows "
          f"{rows[:3]}\n{out}")


def test_pprof_scrape(cleanup):
    f, d = leaked_fixture(cleanup)
    home = start(cleanup, TempDir("leakwatch-pprof-scrape-")).path
    f.go()
    truth = int(f.expect("leaked"))
    check(truth == LEAK * TICKS, f"the fixture leaked {truth}")
    wait_until(lambda: site_total(d, f.pid, "leak_record_entry") == truth, 10,
               f"the API to show all {truth} bytes")
    base = f"http://127.0.0.1:{d.port}"
    for path in ("/debug/pprof/heap", f"/debug/pprof/heap?pid={f.pid}",
                 "/debug/pprof/heap?watch=steady", "/debug/pprof/allocs",
                 "/debug/pprof/heap?gc=1"):
        check_profile_body(*scrape(base + path), path)
    status, _, body = scrape(base + "/debug/pprof/heap?pid=1")
    check(status == 404 and b"not watched" in body, f"an unwatched pid: {status} {body!r}")

    # go tool pprof fetching from the live daemon (it keeps a copy under $HOME/pprof/).
    out = go_pprof("-top", "-unit=B", base + "/debug/pprof/heap", home=home)
    print(out)
    first_row(out, truth, "leak_record_entry")
    first_row(go_pprof("-top", "-unit=B", f"{base}/debug/pprof/heap?pid={f.pid}", home=home),
              truth, "leak_record_entry")
    allocs = top_rows(go_pprof("-top", "-unit=B", "-sample_index=alloc_space",
                               base + "/debug/pprof/allocs", home=home))
    check(dict((fn, b) for b, fn in allocs).get("leak_record_entry") == truth,
          f"alloc_space of leak_record_entry over HTTP: {allocs[:3]}")
    saved = [n for n in os.listdir(home) if n.startswith("pprof.") and n.endswith(".pb.gz")]
    check(len(saved) == 3, f"go tool pprof saved the 3 profiles it fetched: {saved}")


def test_pprof_scrape_tls(cleanup):
    tls = start(cleanup, TempDir("leakwatch-pprof-tls-")).path
    home = start(cleanup, TempDir("leakwatch-pprof-scrape-")).path
    make_tls(tls)
    web = web_config(tls, "parca", "scrape-secret")
    ca = os.path.join(tls, "ca.crt")
    f = start(cleanup, Fixture("leak_steady", str(LEAK), str(TICKS), "20"))
    d = start(cleanup, Daemon(f"interval: 500ms\nwatch:\n  - name: steady\n    tracking: full\n"
                              f"    match:\n      pid: {f.pid}\n",
                              extra_args=("--web.config.file", web), wait=False))
    ctx = ssl.create_default_context(cafile=ca)
    auth = {"Authorization": "Basic cGFyY2E6c2NyYXBlLXNlY3JldA=="}  # parca:scrape-secret

    def up():
        check(d.proc.poll() is None, "leakwatchd exited:\n" + d.log_text())
        try:
            return scrape(f"https://127.0.0.1:{d.port}/api/v1/processes", auth, ctx)[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False
    wait_until(up, 20, "leakwatchd over TLS")
    f.go()
    truth = int(f.expect("leaked"))
    url = f"https://127.0.0.1:{d.port}/debug/pprof/heap"

    def held():
        s, _, body = scrape(f"https://127.0.0.1:{d.port}/api/v1/stacks?pid={f.pid}&top=100",
                            auth, ctx)
        return s == 200 and sum(x["outstanding_bytes"] for x in json.loads(body)["stacks"]
                                if x["site"] == "leak_record_entry") == truth
    wait_until(held, 10, f"the API to show all {truth} bytes")
    check_profile_body(*scrape(url, auth, ctx), "over TLS with basic auth")
    status, _, _ = scrape(url, None, ctx)
    check(status == 401, f"no credentials: HTTP {status}")

    # go tool pprof's own fetcher ignores -tls_ca (that flag is for the pprof library's): it
    # trusts the system's roots, which SSL_CERT_FILE replaces for Go programs; the user and
    # password in the URL become basic auth.
    def pprof(user_password):
        env = dict(os.environ, HOME=home, PPROF_TMPDIR=home,
                   GOCACHE=os.path.join(home, "gocache"), SSL_CERT_FILE=ca)
        return subprocess.run(
            [GO, "tool", "pprof", "-top", "-unit=B",
             f"https://{user_password}@127.0.0.1:{d.port}/debug/pprof/heap"],
            capture_output=True, text=True, timeout=120, env=env)
    r = pprof("parca:scrape-secret")
    print(r.stdout + r.stderr)
    check(r.returncode == 0, f"go tool pprof over TLS with basic auth: exit {r.returncode}")
    first_row(r.stdout, truth, "leak_record_entry")
    r = pprof("parca:wrong")
    print(f"a wrong password: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    check(r.returncode != 0 and "401" in r.stderr, "go tool pprof with a wrong password fails "
          "with 401")


CHUNK, CAP = 1 << 20, 48 << 20
WATCH_SAMPLE = 64 << 10


def test_pprof_watch_tier(cleanup):
    f = start(cleanup, Fixture("patterns", "leak", "chunk=1MiB", "tick_ms=100", "cap=48MiB"))
    # The default tracking (escalate) with the default 10-minute window: nothing is suspected,
    # so nothing is escalated, during this test.
    d = start(cleanup, Daemon(f"interval: 500ms\nescalation:\n  watch_sample_bytes: 64KiB\n"
                              f"watch:\n  - name: tier\n    match:\n      pid: {f.pid}\n"))
    home = start(cleanup, TempDir("leakwatch-pprof-tier-")).path
    wait_until(lambda: d.process(f.pid), 20, "the fixture watched")
    check(d.process(f.pid)["tracking"] == "watch", "in the watch tier")
    f.go()
    capped = int(f.expect("capped", timeout=60))
    print(f"the fixture leaked {capped} bytes and stopped")

    def settled():
        """(resident bytes, sampled pages) of the growth stacks whose site is the leak's, when
        it is the first one."""
        g = d.json(f"/api/v1/stacks?pid={f.pid}&top=100")
        if g["tracking"] != "watch" or not g["growth_stacks"] or \
                g["growth_stacks"][0]["site"] != "leak_steady_growth":
            return None
        mine = [s for s in g["growth_stacks"] if s["site"] == "leak_steady_growth"]
        return (sum(s["resident_bytes"] for s in mine), sum(s["sampled_pages"] for s in mine))
    # The profile and the API are built from the same snapshot only if no sample comes
    # between the two requests; the leak has stopped, so the figure holds still.
    previous = None
    deadline = time.monotonic() + 20
    while True:
        seen = settled()
        if seen and seen == previous and seen[0] >= capped // 2:
            break
        check(time.monotonic() < deadline, f"the leak's growth stacks to hold still: {seen}")
        previous = seen
        time.sleep(1)
    resident, pages_sampled = seen
    print(f"API: growth stacks of leak_steady_growth {resident} bytes, {pages_sampled} pages")
    # Sampled every 64 KiB on average: about 768 samples for 48 MiB, a standard deviation of
    # 3.6%; 20% is over five of them.
    check(abs(resident - capped) <= 0.2 * capped,
          f"the estimate {resident} is the leak's {capped} within 20%")

    path = os.path.join(home, "tier.pb.gz")
    status, _, body = scrape(f"http://127.0.0.1:{d.port}/api/v1/pprof?pid={f.pid}")
    check(status == 200, f"/api/v1/pprof: HTTP {status}")
    with open(path, "wb") as fh:
        fh.write(body)
    check(d.process(f.pid)["tracking"] == "watch", "still in the watch tier")

    out = go_pprof("-top", "-unit=B", path, home=home)
    print(out)
    check("Type: growth_space" in out, "the default sample type of a watch-tier profile is "
          "growth_space")
    rows = top_rows(out)
    check(rows and rows[0] == (resident, "leak_steady_growth"),
          f"first: leak_steady_growth with the API's {resident} B; rows {rows[:3]}")
    explicit = top_rows(go_pprof("-top", "-unit=B", "-sample_index=growth_space", path,
                                 home=home))
    check(explicit and explicit[0] == rows[0], f"-sample_index=growth_space: {explicit[:3]}")
    pages = go_pprof("-top", "-sample_index=growth_pages", path, home=home)
    check(re.search(rf"^\s*{pages_sampled}\s+\S+%.*leak_steady_growth$", pages, re.M),
          f"growth_pages of leak_steady_growth: {pages_sampled}\n{pages}")
    inuse = go_pprof("-top", "-unit=B", "-sample_index=inuse_space", path, home=home)
    check("Type: inuse_space" in inuse and "accounting for 0, 0% of 0 total" in inuse,
          f"inuse_space holds nothing: no allocator probe in the watch tier\n{inuse}")
    raw = go_pprof("-raw", path, home=home)
    check("growth_pages/count growth_space/bytes[dflt]" in raw,
          f"sample types with growth_space the default:\n{raw[:600]}")


if __name__ == "__main__":
    require_root()
    run({"pprof_scrape": test_pprof_scrape, "pprof_scrape_tls": test_pprof_scrape_tls,
         "pprof_watch_tier": test_pprof_watch_tier})
