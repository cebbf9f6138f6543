# leakwatch %preun ($1: 0 on removal, 1 on upgrade): what %systemd_preun does. On removal
# disable the unit and stop it (the stop only when systemd runs).
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now leakwatch.service >/dev/null 2>&1 || :
    else
        systemctl --no-reload disable leakwatch.service >/dev/null 2>&1 || :
    fi
fi
