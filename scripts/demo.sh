#!/usr/bin/env bash
# The README's main job: show what this machine lets uffdtrace see, then
# trace the built-in `mixed` workload (every UFFDIO_MOVE failure class).
# In a terminal: the live TUI (`uffdtrace top --demo`; q quits).  Elsewhere
# (CI, a pipe): each failure printed with its diagnosed cause.
set -uo pipefail
UFFDTRACE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/uffdtrace"

"$UFFDTRACE" doctor
echo
if [ -t 0 ] && [ -t 1 ]; then
    echo "Starting the live view of the mixed demo workload (q quits, ? explains the keys)..."
    exec "$UFFDTRACE" top --demo
fi
seconds=5
[ -t 1 ] && seconds=15
echo "Tracing the mixed demo workload for $seconds s; failures only (Ctrl-C stops it)..."
# --hold: the tracepoint tier reads page state from /proc just after each call
exec "$UFFDTRACE" trace --failed-only -- \
    "$UFFDTRACE" workload --scenario mixed --duration "$seconds" --rate 100 --hold 0.05
