# leakwatch %postun ($1: 0 on removal, 1 on upgrade): what %systemd_postun_with_restart does:
# reload systemd, and after an upgrade restart the service if it was running. On removal, what a
# leakwatchd that crashed left pinned in bpffs goes too (a stopped one leaves nothing there).
if [ "$1" -eq 0 ]; then
    rm -rf /sys/fs/bpf/leakwatch 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart leakwatch.service >/dev/null 2>&1 || :
    fi
fi
