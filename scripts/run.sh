#!/usr/bin/env bash
# Quick start: installs what is missing, builds, and runs leakwatchd in the foreground with
# config/leakwatch.yaml (root: loading BPF needs CAP_BPF and CAP_PERFMON). Extra arguments go
# to leakwatchd, e.g. --web.listen-address 127.0.0.1:10071.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
exec build/bin/leakwatchd --config config/leakwatch.yaml "$@"
