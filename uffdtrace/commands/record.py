"""`uffdtrace record -o FILE`: every move, its diagnosis and the aggregates,
to a JSON Lines trace file that is complete even when interrupted."""
from __future__ import annotations

import sys

from . import command_parser
from ..tracefile import TraceRecords, TraceWriter
from .tracing import (add_filter_options, print_program, run_session, sampling_note,
                      session_from_args)

EXAMPLES = """\
examples:
  uffdtrace record -o moves.jsonl -d 30
  uffdtrace record -o t.jsonl -- uffdtrace workload --scenario pinned --hold 0.2
  uffdtrace record -o failures.jsonl -p 1234 --failed-only
  uffdtrace record -o always-on.jsonl --sample-successes 100 --no-cost-stats  # cheapest
"""
AGGREGATE_EVERY_S = 1.0


def add_parser(sub):
    p = command_parser(sub, "record", help="record moves and their diagnosis to a trace file",
                       description="Record every UFFDIO_MOVE, its diagnosis, pin "
                       "attributions and periodic in-kernel aggregates to a JSON Lines file.",
                       examples=EXAMPLES)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="trace file to write")
    add_filter_options(p)
    p.set_defaults(run=run)


def write_header(records: TraceRecords, session, filters: dict):
    records.header(tier=session.tier, probes=session.probes, filters=filters,
                   start_wall=session.started_wall, start_ktime_ns=session.started_ktime_ns,
                   success_sample=session.config.success_sample)


def write_aggregates(records: TraceRecords, session, elapsed_s: float):
    records.aggregates(elapsed_s=elapsed_s, counters=session.counters(),
                       outcomes=session.outcomes(), histograms=session.histograms())


def run(args) -> int:
    session = session_from_args(args)
    if args.ebpf:
        return print_program(session)
    writer = TraceWriter(args.output)
    filters = {"pid": args.pid, "tid": args.tid, "failed_only": args.failed_only,
               "duration": args.duration, "command": args.command}
    try:
        with session:
            session.start()
            write_header(writer, session, filters)
            print(f"Recording UFFDIO_MOVE ({session.tier} tier; {sampling_note(session)}) "
                  f"to {args.output}... Hit Ctrl-C to end.", file=sys.stderr, flush=True)
            result = run_session(session, args.command, args.duration, writer.items,
                                 tick=lambda t: write_aggregates(writer, session, t),
                                 tick_every=AGGREGATE_EVERY_S)
            write_aggregates(writer, session, result.elapsed_s)
            counters = session.counters()
            drops = session.drops(counters)
            writer.footer(reason=result.reason, command_status=result.command_status,
                          drops=drops)
    finally:
        writer.close()
    unsent = (f", {counters['successes_unsent']} successes counted but not recorded"
              if counters["successes_unsent"] else "")
    print(f"{writer.moves} moves, {writer.pins} pin and {writer.ksm} KSM records, {drops} drops"
          f"{unsent} ({result.reason}) -> {args.output}", file=sys.stderr)
    return 0
