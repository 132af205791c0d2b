#!/usr/bin/env bash
# The README's main job: show what this machine lets uffdtrace see, then run
# the built-in `mixed` workload that reproduces every UFFDIO_MOVE failure
# class.  (Once `top`, `record` and `report` exist, a terminal gets the live
# TUI and a non-terminal a recorded trace and its report.)
set -uo pipefail
UFFDTRACE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/uffdtrace"

"$UFFDTRACE" doctor
echo
if [ -t 1 ]; then
    echo "Running the mixed workload for 15 s (Ctrl-C stops it)..."
    exec "$UFFDTRACE" workload --scenario mixed --duration 15
fi
exec "$UFFDTRACE" workload --scenario mixed --duration 5
