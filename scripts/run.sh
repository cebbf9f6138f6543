#!/usr/bin/env bash
# Quick start: installs what building and running the daemon needs (only what is missing),
# builds leakwatchd alone, and runs it in the foreground with config/leakwatch.yaml (root:
# loading BPF needs CAP_BPF and CAP_PERFMON). Extra arguments go to leakwatchd, e.g.
# --web.listen-address 127.0.0.1:10071 or --check-config.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh daemon
scripts/build.sh daemon
exec "${BUILD_DIR:-build}/bin/leakwatchd" --config config/leakwatch.yaml "$@"
