#!/usr/bin/python3
"""The man pages (docs/man/*.scd) against the programs and the config schema:

- leakwatchd(8) names every flag `leakwatchd --help` lists;
- leakwatch(1) names every command and flag of `leakwatch --help` and of each command's help;
- leakwatch.yaml(5) names every key of the table that decides what a reload changes
  (daemon/config/reload.cpp), by its dotted path.

Usage: check_man_pages.py SOURCE_DIR LEAKWATCHD LEAKWATCH. Exits 1 naming what is missing.
"""
import re
import subprocess
import sys

failures = []


def check(cond, message):
    if not cond:
        print("FAIL " + message)
        failures.append(message)


def page(src, name):
    with open(f"{src}/docs/man/{name}.scd") as f:
        return f.read().replace("\\_", "_")


def flags(binary, *args):
    """The long flags and the subcommands a CLI11 --help lists."""
    out = subprocess.run([binary, *args, "--help"], capture_output=True, text=True).stdout
    found = set(re.findall(r"^\s+(?:-\w,)?(--[\w.-]+)", out, re.M)) - {"--help"}
    commands = set()
    if "Subcommands:" in out:
        commands = set(re.findall(r"^  (\S+)\s", out.split("Subcommands:", 1)[1], re.M))
    return found, commands


def main():
    src, leakwatchd, leakwatch = sys.argv[1:4]
    daemon_page = page(src, "leakwatchd.8")
    found, _ = flags(leakwatchd)
    check(len(found) >= 6, f"leakwatchd --help lists {found}")
    for f in sorted(found):
        check(f"*{f}*" in daemon_page, f"leakwatchd.8.scd does not name {f}")

    client_page = page(src, "leakwatch.1")
    found, commands = flags(leakwatch)
    check(commands >= {"top", "stacks", "leaks", "pprof", "check-config"},
          f"leakwatch's commands: {commands}")
    for f in sorted(found):
        check(f"*{f}*" in client_page, f"leakwatch.1.scd does not name {f}")
    for c in sorted(commands):
        check(f"*{c}*" in client_page, f"leakwatch.1.scd does not name the command {c}")
        sub, _ = flags(leakwatch, c)
        for f in sorted(sub):
            check(f"*{f}*" in client_page, f"leakwatch.1.scd does not name {c} {f}")

    yaml_page = page(src, "leakwatch.yaml.5")
    with open(f"{src}/daemon/config/reload.cpp") as f:
        keys = set(re.findall(r'"([a-z_]+(?:\.[a-z_]+)*)",\s*Takes::k(?!Nothing)', f.read()))
    check(len(keys) >= 30, f"{len(keys)} keys found in reload.cpp")
    for k in sorted(keys):
        check(re.search(rf"\*{re.escape(k)}\*", yaml_page) is not None,
              f"leakwatch.yaml.5.scd does not name {k}")
    if not failures:
        print(f"the man pages name {len(keys)} config keys and every flag and command")


if __name__ == "__main__":
    main()
    n = 1 if failures else 0
    print(f"{1 - n} passed, {n} failed")
    sys.exit(n)
