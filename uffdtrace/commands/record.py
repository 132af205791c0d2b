"""`uffdtrace record -o FILE`: every move, its diagnosis and the aggregates,
to a JSON Lines trace file that is complete even when interrupted."""
from __future__ import annotations

import sys

from . import command_parser
from ..recording import record
from ..tracefile import TraceWriter
from .tracing import (add_run_options, add_session_options, print_program, sampling_note,
                      session_from_args)

EXAMPLES = """\
examples:
  uffdtrace record -o moves.jsonl -d 30
  uffdtrace record -o t.jsonl -- uffdtrace workload --scenario pinned --hold 0.2
  uffdtrace record -o failures.jsonl -p 1234 --failed-only
  uffdtrace record -o always-on.jsonl --sample-successes 100 --no-cost-stats  # cheapest
"""


def add_parser(sub):
    p = command_parser(sub, "record", help="record moves and their diagnosis to a trace file",
                       description="Record every UFFDIO_MOVE, its diagnosis, pin "
                       "attributions and periodic in-kernel aggregates to a JSON Lines file.  "
                       "The defaults lose no failure in a storm: identical failures are "
                       "counted in the kernel (--coalesce-ms), and failures the ring buffer "
                       "has no room for too; successes are written in bulk (`successes` "
                       "records).  Whatever is lost is counted and `report` says so.",
                       examples=EXAMPLES)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="trace file to write")
    add_session_options(p)
    add_run_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    session = session_from_args(args, args.command)
    if args.ebpf:
        return print_program(session)
    writer = TraceWriter(args.output)
    try:
        with session:
            session.start()
            banner = (f"Recording UFFDIO_MOVE ({session.tier} tier; {sampling_note(session)}) "
                      f"to {args.output}... Hit Ctrl-C to end.")
            result = record(session, writer, command=args.command, duration=args.duration,
                            on_header=lambda: print(banner, file=sys.stderr, flush=True))
    finally:
        writer.close()
    counters = result.counters
    unsent = (f", {counters['successes_unsent']} successes counted but not recorded"
              if counters["successes_unsent"] else "")
    print(f"{writer.moves} moves, {writer.pins} pin and {writer.ksm} KSM records, "
          f"{session.drops(counters)} drops{unsent} ({result.reason}) -> {args.output}",
          file=sys.stderr)
    return 0
