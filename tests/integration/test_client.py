"""Root tests of the leakwatch client (build/bin/leakwatch) against a real leakwatchd, and of
the pprof profile it fetches, read by Debian's go tool pprof (golang-go).

The fixture is leak_steady: leak_record_entry() leaks LEAK bytes per tick for TICKS ticks
(the truth is LEAK * TICKS, printed as "leaked N"), then it only churns (churn_buffers()
allocates and frees). Figures are compared exactly: with `sample_bytes` unset every allocation
is recorded.

Environment: LEAKWATCHD, LEAKWATCH (the client), FIXTURES_BIN, GO (default /usr/bin/go).
"""
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings

from lwtest import (Daemon, Fixture, check, free_port, require_root, run, start, wait_until)

LEAKWATCH = os.environ.get("LEAKWATCH", "build/bin/leakwatch")
GO = os.environ.get("GO", "/usr/bin/go")
LEAK, TICKS = 65536, 40


def client(*args, env=None, timeout=60):
    r = subprocess.run([LEAKWATCH, *args], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    return r


def ok(r, what):
    check(r.returncode == 0, f"{what}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r.stdout


class TempDir:
    """A temporary directory, removed at cleanup."""

    def __init__(self, prefix):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def stop(self):
        shutil.rmtree(self.path, ignore_errors=True)


def leaked_fixture(cleanup, ticks=TICKS, tick_ms=20):
    """leak_steady watched by pid, run to the end of its leak."""
    f = start(cleanup, Fixture("leak_steady", str(LEAK), str(ticks), str(tick_ms)))
    d = start(cleanup, Daemon(f"interval: 500ms\nwatch:\n  - name: steady\n    tracking: full\n    match:\n"
                              f"      pid: {f.pid}\n"))
    wait_until(lambda: d.process(f.pid), 20, "the fixture attached")
    return f, d


def site_total(d, pid, site):
    return sum(s["outstanding_bytes"] for s in d.stacks(pid, 100) if s["site"] == site)


def test_client_figures(cleanup):
    f, d = leaked_fixture(cleanup)
    f.go()
    truth = int(f.expect("leaked"))
    check(truth == LEAK * TICKS, f"fixture leaked {truth}")
    wait_until(lambda: site_total(d, f.pid, "leak_record_entry") == truth, 10,
               f"the API to show {truth} bytes at leak_record_entry")
    url = f"http://127.0.0.1:{d.port}"

    out = ok(client("--url", url, "stacks", str(f.pid), "-k", "5"), "leakwatch stacks")
    print(out)
    check(re.search(rf"^leak_steady \(pid {f.pid}, watch steady\): \d+ bytes outstanding", out,
                    re.M), f"stacks: the process line:\n{out}")
    m = re.search(r"^(\d+) bytes in (\d+) allocations from stack [0-9a-f]{16} "
                  r"\(site leak_record_entry\)", out, re.M)
    check(m and int(m.group(1)) == truth and int(m.group(2)) == TICKS,
          f"stacks: {truth} bytes in {TICKS} allocations at leak_record_entry:\n{out}")
    frames = out[m.end():].split("\n")[1:4]
    check(re.search(r"malloc\+0x0 \[libc\.so\.6\]", frames[0]) and
          re.search(r"leak_record_entry\+0x[0-9a-f]+ \[leak_steady\] .*leak_steady\.c:\d+",
                    frames[1]) and "main+" in frames[2],
          f"stacks: malloc, leak_record_entry (with its source line), main:\n{frames}")

    out = ok(client("--url", url, "top", "-n", "2", "-i", "0.5", "-k", "1"), "leakwatch top")
    reports = out.count("Top 1 stacks with outstanding allocations, 1 processes watched:")
    check(reports == 2, f"top -n 2: {reports} reports:\n{out}")
    check(out.count(f"\t{truth} bytes in {TICKS} allocations from stack") == 2,
          f"top: the leak's {truth} bytes in each report:\n{out}")
    check("churn_buffers" not in out, "top -k 1 shows only the largest stack")

    out = ok(client("--url", url, "leaks"), "leakwatch leaks")
    check(out.startswith("no leak suspected") or out.startswith("SCOPE"), f"leaks:\n{out}")

    r = client("--url", url, "stacks", "1")
    check(r.returncode == 1 and "pid 1 is not watched" in r.stderr,
          f"stacks of a pid not watched: exit {r.returncode}, {r.stderr}")


def test_client_unreachable(cleanup):
    port = free_port()  # nothing listens there
    for args in (["top", "-n", "1"], ["stacks", "1"], ["leaks"], ["pprof", "1", "-o", "/dev/null"]):
        t0 = time.monotonic()
        r = client("--url", f"http://127.0.0.1:{port}", *args)
        check(r.returncode == 1, f"{args}: exit {r.returncode}")
        check(f"cannot reach the daemon at http://127.0.0.1:{port}" in r.stderr and
              ("Connection refused" in r.stderr or "Couldn't connect" in r.stderr),
              f"{args}: the message says where and why: {r.stderr!r}")
        check(time.monotonic() - t0 < 10, f"{args}: took {time.monotonic() - t0:.1f}s")
    r = client("--url", f"http://127.0.0.1:{port}", "bogus")
    check(r.returncode != 0, "an unknown command fails")


def test_client_check_config(cleanup):
    d = start(cleanup, TempDir("leakwatch-client-")).path
    good, bad = os.path.join(d, "good.yaml"), os.path.join(d, "bad.yaml")
    with open(good, "w") as f:
        f.write("interval: 2s\nwatch:\n  - name: app\n    match:\n      comm: app\n")
    with open(bad, "w") as f:
        f.write("interval: 2s\nwatch:\n  - name: app\n    match:\n      comm: app\n"
                "    min_sise: 1KiB\n")
    out = ok(client("check-config", good), "check-config of a good file")
    check("is valid: 1 watch rules, interval 2000 ms" in out, out)
    r = client("check-config", bad)
    check(r.returncode == 1 and ":6:" in r.stdout and "min_sise" in r.stdout,
          f"check-config of a bad file: exit {r.returncode}: {r.stdout}{r.stderr}")


def go_pprof(*args, home):
    check(os.access(GO, os.X_OK), f"{GO} is missing: install the Debian package golang-go "
          "(scripts/deps.sh)")
    env = dict(os.environ, HOME=home, PPROF_TMPDIR=home, GOCACHE=os.path.join(home, "gocache"))
    r = subprocess.run([GO, "tool", "pprof", *args], capture_output=True, text=True,
                       timeout=120, env=env)
    check(r.returncode == 0, f"go tool pprof {' '.join(args)}: exit {r.returncode}\n"
          f"{r.stdout}{r.stderr}")
    return r.stdout


def top_rows(text):
    """(flat bytes, function) of each row of `go tool pprof -top -unit=B`, in order."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"^\s*(-?\d+)B\s+\S+%\s+\S+%\s+-?\d+B\s+\S+%\s+(.+)$", line)
        if m:
            rows.append((int(m.group(1)), m.group(2).strip()))
    return rows


def test_client_pprof(cleanup):
    # A slower leak, so that a profile can be taken halfway through it.
    f, d = leaked_fixture(cleanup, ticks=60, tick_ms=100)
    home = start(cleanup, TempDir("leakwatch-pprof-")).path
    url = f"http://127.0.0.1:{d.port}"
    first, second = os.path.join(home, "heap1.pb.gz"), os.path.join(home, "heap2.pb.gz")
    f.go()
    wait_until(lambda: site_total(d, f.pid, "leak_record_entry") >= 10 * LEAK, 20,
               "a few ticks of the leak")
    out = ok(client("--url", url, "pprof", str(f.pid), "-o", first), "leakwatch pprof")
    check(f"wrote {first}" in out, out)
    truth = int(f.expect("leaked"))
    wait_until(lambda: site_total(d, f.pid, "leak_record_entry") == truth, 10,
               f"the API to show all {truth} bytes")
    ok(client("--url", url, "pprof", str(f.pid), "-o", second), "leakwatch pprof")
    with open(second, "rb") as fh:
        check(fh.read(2) == b"\x1f\x8b", "the profile is gzipped")

    top = go_pprof("-top", "-unit=B", second, home=home)
    print(top)
    check("Type: inuse_space" in top, "the default sample type is inuse_space")
    rows = top_rows(top)
    check(rows and rows[0] == (truth, "leak_record_entry"),
          f"first by inuse_space: leak_record_entry with {truth} B; rows {rows[:3]}")
    before = top_rows(go_pprof("-top", "-unit=B", first, home=home))
    held_before = dict((fn, b) for b, fn in before).get("leak_record_entry", 0)
    check(0 < held_before < truth, f"halfway: {held_before} B of {truth}")

    alloc = top_rows(go_pprof("-top", "-unit=B", "-sample_index=alloc_space", second, home=home))
    alloc_by_fn = dict((fn, b) for b, fn in alloc)
    check(alloc_by_fn.get("leak_record_entry") == truth,
          f"alloc_space of leak_record_entry is what it allocated: {alloc_by_fn}")
    check(alloc_by_fn.get("churn_buffers", 0) > 0, "alloc_space has the churn too (all freed)")
    check(dict((fn, b) for b, fn in rows).get("churn_buffers", 0) < 64 * 8192,
          "inuse_space of churn_buffers: at most one tick's worth is live")

    diff = go_pprof("-top", "-unit=B", f"-diff_base={first}", second, home=home)
    print(diff)
    drows = top_rows(diff)
    check(drows and drows[0] == (truth - held_before, "leak_record_entry"),
          f"-diff_base: leak_record_entry grew by {truth - held_before} B; rows {drows[:3]}")

    raw = go_pprof("-raw", second, home=home)
    check("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes[dflt]"
          in raw, "sample types in their fixed order, inuse_space the default")
    check(re.search(rf"pid:\[{f.pid}\]", raw) and "watch:[steady]" in raw, "labels pid, watch")
    m = re.search(r"^\s*\d+: 0x[0-9a-f]+/0x[0-9a-f]+/0x[0-9a-f]+ \S*leak_steady ([0-9a-f]{40}) ",
                  raw, re.M)
    check(m, f"a mapping of leak_steady with its build-id:\n{raw}")
    # The folded form of the same stacks.
    folded = d.get(f"/api/v1/folded?pid={f.pid}")
    check(re.search(rf"^_start;.*;main;leak_record_entry;malloc {truth}$", folded, re.M),
          f"folded stacks:\n{folded}")


def bcrypt(password):
    """A bcrypt hash from libcrypt (Python's crypt module), cost 10."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024))


def make_tls(d):
    """A CA and a certificate for 127.0.0.1 signed by it (openssl), in directory d."""
    def openssl(*args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=d)
        check(r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=leakwatch test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")


def web_config(d, user, password):
    """web.yml in d (made by make_tls): TLS with its certificate, one basic-auth user."""
    web = os.path.join(d, "web.yml")
    with open(web, "w") as f:
        f.write("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                f"basic_auth_users:\n  {user}: '{bcrypt(password)}'\n")
    return web


def test_client_tls_auth(cleanup):
    d = start(cleanup, TempDir("leakwatch-tls-")).path
    make_tls(d)
    web = web_config(d, "ops", "s3cret")
    pw = os.path.join(d, "pw")
    with open(pw, "w") as f:
        f.write("s3cret\n")
    fixture = start(cleanup, Fixture("leak_steady", str(LEAK), "10", "10"))
    daemon = Daemon(f"watch:\n  - name: steady\n    tracking: full\n    match:\n"
                    f"      pid: {fixture.pid}\n",
                    extra_args=("--web.config.file", web), wait=False)
    cleanup.append(daemon)
    ca = os.path.join(d, "ca.crt")
    url = f"https://127.0.0.1:{daemon.port}"
    good = ["--url", url, "--ca-file", ca, "--user", "ops", "--password-file", pw]
    wait_until(lambda: client(*good, "leaks").returncode == 0, 20, "leakwatchd over TLS")
    fixture.go()
    truth = int(fixture.expect("leaked"))
    wait_until(lambda: f"{truth} bytes in 10 allocations" in client(*good, "stacks",
                                                                      str(fixture.pid)).stdout,
               10, f"leakwatch stacks over TLS to show {truth} bytes")
    ok(client(*good, "pprof", str(fixture.pid), "-o", os.path.join(d, "heap.pb.gz")),
       "pprof over TLS")

    r = client("--url", url, "--ca-file", ca, "--user", "ops", "leaks",
               env={"LEAKWATCH_PASSWORD": "wrong"})
    check(r.returncode == 1 and "HTTP 401" in r.stderr, f"a wrong password: {r.stderr}")
    r = client("--url", url, "--ca-file", ca, "leaks")
    check(r.returncode == 1 and "HTTP 401" in r.stderr, f"no credentials: {r.stderr}")
    r = client("--url", url, "--user", "ops", "--password-file", pw, "leaks")
    check(r.returncode == 1 and "certificate" in r.stderr,
          f"a daemon whose CA is not given is not trusted: {r.stderr}")
    r = client("--url", f"http://127.0.0.1:{daemon.port}", *good[2:], "leaks")
    check(r.returncode == 1 and "cannot reach the daemon" in r.stderr,
          f"plain HTTP to the TLS port: {r.stderr}")
    ok(client("--url", url, "--insecure", "--user", "ops", "--password-file", pw, "leaks"),
       "--insecure skips the certificate check")
    print(f"TLS and basic auth: {truth} bytes over https; 401 for a wrong or missing password; "
          "an unknown CA and plain HTTP refused")


def test_client_cert(cleanup):
    """client_auth_type RequireAndVerifyClientCert with client_ca_file, and min_version TLS13,
    over real handshakes: the client's certificate signed by the CA gets in, none is refused,
    and TLS 1.2 is refused while TLS 1.3 is accepted (openssl s_client)."""
    d = start(cleanup, TempDir("leakwatch-mtls-")).path
    make_tls(d)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key",
                    "-out", "client.csr", "-subj", "/CN=leakwatch test client"],
                   cwd=d, check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey",
                    "ca.key", "-CAcreateserial", "-out", "client.crt", "-days", "2"],
                   cwd=d, check=True, capture_output=True)
    web = os.path.join(d, "web.yml")
    with open(web, "w") as f:
        f.write("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
                "  min_version: TLS13\n")
    daemon = Daemon("watch: []\n", extra_args=("--web.config.file", web), wait=False)
    cleanup.append(daemon)
    url = f"https://127.0.0.1:{daemon.port}"
    ca, crt, key = (os.path.join(d, n) for n in ("ca.crt", "client.crt", "client.key"))
    with_cert = ["--url", url, "--ca-file", ca, "--cert-file", crt, "--key-file", key]
    wait_until(lambda: client(*with_cert, "leaks").returncode == 0, 20,
               "leakwatchd over TLS with a client certificate")
    r = client("--url", url, "--ca-file", ca, "leaks")
    check(r.returncode == 1 and "cannot reach the daemon" in r.stderr,
          f"no client certificate: exit {r.returncode}: {r.stderr}")

    def s_client(version, *cert):
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{daemon.port}",
                               version, "-CAfile", ca, *cert], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)
    old = s_client("-tls1_2", "-cert", crt, "-key", key)
    check(old.returncode != 0, f"TLS 1.2 to a TLS13 minimum was accepted:\n{old.stdout}")
    new = s_client("-tls1_3", "-cert", crt, "-key", key)
    check(new.returncode == 0 and "TLSv1.3" in new.stdout,
          f"TLS 1.3: exit {new.returncode}\n{new.stdout}{new.stderr}")
    print(f"client certificate: accepted with one signed by client_ca_file, refused without "
          f"({r.stderr.strip()}); TLS 1.2 refused, TLS 1.3 accepted")


if __name__ == "__main__":
    require_root()
    run({"client_figures": test_client_figures, "client_unreachable": test_client_unreachable,
         "client_check_config": test_client_check_config, "client_pprof": test_client_pprof,
         "client_tls_auth": test_client_tls_auth, "client_cert": test_client_cert})
