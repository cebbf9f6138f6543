# Sourced by scripts/sanitize.sh and scripts/fuzz.sh: sets `launcher` to the CMake arguments
# that compile through ccache, with its cache outside the clone (like the tests' root file
# systems and kernels), so that the next run of the whole suite on the same machine, from any
# clone, compiles what changed only. Those two build trees are the suite's longest compiles
# (about 11 and 5 minutes from nothing on 2 vCPUs) and their debug information is read only by
# the sanitizers' reports, so cache hits may ignore the directory the clone is in
# (CCACHE_NOHASHDIR: an object keeps the path of the clone that compiled it first). The main
# build (scripts/build.sh) does not use it: tests read its source paths from its DWARF.
# LEAKWATCH_CCACHE=0 turns it off; without ccache installed, nothing changes.
launcher=()
if [[ "${LEAKWATCH_CCACHE:-1}" != 0 ]] && command -v ccache >/dev/null; then
    if [[ -z "${CCACHE_DIR:-}" ]] && mkdir -p /var/cache/leakwatch/ccache 2>/dev/null &&
        [[ -w /var/cache/leakwatch/ccache ]]; then
        export CCACHE_DIR=/var/cache/leakwatch/ccache
    fi
    export CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-4G}
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
