#!/usr/bin/env bash
# The README's main job: show what this machine lets uffdtrace see, then
# trace the built-in `mixed` workload (every UFFDIO_MOVE failure class).
# In a terminal: the live TUI (`uffdtrace top --demo`; q quits).  Elsewhere
# (CI, a pipe): a recorded trace and its report.
set -uo pipefail
UFFDTRACE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/uffdtrace"

"$UFFDTRACE" doctor
echo
if [ -t 0 ] && [ -t 1 ]; then
    echo "Starting the live view of the mixed demo workload (q quits, ? explains the keys)..."
    exec "$UFFDTRACE" top --demo
fi
# Not a terminal (CI, a pipe): record the same workload to a trace file,
# then print the report a user would attach to a bug.
trace="${TMPDIR:-/tmp}/uffdtrace-demo.jsonl"
echo "Recording the mixed demo workload for 5 s to $trace..."
# --hold: the tracepoint tier reads page state from /proc just after each call
"$UFFDTRACE" record -o "$trace" -- \
    "$UFFDTRACE" workload --scenario mixed --duration 5 --rate 100 --hold 0.05 >/dev/null || exit
echo
exec "$UFFDTRACE" report "$trace"
