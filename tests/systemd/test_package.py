#!/usr/bin/python3
"""Builds the packages (`cmake --build BUILD --target package`) and checks what they hold:
ctest systemd.package, the setup of systemd.nspawn_service (which installs the .deb).

The .deb (dpkg-deb -c / -I / -f): the files at their places, the unit once, the config as a
conffile, shlibdeps' library dependencies, the maintainer scripts guarded for a system without
systemd. The .rpm (rpm -qlp, --configfiles, --scripts, -R): the same files, the config as
%config(noreplace), the systemd scriptlets, the declared requirements.
Needs dpkg-deb and dpkg-shlibdeps (dpkg-dev), rpmbuild and rpm (Debian's rpm package).
Environment: LEAKWATCH_BUILD_DIR, the build tree.
"""
import glob
import os
import subprocess
import sys

FILES = [
    "/usr/sbin/leakwatchd",
    "/usr/bin/leakwatch",
    "/usr/lib/leakwatch/libssl.so",
    "/usr/lib/leakwatch/libcrypto.so",
    "/usr/share/man/man1/leakwatch.1.gz",
    "/usr/share/man/man5/leakwatch.yaml.5.gz",
    "/usr/share/man/man8/leakwatchd.8.gz",
    "/usr/share/leakwatch/grafana/leakwatch.json",
    "/usr/share/leakwatch/kubernetes/leakwatch.yaml",
    "/usr/lib/systemd/system/leakwatch.service",
    "/etc/leakwatch/leakwatch.yaml",
    "/usr/share/leakwatch/leakwatch-alerts.yml",
    "/usr/share/doc/leakwatch/README.md",
    "/usr/share/doc/leakwatch/operations.md",
]
CONFIG = "/etc/leakwatch/leakwatch.yaml"
DEB_DEPENDS = ["libbpf1", "libyaml-cpp0.7", "libdw1", "libelf1", "libcapstone4", "libcivetweb1",
               "libsystemd0", "libcap-ng0", "procps", "libssl3", "libcurl4", "libprotobuf-lite32",
               "libcrypt1"]
RPM_REQUIRES = ["libbpf", "yaml-cpp", "elfutils-libelf", "systemd", "libcap-ng",
                "libbpf.so.1()(64bit)", "openssl-libs", "libcurl", "protobuf-lite",
                "libssl.so.3()(64bit)"]

failures = []


def check(cond, message):
    print(("ok   " if cond else "FAIL ") + message)
    if not cond:
        failures.append(message)


def run(*argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL: {' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        print("0 passed, 1 failed")
        sys.exit(1)
    return r.stdout


def newest(pattern):
    found = glob.glob(pattern)
    return max(found, key=os.path.getmtime) if found else None


def main():
    build = os.environ["LEAKWATCH_BUILD_DIR"]
    out = run("cmake", "--build", build, "--target", "package")
    print(out[-1500:])
    deb = newest(os.path.join(build, "leakwatch_*.deb"))
    rpm = newest(os.path.join(build, "leakwatch-*.rpm"))
    check(deb is not None, f"a .deb in {build}")
    check(rpm is not None, f"an .rpm in {build}")
    if failures:
        return

    print(f"---- {os.path.basename(deb)}")
    listing = run("dpkg-deb", "-c", deb)
    paths = [line.split()[-1].lstrip(".") for line in listing.splitlines()]
    for f in FILES:
        check(f in paths, f"deb holds {f}")
    check(sum(p.endswith("/leakwatch.service") for p in paths) == 1, "deb: the unit only once")
    man = [p for p in paths if p.startswith("/usr/share/man/") and p.endswith(".gz")]
    check(len(man) == 3, f"deb: three man pages: {man}")
    check(run("dpkg-deb", "-I", deb, "conffiles").split() == [CONFIG], f"deb conffiles: {CONFIG}")
    depends = run("dpkg-deb", "-f", deb, "Depends")
    print(f"Depends: {depends.strip()}")
    names = {dep.split("|")[0].split()[0] for dep in depends.split(",") if dep.strip()}
    for d in DEB_DEPENDS:
        check(d in names, f"deb depends on {d}")
    for script in ("postinst", "prerm", "postrm"):
        text = run("dpkg-deb", "-I", deb, script)
        check("/run/systemd/system" in text, f"deb {script} calls systemctl only under systemd")
    check("deb-systemd-helper" in run("dpkg-deb", "-I", deb, "postinst"),
          "deb postinst enables with deb-systemd-helper")

    print(f"---- {os.path.basename(rpm)}")
    rpm_files = run("rpm", "-qlp", rpm).split()
    for f in FILES:
        check(f in rpm_files, f"rpm holds {f}")
    for d in ("/etc", "/usr/sbin", "/usr/bin", "/usr/lib/systemd/system", "/usr/share/doc",
              "/usr/share/man", "/usr/share/man/man1", "/usr/share/man/man5",
              "/usr/share/man/man8"):
        check(d not in rpm_files, f"rpm does not own {d}")
    check(run("rpm", "-qp", "--configfiles", rpm).split() == [CONFIG], f"rpm config: {CONFIG}")
    check(_noreplace(rpm), "rpm config is %config(noreplace)")
    scripts = run("rpm", "-qp", "--scripts", rpm)
    for kind in ("postinstall", "preuninstall", "postuninstall"):
        check(f"{kind} scriptlet" in scripts, f"rpm has a {kind} scriptlet")
    check("systemctl --no-reload preset leakwatch.service" in scripts, "rpm post applies the preset")
    requires = run("rpm", "-qpR", rpm).split("\n")
    print("Requires: " + ", ".join(r.strip() for r in requires if r.strip()))
    for r in RPM_REQUIRES:
        check(any(line.strip().startswith(r) for line in requires), f"rpm requires {r}")


def _noreplace(rpm):
    # %{FILEFLAGS}: RPMFILE_CONFIG is 1, RPMFILE_NOREPLACE 16.
    out = run("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS}\n]", rpm)
    for line in out.splitlines():
        name, flags = line.rsplit(" ", 1)
        if name == CONFIG:
            return int(flags) & 16 != 0
    return False


if __name__ == "__main__":
    main()
    n = 1 if failures else 0
    print(f"{1 - n} passed, {n} failed")
    sys.exit(1 if failures else 0)
