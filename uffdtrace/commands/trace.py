"""`uffdtrace trace`: one line per UFFDIO_MOVE as it happens, diagnosed."""
from __future__ import annotations

import sys
from collections import Counter

from . import command_parser
from ..recording import run_session
from ..session import TracedMove
from ..taxonomy import cause_label
from ..textsafe import printable
from .tracing import (add_run_options, add_session_options, print_program, sampling_note,
                      session_from_args)

EXAMPLES = """\
examples:
  uffdtrace trace                         # every UFFDIO_MOVE on the machine
  uffdtrace trace -p 1234 --failed-only   # failures of one process
  uffdtrace trace -d 10                   # for ten seconds
  uffdtrace trace --sample-successes 100  # every failure, 1 success in 100
  uffdtrace trace -- uffdtrace workload --scenario pinned --hold 0.2
  uffdtrace trace --ebpf                  # print the BPF program
"""
HEADER = (f"{'TIME(s)':<9} {'PID':>7} {'COMM':<16} {'DST':<14} {'SRC':<14} {'LEN':>8} "
          f"{'RESULT':<14} {'USEC':>7} {'TLB':>4}  CAUSE")


def add_parser(sub):
    p = command_parser(sub, "trace", help="print every UFFDIO_MOVE as it happens, diagnosed",
                       description="Trace UFFDIO_MOVE calls live: request, result, latency, "
                       "TLB flushes and the diagnosed cause of each failure.",
                       examples=EXAMPLES)
    add_session_options(p)
    add_run_options(p)
    p.set_defaults(run=run)


def format_move(m: TracedMove, t0_ns: int) -> str:
    e, d = m.event, m.diagnosis
    result = "ok" if not e.failed else f"{e.errno} {e.move}"
    cause = cause_label(d.cause, d.underlying)
    line = (f"{(e.ts_ns - t0_ns) / 1e9:<9.3f} {e.pid:>7} {printable(e.comm):<16.16} "
            f"{e.dst:#014x} {e.src:#014x} {e.len:>8} {result:<14.14} "
            f"{e.latency_ns / 1000:>7.1f} {e.tlb_flushes if e.cost_stats else '-':>4}  {cause}")
    if e.failed:
        line += f" [{d.evidence}]"
        if d.culprit is not None:
            line += f" {printable(d.culprit.describe())}"
    return line


def run(args) -> int:
    session = session_from_args(args, args.command)
    if args.ebpf:
        return print_program(session)
    causes: Counter = Counter()
    with session:
        session.start()
        print(f"Tracing UFFDIO_MOVE ({session.tier} tier; {sampling_note(session)})... "
              "Hit Ctrl-C to end.", flush=True)
        print(HEADER, flush=True)
        t0 = session.started_ktime_ns

        def sink(items):
            for item in items:
                if isinstance(item, TracedMove):
                    causes[item.diagnosis.effective_cause] += 1
                    print(format_move(item, t0), flush=True)

        result = run_session(session, args.command, args.duration, sink)
        counters = session.counters()
    total = sum(causes.values())
    summary = ", ".join(f"{k} {v}" for k, v in causes.most_common()) or "none"
    print(f"\n{total} moves shown of {counters['moves_entered']} traced ({result.reason}); "
          f"causes shown: {summary}; ring-buffer drops: {session.drops(counters)}",
          file=sys.stderr)
    return 0
