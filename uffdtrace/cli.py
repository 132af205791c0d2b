"""`uffdtrace` command line: subcommands, and one place that turns user
mistakes into a one-line error instead of a traceback."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import check, doctor, export, record, report, serve, top, trace, workload
from .errors import UserError

COMMANDS = [doctor, top, trace, record, report, export, serve, check, workload]

EPILOG = """\
examples:
  uffdtrace top --demo                    # live TUI of a built-in workload's moves and failures
  uffdtrace doctor                        # what this kernel lets uffdtrace see
  uffdtrace workload --scenario pinned    # reproduce an io_uring-pinned failure
  uffdtrace trace --failed-only           # every failing UFFDIO_MOVE, diagnosed
  uffdtrace record -o t.jsonl -- uffdtrace workload --scenario pinned --hold 0.2
  uffdtrace report t.jsonl                # what the trace says (no root needed)
  uffdtrace export --perfetto t.jsonl -o t.json   # for ui.perfetto.dev
  uffdtrace serve                         # Prometheus metrics on 127.0.0.1:9464/metrics
  uffdtrace workload --scenario mixed -d 30   # 30 s of every failure class
  uffdtrace top --replay t.jsonl          # browse a recorded trace in the TUI
  uffdtrace check -p 1234 0x7f0000000000 64K --dst 0x7f0000400000   # will this move work?
  uffdtrace check -p 1234 --census        # how much of a process could move now

run `uffdtrace COMMAND --help` for each command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uffdtrace", description="eBPF tracing and diagnostics for Linux UFFDIO_MOVE.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"uffdtrace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"uffdtrace: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
