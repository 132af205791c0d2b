"""`uffdtrace export --perfetto FILE -o OUT.json`: a trace as Chrome Trace
Event Format JSON for the Perfetto UI and chrome://tracing."""
from __future__ import annotations

import os
import sys
import tempfile

from . import command_parser
from ..chrometrace import export
from ..errors import UserError

EXAMPLES = """\
examples:
  uffdtrace export --perfetto t.jsonl -o t.json   # then open t.json in ui.perfetto.dev
  uffdtrace export --perfetto t.jsonl -o - | gzip > t.json.gz
"""


def add_parser(sub):
    p = command_parser(sub, "export", help="convert a trace file for Perfetto / chrome://tracing",
                       description="Convert a trace written by `uffdtrace record` into Chrome "
                       "Trace Event Format JSON: moves as slices on their thread, failures as "
                       "instant events carrying the diagnosis, moves/s, bytes/s and TLB "
                       "flushes/s counters per process.",
                       examples=EXAMPLES)
    p.add_argument("file", metavar="FILE", help="trace file (JSON Lines, optionally gzipped)")
    p.add_argument("--perfetto", action="store_true",
                   help="Chrome Trace Event Format JSON, loadable by ui.perfetto.dev and "
                   "chrome://tracing (the one format so far)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="file to write ('-': standard output)")
    p.set_defaults(run=run)


def run(args) -> int:
    if not args.perfetto:
        raise UserError("choose an output format: --perfetto")
    if args.output == "-":
        stats = export(args.file, sys.stdout)
    else:
        stats = _export_to_file(args.file, args.output)
    repeats = (f", {stats['repeated_failures']} repeated failures in {stats['repeat_runs']} runs"
               if stats["repeat_runs"] else "")
    print(f"{stats['moves']} moves ({stats['failures']} failed{repeats}), {stats['pins']} pins, "
          f"{stats['ksm_merges']} KSM merges -> {args.output}", file=sys.stderr)
    return 0


def _export_to_file(path: str, output: str) -> dict:
    """Write to a temporary file beside OUT and rename it: a bad trace never
    leaves a half-written OUT (or clobbers a good one)."""
    directory = os.path.dirname(os.path.abspath(output))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".uffdtrace-export-", dir=directory)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            stats = export(path, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise
    return stats
