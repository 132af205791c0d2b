"""`uffdtrace top`: a live TUI of UFFDIO_MOVE moves, failures and causes."""
from __future__ import annotations

import os
import sys

from . import command_parser
from ..errors import UserError
from .tracing import add_session_options, session_from_args, session_options_set

EXAMPLES = """\
examples:
  uffdtrace top --demo                    # trace the built-in `mixed` workload (start here)
  uffdtrace top                           # every UFFDIO_MOVE on the machine
  uffdtrace top -p 1234 --failed-only     # one process, failures only
  uffdtrace top --interval 0.5            # refresh twice a second
  uffdtrace top --sample-successes 100 --no-cost-stats   # cheap enough to leave running
  uffdtrace top --demo --tier tracepoint  # the demo without the kernel tier's hooks
  uffdtrace top --replay t.jsonl --speed 4    # a recorded trace, four times as fast
  uffdtrace top --replay t.jsonl --speed 0    # ... as fast as possible

keys: s/r sort, / filter (pid:N comm:TEXT cause:TEXT), f failures only,
p pause, Enter details, ? help, q quit.
"""
DEMO_RATE = 100.0


def add_parser(sub):
    p = command_parser(sub, "top", help="live TUI: moves, failures and their causes",
                       description="A live view of UFFDIO_MOVE activity: per-process rates, "
                       "failures by cause, latency, and the full diagnosis of any failure. "
                       "Live tracing needs root; --replay does not.",
                       examples=EXAMPLES)
    add_session_options(p, tid=False, help={
        "pid": "only this process (live: traced alone; replay: filtered)",
        "failed_only": "start with failures only shown; live tracing sends failed moves "
                       "only (in-kernel counters still count every move)"})
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="display refresh interval and rate window (default 1, minimum 0.25)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--replay", metavar="FILE", help="replay a trace file from "
                        "`uffdtrace record` instead of tracing live")
    source.add_argument("--demo", action="store_true",
                        help="run the native `mixed` workload (every failure class) and "
                        "trace it")
    p.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="--replay pace: X times real time, 0 = as fast as possible (default 1)")
    p.set_defaults(run=run)


def _source(args):
    from ..top.sources import LiveSource, ReplaySource, demo_command

    if args.replay:
        return ReplaySource(args.replay, args.speed)
    command = demo_command(DEMO_RATE) if args.demo else []
    session = session_from_args(args, command)
    if args.demo:
        label = "demo: the mixed workload"
    else:
        label = "live" + (f", pid {args.pid}" if args.pid else "") + \
            (", failures only sent" if args.failed_only else "")
    return LiveSource(session, command=command, aggregate_every=args.interval, label=label)


def _validate(args):
    from ..top.app import MIN_INTERVAL

    if args.pid < 0:
        raise UserError("-p takes a positive process id")
    if args.interval < MIN_INTERVAL:
        raise UserError(f"--interval must be at least {MIN_INTERVAL} s (the display "
                        "refreshes at most 4 times a second)")
    if args.speed < 0:
        raise UserError("--speed must be >= 0 (0 = as fast as possible)")
    if args.speed != 1.0 and not args.replay:
        raise UserError("--speed applies to --replay only")
    if args.demo and args.pid:
        raise UserError("--demo traces its own workload: -p does not apply")
    if args.replay:
        # -p and --failed-only filter a replay too; the others shape tracing
        live_only = [o for o in session_options_set(args) if o not in ("--pid", "--failed-only")]
        if live_only:
            raise UserError(f"{', '.join(live_only)}: live tracing only, not --replay")
    if args.pid and not args.replay and not os.path.exists(f"/proc/{args.pid}"):
        raise UserError(f"no process with pid {args.pid}")


def build_app(source, *, interval: float = 1.0, failed_only: bool = False,
              row_filter=None):
    """Prepare `source` and the app around it.  A source that cannot start
    (no root, bcc cannot compile...) gives an app showing the error screen."""
    from ..top.app import TopApp
    from ..top.model import TopModel
    from ..top.sources import Feeder

    model = TopModel(source.label, rate_window=max(interval, 1.0))
    try:
        source.prepare()
    except UserError as exc:
        model.fail(f"{source.label}: could not start: {exc}")
    feeder = Feeder(source, model) if model.error is None else None
    return TopApp(model, feeder, interval=interval, failures_only=failed_only,
                  row_filter=row_filter)


def run(args) -> int:
    _validate(args)
    from ..top.view import RowFilter

    source = _source(args)
    if args.replay:
        source.prepare()        # a missing or unreadable file: one line, exit 2
    if not (sys.stdin.isatty() and sys.__stderr__.isatty()):
        # Textual reads keys from stdin and draws on stderr.
        raise UserError("top needs a terminal (for a log or a file: uffdtrace trace, "
                        "uffdtrace record)")
    if not args.replay:
        print("uffdtrace top: compiling and attaching the BPF program...", file=sys.stderr,
              flush=True)       # prepared before the TUI owns the terminal: bcc uses fd 2
    app = build_app(source, interval=args.interval, failed_only=args.failed_only,
                    row_filter=RowFilter(pid=args.pid) if args.replay and args.pid else None)
    try:
        app.run()
    finally:
        if app.feeder is not None:
            app.feeder.join()
        source.close()
    internal = app.feeder.internal_error if app.feeder is not None else None
    if internal:
        print(internal, file=sys.stderr)
    if app.model.error:
        print(f"uffdtrace: {app.model.error}", file=sys.stderr)
        return 1 if internal else 2
    return app.return_code or 0
