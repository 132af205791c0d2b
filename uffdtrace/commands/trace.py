"""`uffdtrace trace`: one line per UFFDIO_MOVE as it happens, diagnosed."""
from __future__ import annotations

import os
import sys
from collections import Counter

from . import command_parser
from .. import movepaths, stacks
from ..livelock import Livelock
from ..recording import run_session
from ..session import TracedMove, TracedRepeat
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
  uffdtrace trace --coalesce-ms 0         # every failure on its own line, no "×N" runs
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
        who = stacks.issuer(m.stack)
        if who:
            line += f" by {printable(who)}"
    return line + _paths(m)


def _paths(m: TracedMove) -> str:
    """"; 3 pages by PTE, ..." where the move's paths were seen (its steps,
    or its destination entries read at exit) and a page moved or a folio was
    split (question 6 and 7), else nothing."""
    p = movepaths.paths(m.to_json(), os.sysconf("SC_PAGE_SIZE"))
    if p is None or not (any(p.counts.values()) or p.unseen_pages or p.thp_splits):
        return ""
    return f"; {movepaths.describe(p, tier_note=False)}"


def format_repeat(r: TracedRepeat, t0_ns: int) -> str:
    """A run's repeats: `count` more failures like the line of its first."""
    e = r.repeat
    comm = printable(r.of.event.comm) if r.of is not None else "?"
    like = (f"like the failure at {(e.first_ts_ns - t0_ns) / 1e9:.3f}" if r.of is not None
            else "whose first failure was lost (ring buffer full)")
    return (f"{(e.last_ts_ns - t0_ns) / 1e9:<9.3f} {e.pid:>7} {comm:<16.16} "
            f"×{e.count:,} more {like}, over {(e.last_ts_ns - e.first_ts_ns) / 1e6:.1f} ms "
            f"(mean {e.latency_total_ns / e.count / 1000:.1f} µs; run ended: {e.closed_by_name})")


def format_livelock(lv: Livelock, t0_ns: int) -> str:
    e = lv.first.event
    parties = ", ".join(f"{printable(c)} ({p}/{t})" for p, t, c in lv.parties)
    culprit = lv.first.diagnosis.culprit
    line = (f"{(lv.last_ts_ns - t0_ns) / 1e9:<9.3f} {e.pid:>7} {printable(e.comm):<16.16} "
            f"LIVELOCK {lv.state}: tid {e.tid} failed the same move {lv.failures:,} times in "
            f"{lv.seconds:.2f} s ({e.errno}, {lv.first.diagnosis.effective_cause}) "
            f"at src {e.src:#x}")
    if culprit is not None:
        line += f"; {printable(culprit.describe())}"
    if parties:
        line += f"; others failing on that page: {parties}"
    return line


def run(args) -> int:
    session = session_from_args(args, args.command)
    if args.ebpf:
        return print_program(session)
    causes: Counter = Counter()
    repeat_lines = 0
    with session:
        session.start()
        print(f"Tracing UFFDIO_MOVE ({session.tier} tier; {sampling_note(session)})... "
              "Hit Ctrl-C to end.", flush=True)
        print(HEADER, flush=True)
        t0 = session.started_ktime_ns

        def sink(items):
            nonlocal repeat_lines
            for item in items:
                if isinstance(item, TracedMove):
                    causes[item.diagnosis.effective_cause] += 1
                    print(format_move(item, t0), flush=True)
                elif isinstance(item, TracedRepeat):
                    cause = item.of.diagnosis.effective_cause if item.of else "unknown"
                    causes[cause] += item.repeat.count
                    repeat_lines += 1
                    print(format_repeat(item, t0), flush=True)
                elif isinstance(item, Livelock):
                    print(format_livelock(item, t0), flush=True)

        result = run_session(session, args.command, args.duration, sink)
        counters = session.counters()
    total = sum(causes.values())
    summary = ", ".join(f"{k} {v}" for k, v in causes.most_common()) or "none"
    runs = f" ({repeat_lines} lines of repeat counts)" if repeat_lines else ""
    skipped = counters.get("recursion_misses", 0)
    skipped = (f"; hook runs the kernel skipped: {skipped} (what they would have seen is missing)"
               if skipped else "")
    print(f"\n{total} moves shown{runs} of {counters['moves_entered']} traced ({result.reason}); "
          f"causes shown: {summary}; ring-buffer drops: {session.drops(counters)}{skipped}",
          file=sys.stderr)
    return 0
