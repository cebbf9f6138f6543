# leakwatch %post ($1: 1 on installation, 2 on upgrade): what %systemd_post does. On first
# installation apply the preset (RPM distributions enable services by preset policy, not by
# default); systemctl preset works without a running systemd (it only writes symlinks).
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset leakwatch.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
