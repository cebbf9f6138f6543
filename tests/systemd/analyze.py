#!/usr/bin/python3
"""Static checks of systemd/leakwatch.service with systemd-analyze (no root, no systemd as
PID 1 needed: the `systemd` package's systemd-analyze works offline).

  analyze.py verify UNIT LEAKWATCHD
      `systemd-analyze verify` on a copy of UNIT whose ExecStart= names the built LEAKWATCHD
      instead of /usr/sbin/leakwatchd: verify checks that the executables exist, and the build
      tree has no /usr/sbin/leakwatchd (a --root tree would need /bin/kill and the rest of the
      system in it too). Every other line is the shipped one. Fails on a non-zero exit status
      and on any line it prints: unknown keys, bad values and missing files are only warnings
      to systemd-analyze, and a warning here is a mistake in the unit.
  analyze.py security UNIT MAX
      `systemd-analyze security --offline=yes UNIT`: prints the table and the overall exposure,
      fails when the exposure is above MAX (e.g. 3.0).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile


def fail(message):
    print(f"FAIL: {message}")
    print("0 passed, 1 failed")
    sys.exit(1)


def systemd_analyze():
    path = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not os.access(path, os.X_OK):
        fail("systemd-analyze not found: install the systemd package (scripts/deps.sh)")
    return path


def verify(unit, leakwatchd):
    text = open(unit).read()
    exec_start = re.compile(r"^ExecStart=/usr/sbin/leakwatchd(?=\s|$)", re.M)
    if len(exec_start.findall(text)) != 1:
        fail(f"{unit} should have exactly one ExecStart=/usr/sbin/leakwatchd line")
    if not os.access(leakwatchd, os.X_OK):
        fail(f"{leakwatchd} is not built")
    with tempfile.TemporaryDirectory(prefix="leakwatch-verify-") as d:
        copy = os.path.join(d, os.path.basename(unit))  # same name: leakwatch.service
        with open(copy, "w") as f:
            f.write(exec_start.sub(lambda m: "ExecStart=" + leakwatchd, text))
        r = subprocess.run([systemd_analyze(), "verify", copy], capture_output=True, text=True,
                           env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER=""))
    out = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    for line in out:
        print(line)
    if r.returncode != 0 or out:
        fail(f"systemd-analyze verify: exit status {r.returncode}, {len(out)} lines of output")
    print("PASS verify: systemd-analyze verify printed nothing")
    print("1 passed, 0 failed")


def security(unit, maximum):
    r = subprocess.run([systemd_analyze(), "security", "--offline=yes", "--no-pager", unit],
                       capture_output=True, text=True,
                       env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_COLORS="0"))
    print(r.stdout + r.stderr)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    if not m:
        fail(f"no overall exposure in the output (exit status {r.returncode})")
    exposure = float(m.group(1))
    print(f"overall exposure: {exposure} (at most {maximum})")
    if exposure > maximum:
        fail(f"exposure {exposure} is above {maximum}")
    print(f"PASS security: exposure {exposure}")
    print("1 passed, 0 failed")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "verify":
        verify(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "security":
        security(sys.argv[2], float(sys.argv[3]))
    else:
        print(__doc__)
        sys.exit(2)
