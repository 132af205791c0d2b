#!/usr/bin/env bash
# The README's main job: show what this machine lets uffdtrace see, then
# trace the built-in `mixed` workload (every UFFDIO_MOVE failure class) and
# print each failure with its diagnosed cause.  (When `top` and `report`
# exist, a terminal gets the live TUI and a non-terminal a recorded report.)
set -uo pipefail
UFFDTRACE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/uffdtrace"

"$UFFDTRACE" doctor
echo
seconds=5
[ -t 1 ] && seconds=15
echo "Tracing the mixed demo workload for $seconds s; failures only (Ctrl-C stops it)..."
# --hold: the tracepoint tier reads page state from /proc just after each call
exec "$UFFDTRACE" trace --failed-only -- \
    "$UFFDTRACE" workload --scenario mixed --duration "$seconds" --rate 100 --hold 0.05
