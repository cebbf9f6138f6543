#!/usr/bin/python3
"""The configurations docs/operations.md gives for a fleet, checked offline where a tool
exists: each ```yaml block that starts with "# prometheus.yml" goes through `promtool check
config` (Debian's prometheus package), with the files it names (CA, passwords) made in a
temporary directory; the Parca block is parsed (python3-yaml) and must scrape
/debug/pprof/heap as its memory profile; the Alloy block must name the same path. Parca and
Alloy themselves are not Debian packages: their blocks are not run through them.

Environment: PROMTOOL. Usage: test_fleet_configs.py SOURCE_DIR
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

failures = []


def check(cond, message):
    print(("ok   " if cond else "FAIL ") + message)
    if not cond:
        failures.append(message)
    return cond


def blocks(text):
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)


def promtool_check(body, promtool, tmp):
    """promtool check config of the block, its /etc/... files made under tmp."""
    for path in set(re.findall(r"(/etc/\S+?)(?=[\s,}]|$)", body)):
        local = os.path.join(tmp, path.lstrip("/"))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        if path.endswith(".crt"):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", local + ".key", "-out", local, "-days", "1", "-subj",
                            "/CN=test"], capture_output=True, check=True)
        else:
            with open(local, "w") as f:
                f.write("secret\n")
        body = body.replace(path, local)
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(body)
    r = subprocess.run([promtool, "check", "config", config], capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def main():
    src = sys.argv[1]
    promtool = os.environ.get("PROMTOOL") or "/usr/bin/promtool"
    with open(os.path.join(src, "docs", "operations.md")) as f:
        found = blocks(f.read())
    prometheus = [b for lang, b in found if lang == "yaml" and b.startswith("# prometheus.yml")]
    check(len(prometheus) >= 2, f"{len(prometheus)} Prometheus configurations in operations.md")
    if not check(os.access(promtool, os.X_OK),
                 f"{promtool}: install the Debian package prometheus (scripts/deps.sh)"):
        return
    for i, body in enumerate(prometheus):
        tmp = tempfile.mkdtemp(prefix="leakwatch-promtool-")
        try:
            rc, out = promtool_check(body, promtool, tmp)
        finally:
            shutil.rmtree(tmp)
        check(rc == 0, f"Prometheus configuration {i + 1}: promtool check config: {out}")
    has_remote_write = any("remote_write:" in b for b in prometheus)
    check(has_remote_write, "a remote_write configuration among them")
    check(any("leakwatch.leakwatch.svc.cluster.local" in b for b in prometheus),
          "a scrape of every node through the headless Service among them")

    parca = [b for lang, b in found if lang == "yaml" and b.startswith("# parca.yaml")]
    if check(len(parca) == 1, "a Parca configuration"):
        job = yaml.safe_load(parca[0])["scrape_configs"][0]
        pprof = job["profiling_config"]["pprof_config"]
        check(pprof["memory"] == {"enabled": True, "path": "/debug/pprof/heap"},
              "Parca scrapes /debug/pprof/heap as its memory profile")
        check(all(not v["enabled"] for k, v in pprof.items() if k != "memory"),
              "Parca's other default profile types are off")
    alloy = [b for lang, b in found if lang == "alloy"]
    if check(len(alloy) == 1, "an Alloy (Pyroscope) configuration"):
        check(re.search(r'profile\.memory\s*\{\s*enabled\s*=\s*true\s*path\s*=\s*"/debug/pprof/heap"',
                        alloy[0]) is not None, "Alloy scrapes /debug/pprof/heap as memory")


if __name__ == "__main__":
    main()
    n = 1 if failures else 0
    print(f"{1 - n} passed, {n} failed")
    sys.exit(n)
