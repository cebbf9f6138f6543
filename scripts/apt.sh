# Sourced by the install scripts: install Debian packages that are missing, each for the
# architecture it is meant for. A package counts as present only when it is installed for
# that architecture (or is Architecture: all), so nothing installed for another
# architecture (the kernel matrix's arm64 libraries) can stand in for a native one.

lw_native_arch=$(dpkg --print-architecture)
lw_sudo=""
if [[ $(id -u) -ne 0 ]]; then
    lw_sudo="sudo"
fi
lw_apt_updated=0

lw_apt_update() {
    if ((!lw_apt_updated)); then
        $lw_sudo apt-get update -qq
        lw_apt_updated=1
    fi
}

# lw_installed PKG ARCH: PKG is installed for ARCH, or as an Architecture: all package.
lw_installed() {
    dpkg-query -W -f='${db:Status-Abbrev}|${Architecture}\n' "$1" 2>/dev/null |
        grep -qE "^ii *\|($2|all)$"
}

# lw_install_missing WHO ARCH PKG...: installs those of PKG... missing for ARCH, as PKG:ARCH
# (apt takes the native qualifier for Architecture: all packages too). WHO names the caller in
# the one line it prints when it installs anything.
lw_install_missing() {
    local who=$1 arch=$2
    shift 2
    local missing=() p
    for p in "$@"; do
        lw_installed "$p" "$arch" || missing+=("$p:$arch")
    done
    ((${#missing[@]} > 0)) || return 0
    echo "$who: installing ${missing[*]}"
    lw_apt_update
    DEBIAN_FRONTEND=noninteractive $lw_sudo apt-get install -y -qq --no-install-recommends \
        --no-remove "${missing[@]}"
}
