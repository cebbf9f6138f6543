"""Checks the #include lines of daemon/ against the module map in docs/internals.md.

Usage: check_includes.py SOURCE_DIR

The map is the table under "## Module map": one row per folder of daemon/ (and main.cpp), with
the folders it may include and those it must not. Every file of a folder is checked:

- each quoted include names a header of its own folder or of a folder it may include;
- nothing it reaches through the headers it includes, however indirectly, belongs to a folder
  it must not include (the message shows the chain);
- the two columns of each row name every other folder once between them.

Exits 1 naming the file and the include for each rule broken, 0 when all hold.
"""
import os
import re
import sys

# Headers of the top-level bpf/ folder shared with the BPF programs, and generated skeletons.
BPF_HEADERS = {"leakwatch.h", "sampling.h", "stackhash.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
NAME = re.compile(r"`([^`]+)`")


def read_map(doc):
    """{module: (may, must_not)} from the module map table of docs/internals.md."""
    rows = {}
    in_section = False
    for line in open(doc, encoding="utf-8"):
        if line.startswith("## "):
            in_section = line.strip() == "## Module map"
            continue
        if not in_section or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4:
            sys.exit(f"{doc}: a module map row needs 4 cells: {line.strip()}")
        module = NAME.findall(cells[0])[0].rstrip("/")
        rows[module] = (set(NAME.findall(cells[2])), set(NAME.findall(cells[3])))
    if not rows:
        sys.exit(f"{doc}: no module map table under '## Module map'")
    return rows


def module_of(include):
    """The module a quoted include belongs to, or None when unknown."""
    if include.endswith(".skel.h"):
        return "skeletons"
    if include in BPF_HEADERS:
        return "bpf"
    if "/" in include:
        return include.split("/", 1)[0]
    return None


def main():
    src = sys.argv[1]
    daemon = os.path.join(src, "daemon")
    rows = read_map(os.path.join(src, "docs", "internals.md"))
    folders = {m for m in rows if m != "main.cpp"}
    universe = folders | {"bpf", "skeletons"}
    errors = []

    for module, (may, must_not) in sorted(rows.items()):
        others = universe - {module}
        for name in sorted((may | must_not) - others):
            errors.append(f"module map: row {module} names unknown module {name}")
        for name in sorted(may & must_not):
            errors.append(f"module map: row {module} both may and must not include {name}")
        for name in sorted(others - may - must_not):
            errors.append(f"module map: row {module} says nothing of {name}")

    files = {}  # path relative to daemon/ -> its quoted includes
    for root, _, names in os.walk(daemon):
        for name in names:
            if name.endswith((".h", ".cpp")):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, daemon)
                files[rel] = INCLUDE.findall(open(path, encoding="utf-8").read())
    for rel in files:
        folder = rel.split("/", 1)[0] if "/" in rel else rel
        if folder not in rows:
            errors.append(f"daemon/{rel}: folder {folder} has no row in the module map")

    def reached(include, seen):
        """(module, chain) for everything the include reaches through daemon headers."""
        module = module_of(include)
        yield module, [include]
        if include in files and include not in seen:
            seen.add(include)
            for inner in files[include]:
                for m, chain in reached(inner, seen):
                    yield m, [include] + chain

    for rel, includes in sorted(files.items()):
        folder = rel.split("/", 1)[0] if "/" in rel else rel
        if folder not in rows:
            continue
        may, must_not = rows[folder]
        for include in includes:
            module = module_of(include)
            if module is None or (module in folders and include not in files):
                errors.append(f'daemon/{rel}: #include "{include}": no such header of daemon/ '
                              "or bpf/ (a new kind of include needs a row in the module map)")
                continue
            if module != folder and module not in may:
                errors.append(f'daemon/{rel}: #include "{include}": {folder} must not include '
                              f"{module}")
                continue
            for m, chain in reached(include, set()):
                if m in must_not:
                    errors.append(f'daemon/{rel}: #include "{include}" reaches {m} ('
                                  + " -> ".join(chain) + f"); {folder} must not include {m}")
                    break

    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} include rule(s) broken; the rules are the module map in "
              "docs/internals.md")
        return 1
    print(f"{len(files)} files of daemon/ follow the module map of docs/internals.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
