#!/usr/bin/python3
"""The fleet path, checked without a cluster:

`manifests`: packaging/kubernetes/leakwatch.yaml, parsed (Debian's python3-yaml) and checked
field by field: the DaemonSet runs in the host's pid namespace with the systemd unit's
capabilities (and no more), mounts /sys/fs/bpf and /sys/kernel/btf from the host and the
ConfigMap's leakwatch.yaml where --config points; that config is valid (`leakwatch
check-config`) and listens on the port the container declares and the Service scrapes; the
selectors match.

`configs`: the configurations docs/operations.md gives for a fleet, checked offline where a tool
exists: each ```yaml block that starts with "# prometheus.yml" goes through `promtool check
config` (Debian's prometheus package), with the files it names (CA, passwords) made in a
temporary directory; the Parca block is parsed and must scrape /debug/pprof/heap as its memory
profile; the Alloy block must name the same path. Parca and Alloy are not Debian packages:
their blocks are not run through them.

Environment: LEAKWATCH (the client, for check-config), PROMTOOL.
Usage: test_fleet.py SOURCE_DIR manifests|configs
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


def unit_capabilities(src):
    """The capabilities systemd/leakwatch.service grants (AmbientCapabilities=), without CAP_."""
    with open(os.path.join(src, "systemd", "leakwatch.service")) as f:
        m = re.search(r"^AmbientCapabilities=(.*)$", f.read(), re.M)
    return {c.removeprefix("CAP_") for c in m.group(1).split()}


def manifests(src):
    path = os.path.join(src, "packaging", "kubernetes", "leakwatch.yaml")
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for kind in ("Namespace", "ConfigMap", "DaemonSet", "Service"):
        check(len(by_kind.get(kind, [])) == 1, f"one {kind}")
    if failures:
        return
    ns = by_kind["Namespace"][0]["metadata"]["name"]
    for d in docs:
        if d["kind"] != "Namespace":
            check(d["metadata"].get("namespace") == ns, f"{d['kind']} in namespace {ns}")

    ds = by_kind["DaemonSet"][0]
    check(ds["apiVersion"] == "apps/v1", "DaemonSet apps/v1")
    pod = ds["spec"]["template"]["spec"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    check(ds["spec"]["selector"]["matchLabels"].items() <= labels.items(),
          "the DaemonSet's selector matches its pods")
    check(pod.get("hostPID") is True, "hostPID: true (the node's processes)")
    check({"operator": "Exists"} in pod.get("tolerations", []), "tolerates every taint")
    containers = pod["containers"]
    check(len(containers) == 1, "one container")
    c = containers[0]
    sc = c.get("securityContext", {})
    check(sc.get("privileged") is False, "not privileged")
    check(sc.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    caps = sc.get("capabilities", {})
    check(caps.get("drop") == ["ALL"], "drops every capability first")
    want = unit_capabilities(src)
    check(set(caps.get("add", [])) == want,
          f"adds the unit's capabilities, no more: {sorted(caps.get('add', []))} vs {sorted(want)}")
    check({"BPF", "PERFMON"} <= set(caps.get("add", [])), "CAP_BPF and CAP_PERFMON")

    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for target, read_only in (("/sys/fs/bpf", False), ("/sys/kernel/btf", True)):
        m = mounts.get(target)
        if check(m is not None, f"{target} is mounted"):
            v = volumes.get(m["name"], {})
            check(v.get("hostPath", {}).get("path") == target, f"{target} from the host's {target}")
            check(bool(m.get("readOnly")) == read_only,
                  f"{target} {'read-only' if read_only else 'writable (pins)'}")

    args = c.get("args", [])
    config_arg = [a for a in args if a.startswith("--config=")]
    check(len(config_arg) == 1, "--config=FILE given")
    config_path = config_arg[0].split("=", 1)[1] if config_arg else ""
    cm = by_kind["ConfigMap"][0]
    mount = next((m for p, m in mounts.items() if config_path.startswith(p.rstrip("/") + "/")), None)
    config_text = None
    if check(mount is not None, f"{config_path} is on a mounted volume"):
        v = volumes.get(mount["name"], {})
        check(v.get("configMap", {}).get("name") == cm["metadata"]["name"],
              f"{mount['mountPath']} is the ConfigMap {cm['metadata']['name']}")
        key = os.path.relpath(config_path, mount["mountPath"])
        config_text = cm["data"].get(key)
        check(config_text is not None, f"the ConfigMap has the key {key}")

    port = None
    if config_text is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(config_text)
            f.flush()
            r = subprocess.run([os.environ.get("LEAKWATCH", "leakwatch"), "check-config", f.name],
                               capture_output=True, text=True)
        check(r.returncode == 0, f"leakwatch check-config of the ConfigMap's config: "
              f"{(r.stdout + r.stderr).strip()}")
        listen = yaml.safe_load(config_text).get("listen_address", ":10071")
        port = int(listen.rsplit(":", 1)[1])
        for a in args:
            if a.startswith("--web.listen-address="):
                port = int(a.rsplit(":", 1)[1])
    ports = {p["name"]: p for p in c.get("ports", [])}
    check("metrics" in ports and ports["metrics"]["containerPort"] == port,
          f"the container declares the port leakwatchd listens on ({port}) as 'metrics'")
    for probe in ("readinessProbe", "livenessProbe"):
        check(c.get(probe, {}).get("tcpSocket", {}).get("port") in ("metrics", port),
              f"{probe} checks the metrics port")

    svc = by_kind["Service"][0]
    check(svc["spec"]["selector"].items() <= labels.items(), "the Service selects the pods")
    sp = {p["name"]: p for p in svc["spec"]["ports"]}
    check("metrics" in sp and sp["metrics"].get("targetPort") in ("metrics", port) and
          sp["metrics"]["port"] == port, f"the Service's port metrics leads to {port}")
    check(svc["spec"].get("clusterIP") == "None", "headless: one endpoint per node")



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


def configs(src):
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
    {"manifests": manifests, "configs": configs}[sys.argv[2]](sys.argv[1])
    n = 1 if failures else 0
    print(f"{1 - n} passed, {n} failed")
    sys.exit(n)
