"""The options of every command that traces (`trace`, `record`, `top`,
`serve`), built in one place so they cannot drift apart, and the
Session they configure.  The run itself is uffdtrace/recording.py.

Two groups: the session options (what to trace and how: any tracing
command) and the run options (-d, --ebpf, COMMAND: commands that run until
COMMAND exits or time is up).
"""
from __future__ import annotations

import argparse
import sys

from ..bpfprog import DEFAULT_COALESCE_MS
from ..errors import UserError
from ..session import Session
from ..tiers import KERNEL_HOOKS, REQUESTS

# A run longer than this would hide a livelock's progress from the trace.
MAX_COALESCE_MS = 10_000

# The session options and their defaults: a command that offers them where
# they do not apply (top --replay) can tell which the user set.
SESSION_DEFAULTS = {"pid": 0, "tid": 0, "failed_only": False, "sample_successes": 1,
                    "no_cost_stats": False, "tier": "auto", "kernel_hooks": "auto",
                    "no_state_at_exit": False, "coalesce_ms": DEFAULT_COALESCE_MS,
                    "stacks": False}


def add_session_options(p: argparse.ArgumentParser, *, tid: bool = True,
                        successes: bool = True, stacks: bool = True,
                        help: dict[str, str] | None = None):
    """-p, -t (unless tid=False), --failed-only, --sample-successes (unless
    successes=False: a command that has no use for success events, `serve`,
    asks for failures only), --no-cost-stats, --tier, --kernel-hooks,
    --no-state-at-exit, --coalesce-ms, --stacks (unless stacks=False: `serve`
    exports numbers, never a stack).  `help` rewords an option for a
    command where it means a little more (top: -p also filters a replay)."""
    text = {
        "pid": "trace this process only",
        "tid": "trace this thread only",
        "failed_only": "report failed moves only (the in-kernel counters still see all)",
        "sample_successes": "report 1 in N successful moves, chosen at random (default 1: "
                            "all); every failure is still reported and the in-kernel counters "
                            "count every move.  Keeps the tracer cheap under move storms",
        "no_cost_stats": "do not count TLB flushes and lock waits per move: their hooks fire "
                         "on every TLB flush and mmap_lock wait of the machine (cheaper to "
                         "leave running; diagnosis is unaffected)",
        "tier": "auto: the richest this kernel allows (default); kernel: fail unless "
                "move-path hooks attach; tracepoint: syscall tracepoints only",
        "kernel_hooks": "how the kernel tier attaches (default: fentry if possible)",
        "no_state_at_exit": "do not read the kernel's page state where a failed move stopped "
                            "(before it returns); failures are then explained from /proc "
                            "after the call, which the process may have changed (inferred)",
        "coalesce_ms": "a thread's identical failures (same request, errno and page state) "
                       f"within MS milliseconds are recorded as its first failure and a repeat "
                       f"count, exact, counted in the kernel (default {DEFAULT_COALESCE_MS}; 0: "
                       "every failure recorded by itself).  A failure storm then cannot fill "
                       "the ring buffer; failures that differ, when it is full, are counted "
                       "the same way per thread, shape and MS period instead of dropped",
        "stacks": "who issued it: record the user stack of each failed move's caller and of "
                  "each long-term pinner (+ its kernel stack in the kernel tier), symbolized; "
                  "off by default (a stack walk per failure recorded: see bench/)",
        **(help or {}),
    }
    d = SESSION_DEFAULTS
    p.add_argument("-p", "--pid", type=int, default=d["pid"], help=text["pid"])
    if tid:
        p.add_argument("-t", "--tid", type=int, default=d["tid"], help=text["tid"])
    else:
        p.set_defaults(tid=d["tid"])
    if successes:
        p.add_argument("--failed-only", action="store_true", help=text["failed_only"])
        p.add_argument("--sample-successes", type=int, default=d["sample_successes"],
                       metavar="N", help=text["sample_successes"])
    else:
        p.set_defaults(failed_only=True, sample_successes=d["sample_successes"])
    p.add_argument("--no-cost-stats", action="store_true", help=text["no_cost_stats"])
    p.add_argument("--tier", choices=REQUESTS, default=d["tier"], help=text["tier"])
    p.add_argument("--kernel-hooks", choices=KERNEL_HOOKS, default=d["kernel_hooks"],
                   help=text["kernel_hooks"])
    p.add_argument("--no-state-at-exit", action="store_true", help=text["no_state_at_exit"])
    p.add_argument("--coalesce-ms", type=int, default=d["coalesce_ms"], metavar="MS",
                   help=text["coalesce_ms"])
    if stacks:
        p.add_argument("--stacks", action="store_true", help=text["stacks"])
    else:
        p.set_defaults(stacks=False)


def add_run_options(p: argparse.ArgumentParser):
    """-d, --ebpf and `-- COMMAND`."""
    p.add_argument("-d", "--duration", type=float, default=0,
                   help="stop after this many seconds (default: until Ctrl-C or COMMAND exits)")
    p.add_argument("--ebpf", action="store_true", help="print the BPF program and exit")
    p.add_argument("command", nargs="*", metavar="-- COMMAND",
                   help="run COMMAND and trace it and its children until it exits")


def session_options_set(args) -> list[str]:
    """The session options given a value other than their default, as the
    user typed them (--tier, ...)."""
    return ["--" + name.replace("_", "-") for name, default in SESSION_DEFAULTS.items()
            if getattr(args, name, default) != default]


def session_from_args(args, command: list[str]) -> Session:
    """The Session the options describe; `command` (COMMAND, top's demo) is
    followed with its children."""
    if args.pid < 0 or args.tid < 0:
        raise UserError("-p/-t take a positive id")
    if getattr(args, "duration", 0) < 0:
        raise UserError("-d must be >= 0")
    if args.pid and command:
        raise UserError("give either -p PID or a COMMAND, not both")
    if args.sample_successes < 1:
        raise UserError("--sample-successes must be >= 1 (1 = every success)")
    if not 0 <= args.coalesce_ms <= MAX_COALESCE_MS:
        raise UserError(f"--coalesce-ms must be 0..{MAX_COALESCE_MS} (0 = every failure by itself)")
    return Session(pid=args.pid, tid=args.tid, follow=bool(command),
                   failed_only=args.failed_only, success_sample=args.sample_successes,
                   cost_stats=not args.no_cost_stats, tier=args.tier,
                   kernel_hooks=args.kernel_hooks, state_at_exit=not args.no_state_at_exit,
                   coalesce_ms=args.coalesce_ms, stacks=args.stacks)


def sampling_note(session: Session) -> str:
    """How much of what is traced is reported, for banners and summaries."""
    n = session.config.success_sample
    if session.config.failed_only:
        note = "failures only; every move is counted in the kernel"
    elif n > 1:
        note = f"successes sampled 1 in {n}, every failure; every move is counted in the kernel"
    else:
        note = "every move"
    if session.config.coalesce_ms:
        note += f"; identical failures within {session.config.coalesce_ms} ms as repeat counts"
    if session.config.stacks:
        note += "; caller stacks of failures and pinners"
    return note if session.config.cost_stats else note + "; no TLB/lock-wait counts"


def print_program(session: Session) -> int:
    """--ebpf: the program exactly as start() would load it on this kernel.
    Where nothing can be traced (not root...), reading the program is still
    useful: the tracepoint tier's is printed, and stderr says why."""
    try:
        session.choose_tier()
    except UserError as exc:
        if session.requested_tier == "kernel":
            raise
        print(f"uffdtrace: {exc}; this is the tracepoint-tier program", file=sys.stderr)
    print(session.program)
    return 0
