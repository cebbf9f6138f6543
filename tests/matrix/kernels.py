"""Kernel images (and the guests' busybox) for the kernel/architecture matrix, and the headers
to build a module for each of them.

Packages are found through a private apt configuration: its own sources list, state and
cache directories under the matrix cache, never the machine's /etc/apt sources. A package is
resolved to an exact file and SHA256 from the signed Packages index, downloaded once and kept
under that hash (cache/debs/<sha256>.deb); what the guests need from it (the kernel, a few
modules, the BTF) is extracted once under the same hash. A kernel's headers (its
linux-headers-<release> and the -common part that one includes) and the kbuild tools that go
with them (linux-kbuild-*, of this machine's architecture: they run here) are fetched the same
way and extracted once, into one folder per set of packages. Every failure says which package
of which suite could not be had and why."""
import functools
import gzip
import hashlib
import json
import lzma
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

DEFAULT_CACHE = "/var/cache/leakwatch-matrix"
MIRROR = os.environ.get("LEAKWATCH_MATRIX_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("LEAKWATCH_MATRIX_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DPKG_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# (archive, suite): every suite a kernel of the matrix may come from
SUITES = [
    (MIRROR, "bullseye"), (SECURITY, "bullseye-security"),
    (MIRROR, "bookworm"), (SECURITY, "bookworm-security"),
    (MIRROR, "trixie"), (SECURITY, "trixie-security"),
    (MIRROR, "sid"),
]
# Modules the guest loads (when not built in): virtio PCI and the 9p file system.
GUEST_MODULES = ["virtio_pci", "9pnet_virtio", "9p"]


class FetchError(Exception):
    pass


def log(msg):
    print(f"[kernels] {msg}", file=sys.stderr, flush=True)


def cache_dir():
    d = os.environ.get("LEAKWATCH_MATRIX_CACHE", DEFAULT_CACHE)
    os.makedirs(d, exist_ok=True)
    return d


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PrivateApt:
    """apt-get with its own sources.list and state for one architecture."""

    def __init__(self, arch):
        self.arch = DPKG_ARCH[arch]
        self.parsed = {}
        self.root = os.path.join(cache_dir(), "apt", self.arch)
        for sub in ("etc/sources.list.d", "etc/preferences.d", "state/lists/partial",
                    "cache/archives/partial"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        status = os.path.join(self.root, "state/status")
        if not os.path.exists(status):
            open(status, "w").close()
        with open(os.path.join(self.root, "etc/sources.list"), "w") as f:
            for uri, suite in SUITES:
                f.write(f"deb [arch={self.arch} signed-by={KEYRING}] {uri} {suite} main\n")

    def options(self):
        r = self.root
        return [
            "-o", f"Dir::Etc::SourceList={r}/etc/sources.list",
            "-o", f"Dir::Etc::SourceParts={r}/etc/sources.list.d",
            "-o", f"Dir::Etc::Preferences={r}/etc/preferences",
            "-o", f"Dir::Etc::PreferencesParts={r}/etc/preferences.d",
            "-o", f"Dir::State={r}/state",
            "-o", f"Dir::State::status={r}/state/status",
            "-o", f"Dir::Cache={r}/cache",
            "-o", f"APT::Architecture={self.arch}",
            "-o", f"APT::Architectures={self.arch}",
            "-o", "Acquire::Languages=none",
            "-o", "Acquire::GzipIndexes=false",
            "-o", "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false",
            "-o", "Acquire::Retries=3",
            "-o", "APT::Sandbox::User=root",
        ]

    def update(self, max_age):
        """Refreshes the indices when older than max_age seconds. Returns a note for the log."""
        stamp = os.path.join(self.root, "state/updated")
        if os.path.exists(stamp) and time.time() - os.path.getmtime(stamp) < max_age:
            return f"{self.arch} indices from {time.ctime(os.path.getmtime(stamp))} (fresh enough)"
        start = time.monotonic()
        r = subprocess.run(["apt-get", "-q", *self.options(), "update"], capture_output=True,
                           text=True)
        problems = [l for l in (r.stdout + r.stderr).splitlines()
                    if l.startswith(("E:", "W:", "Err:"))]
        if r.returncode != 0 or any(l.startswith(("E:", "Err:")) for l in problems):
            raise FetchError(
                f"apt-get update of the private {self.arch} sources failed (exit "
                f"{r.returncode}); the archive may have moved or be unreachable "
                f"(LEAKWATCH_MATRIX_MIRROR={MIRROR}):\n  " + "\n  ".join(problems[-8:]))
        open(stamp, "w").close()
        return f"{self.arch} indices updated in {time.monotonic() - start:.0f}s"

    def packages(self, uri, suite):
        """Stanzas of one suite's Packages index: the kernel's packages, its headers and kbuild
        tools, busybox-static and libc6. Read once per run."""
        if (uri, suite) not in self.parsed:
            self.parsed[(uri, suite)] = self._read_packages(uri, suite)
        return self.parsed[(uri, suite)]

    def _read_packages(self, uri, suite):
        lists = os.path.join(self.root, "state/lists")
        host_path = re.sub(r"^https?://", "", uri).rstrip("/").replace("/", "_")
        name = f"{host_path}_dists_{suite}_main_binary-{self.arch}_Packages"
        path = os.path.join(lists, name)
        if not os.path.exists(path):
            raise FetchError(f"no Packages index for {suite}/main/{self.arch} in {lists}: the "
                             f"suite is not (or no longer) in {uri}")
        out = {}
        stanza = []
        wanted = False
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line == "\n":
                    if wanted:
                        self._add(out, stanza)
                    stanza, wanted = [], False
                    continue
                if line.startswith("Package: "):
                    p = line[9:].strip()
                    wanted = p.startswith(("linux-image-", "linux-binary-", "linux-modules-",
                                           "linux-headers-", "linux-kbuild-")) \
                        or p in ("busybox-static", "libc6")
                if wanted:
                    stanza.append(line)
        if wanted:
            self._add(out, stanza)
        return out

    @staticmethod
    def _add(out, lines):
        fields = {}
        key = None
        for line in lines:
            if line[0] in " \t" and key:
                fields[key] += line
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        out.setdefault(fields["Package"], []).append(fields)

    def download(self, package, version, sha256, dest):
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            r = subprocess.run(["apt-get", "-q", *self.options(), "download",
                                f"{package}={version}"], cwd=tmp, capture_output=True,
                               text=True)
            debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
            if r.returncode != 0 or len(debs) != 1:
                raise FetchError(f"downloading {package} {version} ({self.arch}) failed: "
                                 f"{(r.stdout + r.stderr).strip()[-600:]}")
            got = sha256_file(os.path.join(tmp, debs[0]))
            if got != sha256:
                raise FetchError(f"{package} {version}: SHA256 {got} differs from the "
                                 f"index's {sha256}")
            os.replace(os.path.join(tmp, debs[0]), dest)


def version_key(a, b):
    """dpkg's ordering: < 0, 0, > 0."""
    if a == b:
        return 0
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
    return -1 if lt else 1


def resolve(apt, suites, meta, skip=()):
    """The newest version of `meta` in the given suites, and the package it depends on when it
    is a meta package (linux-image-amd64 -> linux-image-6.1.0-NN-amd64). A meta package whose
    kernel is missing from the archive (it happens in a security suite) gives way to the next
    newest, with a note."""
    found = []
    for uri, suite in SUITES:
        if suite in suites:
            for s in apt.packages(uri, suite).get(meta, []):
                found.append((s, uri, suite))
    if not found:
        raise FetchError(f"no package {meta} ({apt.arch}) in {', '.join(suites)}: the archive "
                         f"has moved or the suite no longer has it")
    found.sort(key=lambda f: functools.cmp_to_key(version_key)(f[0]["Version"]), reverse=True)
    if not (meta.startswith("linux-image-") and meta.count("-") == 2):
        stanza, uri, suite = found[0]
        pkg = {"package": meta, "version": stanza["Version"], "suite": suite,
               "sha256": stanza["SHA256"], "size": int(stanza["Size"]), "arch": apt.arch,
               "parts": []}
        # Since 7.x, Debian's linux-image-<abi> holds neither the kernel nor its modules:
        # they are in linux-binary-<abi> and linux-modules-<abi>, which it depends on.
        for part in re.findall(r"(?:^|,)\s*(linux-(?:binary|modules)-[^\s,(|]+)",
                               stanza.get("Depends", "")):
            pkg["parts"].append(resolve(apt, [suite] + [s for s in suites if s != suite], part))
        return pkg
    problems = []
    for stanza, uri, suite in found:  # a meta package: follow its dependency
        if (meta, stanza["Version"], suite) in skip:
            continue
        dep = re.search(r"(?:^|,)\s*(linux-image-[^\s,(|]+)", stanza.get("Depends", ""))
        if not dep:
            problems.append(f"{meta} {stanza['Version']} in {suite} names no kernel package")
            continue
        try:
            pkg = resolve(apt, [suite] + [s for s in suites if s != suite], dep.group(1))
        except FetchError as e:
            problems.append(str(e))
            log(f"{meta} {stanza['Version']} ({suite}): {e}; trying an older one")
            continue
        pkg["meta"] = (meta, stanza["Version"], suite)
        return pkg
    raise FetchError("; ".join(problems) or f"no usable {meta} in {', '.join(suites)}")


def exact(apt, suites, name, version):
    """Package `name` at exactly `version`, from the first of `suites` that lists it."""
    for uri, suite in sorted(SUITES, key=lambda us: suites.index(us[1]) if us[1] in suites
                             else len(suites)):
        if suite not in suites:
            continue
        for s in apt.packages(uri, suite).get(name, []):
            if s["Version"] == version:
                return {"package": name, "version": version, "suite": suite,
                        "sha256": s["SHA256"], "size": int(s["Size"]), "arch": apt.arch,
                        "depends": s.get("Depends", "")}
    raise FetchError(f"no {name} {version} ({apt.arch}) in {', '.join(suites)}: the archive "
                     f"has moved or never had it")


def fetch_all(apt, pkg):
    """The .debs of a resolved kernel: its own and those of its parts."""
    return [fetch(apt, pkg)] + [fetch(apt, part) for part in pkg.get("parts", [])]


def fetch(apt, pkg):
    """The .deb of a resolved package in the cache, downloaded when missing; its path."""
    debs = os.path.join(cache_dir(), "debs")
    os.makedirs(debs, exist_ok=True)
    dest = os.path.join(debs, pkg["sha256"] + ".deb")
    if os.path.exists(dest):
        if sha256_file(dest) == pkg["sha256"]:
            pkg["cached"] = True
            return dest
        log(f"{dest}: content does not match its hash, downloading again")
        os.unlink(dest)
    start = time.monotonic()
    apt.download(pkg["package"], pkg["version"], pkg["sha256"], dest)
    pkg["cached"] = False
    log(f"downloaded {pkg['package']} {pkg['version']} ({pkg['size'] >> 20} MiB) in "
        f"{time.monotonic() - start:.0f}s")
    return dest


def deb_extract(deb, dest):
    subprocess.run(["dpkg-deb", "-x", deb, dest], check=True)


def decompress_module(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    return data


def module_closure(moddir, wanted):
    """Modules to load for `wanted`, dependencies first: [(name, path)]. A package ships no
    modules.dep (depmod writes it at install), so dependencies come from each module's
    .modinfo `depends=`; modules built into the kernel are in modules.builtin and omitted."""
    by_name = {}
    for dirpath, _, files in os.walk(moddir):
        for f in files:
            m = re.match(r"(.+)\.ko(\.(xz|gz|zst))?$", f)
            if m:
                by_name[m.group(1).replace("-", "_")] = os.path.join(dirpath, f)
    order = []

    def visit(name, chain):
        if name in order:
            return
        if name not in by_name:
            return  # built in
        data = decompress_module(by_name[name])
        m = re.search(rb"(?:^|\x00)depends=([^\x00]*)", data)
        for dep in (m.group(1).decode().split(",") if m and m.group(1) else []):
            if dep and dep not in chain:
                visit(dep.replace("-", "_"), chain + [name])
        order.append(name)

    for w in wanted:
        visit(w.replace("-", "_"), [])
    return [(n, by_name[n]) for n in order]


def find_btf(image):
    """The raw BTF blob inside an uncompressed kernel image (arm64 Image): the .BTF section's
    header (magic 0xeB9F, version 1, 24-byte header, types then strings) located by scanning."""
    best = None
    for m in re.finditer(rb"\x9f\xeb\x01\x00\x18\x00\x00\x00", image):
        off = m.start()
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", image, off + 8)
        if type_off != 0 or str_off != type_len or type_len < (1 << 20):
            continue
        end = off + 24 + str_off + str_len
        if end > len(image):
            continue
        if best is None or end - off > len(best):
            best = image[off:end]
    return best


def prepare_kernel(debs, sha, arch):
    """Extracts the kernel, the guest's modules and the BTF once per package content."""
    out = os.path.join(cache_dir(), "prepared", sha)
    meta_path = os.path.join(out, "kernel.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            return json.load(f)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        for deb in debs:
            deb_extract(deb, tmp)
        # boot/vmlinuz-<release> until 6.x; usr/lib/modules/<release>/vmlinuz since 7.x
        found = []
        boot = os.path.join(tmp, "boot")
        if os.path.isdir(boot):
            found += [(f[len("vmlinuz-"):], os.path.join(boot, f)) for f in os.listdir(boot)
                      if f.startswith("vmlinuz-")]
        for mods in ("lib/modules", "usr/lib/modules"):
            d = os.path.join(tmp, mods)
            if os.path.isdir(d):
                found += [(r, os.path.join(d, r, "vmlinuz")) for r in os.listdir(d)
                          if os.path.exists(os.path.join(d, r, "vmlinuz"))]
        if len(found) != 1:
            raise FetchError(f"{' '.join(os.path.basename(d) for d in debs)}: expected one "
                             f"kernel image, found {[f for _, f in found]}")
        release, image = found[0]
        staging = out + ".tmp"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(os.path.join(staging, "modules"))
        with open(image, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # arm64: a gzip-compressed Image; QEMU takes it uncompressed
            raw = gzip.decompress(raw)
        elif raw[:2] == b"MZ" and raw[4:8] == b"zimg":  # arm64 EFI zboot
            raise FetchError(f"{release}: EFI zboot image, not supported by the guest loader")
        with open(os.path.join(staging, "vmlinuz"), "wb") as f:
            f.write(raw)
        moddir = os.path.join(tmp, "lib/modules", release)
        if not os.path.isdir(moddir):
            moddir = os.path.join(tmp, "usr/lib/modules", release)
        mods = module_closure(moddir, GUEST_MODULES)
        for name, rel in mods:
            with open(os.path.join(staging, "modules", name + ".ko"), "wb") as f:
                f.write(decompress_module(rel))
        btf = find_btf(raw) if arch == "aarch64" else None
        if btf:
            with open(os.path.join(staging, "vmlinux.btf"), "wb") as f:
                f.write(btf)
        meta = {"release": release, "modules": [n for n, _ in mods], "arch": arch,
                "btf": "vmlinux.btf" if btf else None}
        with open(os.path.join(staging, "kernel.json"), "w") as f:
            json.dump(meta, f)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)
    return meta


def host_glibc():
    """This machine's C library version, e.g. "2.36"."""
    return os.confstr("CS_GNU_LIBC_VERSION").split()[-1]


def is_elf_executable(path):
    if not os.path.isfile(path) or os.path.islink(path) or not os.access(path, os.X_OK):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def prepare_headers(debs, key, release, libc):
    """Extracts a kernel's headers and kbuild tools once per set of packages; returns
    headers.json: {"release", "build" (the folder, relative to the extraction, to run
    make -C in), "cc" (the compiler the kernel was built with), "kbuild", "wrapped"}.

    Debian's headers name their -common part by absolute path (/usr/src/...): that is rewritten
    to the extraction. When the kbuild tools need a newer C library than this machine's (those
    of trixie and later want glibc 2.38), `libc` is extracted beside them and each tool is
    replaced by a script that runs it with that library's dynamic loader."""
    out = os.path.join(cache_dir(), "prepared", key)
    meta_path = os.path.join(out, "headers.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            return json.load(f)
    staging = out + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for deb in debs:
        deb_extract(deb, staging)
    # The packages' documentation, and links that point outside the extraction (/lib/modules/
    # RELEASE/build -> /usr/src/...): nothing here uses them, and a dangling link trips whatever
    # walks the cache.
    shutil.rmtree(os.path.join(staging, "usr/share"), ignore_errors=True)
    for root, dirs, files in os.walk(staging):
        for name in dirs + files:
            path = os.path.join(root, name)
            if os.path.islink(path) and not os.path.exists(path):
                os.unlink(path)
    build = f"usr/src/linux-headers-{release}"
    makefile = os.path.join(staging, build, "Makefile")
    if not os.path.exists(makefile):
        raise FetchError(f"headers of {release}: no {build}/Makefile in "
                         f"{' '.join(os.path.basename(d) for d in debs)}")
    with open(makefile) as f:
        text = f.read()
    with open(makefile, "w") as f:
        f.write(text.replace("/usr/src/", f"{out}/usr/src/"))
    kbuild = [d for d in os.listdir(os.path.join(staging, "usr/lib"))
              if d.startswith("linux-kbuild-")]
    if len(kbuild) != 1:
        raise FetchError(f"headers of {release}: expected one linux-kbuild folder, found {kbuild}")
    wrapped = []
    if libc:
        libdir = next((d for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
                       if os.path.exists(os.path.join(staging, d, "ld-linux-x86-64.so.2"))),
                      None)
        if not libdir:
            raise FetchError(f"{os.path.basename(debs[-1])}: no ld-linux-x86-64.so.2 in it")
        for root, _, files in os.walk(os.path.join(staging, "usr/lib", kbuild[0])):
            for name in files:
                path = os.path.join(root, name)
                if not is_elf_executable(path):
                    continue
                final = os.path.join(out, os.path.relpath(path, staging))
                os.rename(path, path + ".bin")
                with open(path, "w") as f:
                    # --argv0: Debian's objtool and modpost pick the real program by their
                    # own name
                    f.write(f"#!/bin/sh\n# {name} needs the C library of its Debian release\n"
                            f"exec {out}/{libdir}/ld-linux-x86-64.so.2 --library-path "
                            f"{out}/{libdir} --argv0 \"$0\" {final}.bin \"$@\"\n")
                os.chmod(path, 0o755)
                wrapped.append(os.path.relpath(path, staging))
    cc = None
    with open(os.path.join(staging, build, ".config")) as f:
        for line in f:
            if line.startswith("CONFIG_CC_VERSION_TEXT="):
                cc = line.split("=", 1)[1].strip().strip('"')
    meta = {"release": release, "build": build, "cc": cc, "kbuild": kbuild[0],
            "wrapped": sorted(wrapped)}
    with open(os.path.join(staging, "headers.json"), "w") as f:
        json.dump(meta, f)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return meta


def prepare_busybox(deb, sha):
    out = os.path.join(cache_dir(), "prepared", sha)
    path = os.path.join(out, "busybox")
    if not os.path.exists(path):
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            deb_extract(deb, tmp)
            os.makedirs(out, exist_ok=True)
            shutil.copy(os.path.join(tmp, "bin/busybox"), path + ".tmp")
            os.replace(path + ".tmp", path)
    return path


class Fetcher:
    """Resolves and fetches what the matrix needs; one PrivateApt per architecture."""

    def __init__(self, max_age=6 * 3600):
        self.max_age = max_age
        self.apts = {}
        self.notes = []
        self.used = set()  # hashes of the .debs and prepared folders this run uses

    def apt(self, arch):
        if arch not in self.apts:
            a = PrivateApt(arch)
            self.notes.append(a.update(self.max_age))
            self.apts[arch] = a
        return self.apts[arch]

    def kernel(self, arch, series, suites):
        """(package info, prepared kernel dir, kernel.json) for a matrix entry: the kernel
        the suites' linux-image-<arch> meta package names, which must be of `series` (e.g.
        "5.10"; None: any, the suite's newest)."""
        apt = self.apt(arch)
        meta = f"linux-image-{DPKG_ARCH[arch]}"
        skip = set()
        failures = []
        while True:
            try:
                pkg = resolve(apt, suites, meta, skip)
            except FetchError as e:
                raise FetchError("; ".join(failures + [str(e)]))
            upstream = re.match(r"(\d+\.\d+)", pkg["version"]).group(1)
            if series and upstream != series:
                raise FetchError(f"{meta} in {'/'.join(suites)} is now {pkg['version']}, not a "
                                 f"{series} kernel: the archive has moved on; update the matrix")
            try:
                debs = fetch_all(apt, pkg)
                break
            except FetchError as e:  # listed in the index, missing from the pool
                failures.append(str(e).splitlines()[0])
                log(f"{e}\n  -> trying the next newest {meta}")
                skip.add(pkg["meta"])
        key = pkg["sha256"]
        if pkg.get("parts"):
            key = hashlib.sha256(" ".join([key] + [p["sha256"] for p in pkg["parts"]])
                                 .encode()).hexdigest()
        pkg["key"] = key
        pkg["cached"] = all(p.get("cached") for p in [pkg] + pkg.get("parts", []))
        self.used |= {key} | {p["sha256"] for p in [pkg] + pkg.get("parts", [])}
        meta_json = prepare_kernel(debs, key, arch)
        return pkg, os.path.join(cache_dir(), "prepared", key), meta_json

    def headers(self, arch, pkg, kmeta, suites):
        """(the folder to build modules in, as `make -C FOLDER M=...`, and its headers.json) for
        a kernel kernel() returned: linux-headers-<release> of the kernel's exact version, the
        -common package it depends on, and the linux-kbuild-* package it depends on, of this
        machine's architecture and the same version (its tools run here, also when the modules
        are cross-built for another architecture)."""
        apt = self.apt(arch)
        host = self.apt(platform.machine())
        release, version = kmeta["release"], pkg["version"]
        order = [pkg["suite"]] + [s for s in suites if s != pkg["suite"]]
        hdr = exact(apt, order, f"linux-headers-{release}", version)
        common = re.search(r"(?:^|,)\s*(linux-headers-[^\s,(|]+-common)(?=[\s,(]|$)",
                           hdr["depends"])
        kbuild = re.search(r"(?:^|,)\s*(linux-kbuild-[^\s,(|]+)", hdr["depends"])
        if not common or not kbuild:
            raise FetchError(f"{hdr['package']} {version} depends on no -common headers or no "
                             f"kbuild package: {hdr['depends']!r}")
        parts = [(apt, hdr), (apt, exact(apt, order, common.group(1), version)),
                 (host, exact(host, order, kbuild.group(1), version))]
        kb = parts[-1][1]
        need = re.search(r"(?:^|,)\s*libc6 \(>= ([^)]+)\)", kb["depends"])
        libc = bool(need) and version_key(need.group(1), host_glibc()) > 0
        if libc:
            family = [s for _, s in SUITES if s.split("-")[0] == kb["suite"].split("-")[0]]
            parts.append((host, resolve(host, family, "libc6")))
        key = hashlib.sha256(" ".join(p["sha256"] for _, p in parts).encode()).hexdigest()
        self.used |= {key} | {p["sha256"] for _, p in parts}
        # Once extracted, the packages themselves are not needed again.
        extracted = os.path.exists(os.path.join(cache_dir(), "prepared", key, "headers.json"))
        debs = [] if extracted else [fetch(a, p) for a, p in parts]
        meta = prepare_headers(debs, key, release, libc)
        meta["key"] = key
        meta["cached"] = extracted or all(p.get("cached") for _, p in parts)
        meta["packages"] = [f"{p['package']} {p['version']} ({p['arch']})" for _, p in parts]
        return os.path.join(cache_dir(), "prepared", key, meta["build"]), meta

    def busybox(self, arch):
        apt = self.apt(arch)
        pkg = resolve(apt, ["bookworm", "bookworm-security"], "busybox-static")
        self.used.add(pkg["sha256"])
        return prepare_busybox(fetch(apt, pkg), pkg["sha256"])

    def prune(self):
        """Removes the cached packages and extractions no kernel of this run uses (after a
        full run: kernels the archive has replaced)."""
        freed = 0
        for sub, strip in (("debs", ".deb"), ("prepared", "")):
            d = os.path.join(cache_dir(), sub)
            for name in os.listdir(d) if os.path.isdir(d) else []:
                if name.removesuffix(strip) in self.used:
                    continue
                path = os.path.join(d, name)
                if os.path.isdir(path):
                    freed += sum(os.lstat(os.path.join(r, f)).st_size
                                 for r, _, fs in os.walk(path) for f in fs)
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    freed += os.path.getsize(path)
                    os.unlink(path)
        if freed:
            log(f"removed {freed >> 20} MiB of kernels the matrix no longer uses")


def main(argv):
    """kernels.py btf ARCH SUITE OUT: writes the BTF of that suite's kernel for ARCH to OUT
    (what the aarch64 build compiles its BPF against)."""
    if len(argv) == 4 and argv[0] == "btf":
        arch, suite, out = argv[1], argv[2], argv[3]
        f = Fetcher()
        pkg, d, k = f.kernel(arch, None,
                             [suite, suite + "-security"] if suite != "sid" else [suite])
        if not k["btf"]:
            raise FetchError(f"no BTF found in {pkg['package']} {pkg['version']}")
        shutil.copy(os.path.join(d, k["btf"]), out + ".tmp")
        os.replace(out + ".tmp", out)
        log(f"BTF of {k['release']} ({arch}) -> {out}")
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except FetchError as e:
        print(f"kernels.py: {e}", file=sys.stderr)
        sys.exit(1)
