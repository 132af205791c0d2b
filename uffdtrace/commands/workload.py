"""`uffdtrace workload`: make the kernel produce each UFFDIO_MOVE outcome."""
from __future__ import annotations

import ctypes
import json
import os
import sys

from . import command_parser
from ..errors import UserError
from ..workload.runner import SPECIAL, WorkloadResult, run_workload, scenario_names
from ..workload.scenarios import SCENARIOS

EXAMPLES = """\
examples:
  uffdtrace workload --list                          # every scenario, one line each
  uffdtrace workload --scenario pinned               # EAGAIN, partial: io_uring pin
  uffdtrace workload --scenario ksm --json           # EBUSY on a KSM page, as JSON
  uffdtrace workload --scenario thp --pages 4        # four 2 MiB PMD moves
  uffdtrace workload --scenario storm --iterations 1000000
  uffdtrace workload --scenario failure-storm        # 500,000 identical EEXIST failures
  uffdtrace workload --scenario mixed-storm          # EEXIST, EBUSY, ENOENT in turn, flat out
  uffdtrace workload --scenario retry-loop -d 3      # a livelock-like retry of a pinned page
  uffdtrace workload --scenario mixed --rate 500 -d 0   # until Ctrl-C
  uffdtrace workload --scenario mixed --iterations 1 --rewrite   # pages change after failures
  uffdtrace workload --scenario pinned --pause-before-move   # held before each move (Enter goes on)

exit status: 0 when every call did what the scenario promises, 1 when the
kernel answered differently (printed), 2 on bad usage, 130 if interrupted.
"""
MAX_LISTED_CALLS = 20


def add_parser(sub):
    p = command_parser(sub, "workload", help="reproduce UFFDIO_MOVE outcomes on demand",
                       description="Perform real UFFDIO_MOVEs that reproduce one outcome "
                       "(success or a specific failure) on this kernel.",
                       examples=EXAMPLES)
    p.add_argument("-s", "--scenario", metavar="NAME", help="one of: "
                   + ", ".join(scenario_names()))
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--pages", type=int, metavar="N",
                   help="pages per round (thp: 2 MiB pages; storm: ping-pong slots)")
    p.add_argument("--iterations", type=int, metavar="N",
                   help="rounds to run (storm, failure-storm, mixed-storm, retry-loop: number "
                   "of moves, default 100000, 500000, 500000, rate x duration; mixed: whole "
                   "cycles through "
                   "every class, instead of -d)")
    p.add_argument("--rate", type=float, metavar="MOVES_PER_S",
                   help="mixed, retry-loop: target moves per second (default 200, 1000)")
    p.add_argument("-d", "--duration", type=float, metavar="SECONDS",
                   help="mixed, retry-loop: how long to run (default 10, 2); mixed: 0 = "
                   "until Ctrl-C")
    p.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                   help="keep each round's memory this long after its moves, so a "
                   "tracepoint-tier tracer can still read its page state (default 0)")
    p.add_argument("--rewrite", action="store_true",
                   help="after each failed move, unpopulate its destination and rewrite its "
                   "source, as a compacting GC moves on (the state a tracer reads after the "
                   "call then no longer shows why it failed)")
    p.add_argument("--pause-before-move", action="store_true",
                   help="before each move of a scenario round, print `before-move {JSON}` "
                   "(dst, src, len, mode, pid) on stderr and wait for a line on stdin: "
                   "time to run `uffdtrace check` on the exact range")
    p.add_argument("--comm", metavar="NAME",
                   help="name the process NAME (at most 15 bytes; its children inherit it): "
                   "what a machine-wide tracer labels its moves with (`serve`'s comm label)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


PR_SET_NAME = 15
COMM_BYTES = 15     # TASK_COMM_LEN - 1


def set_comm(name: str):
    """--comm: prctl(PR_SET_NAME), before any move and any child."""
    raw = name.encode()
    if not raw or len(raw) > COMM_BYTES:
        raise UserError(f"--comm takes 1 to {COMM_BYTES} bytes, not {len(raw)}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) != 0:
        raise UserError(f"--comm: prctl(PR_SET_NAME): {os.strerror(ctypes.get_errno())}")


def pause_before_move(planned) -> None:
    """--pause-before-move: announce the move, wait until told to go on."""
    print("before-move " + json.dumps(planned.to_json()), file=sys.stderr, flush=True)
    sys.stdin.readline()


def list_scenarios() -> str:
    lines = []
    for s in SCENARIOS.values():
        outcome = s.expect_errno or "success"
        if s.expect_partial:
            outcome += " (partial)"
        if s.alt_errno:
            outcome += f" or {s.alt_errno}"
        lines.append(f"  {s.name:<20} {outcome:<18} {s.summary}")
    for name, summary in SPECIAL.items():
        lines.append(f"  {name:<20} {'-':<18} {summary}")
    return "scenarios:\n" + "\n".join(lines)


def _progress(result: WorkloadResult):
    s = result.summary()
    errors = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items()))
    print(f"  {result.elapsed_s:6.1f} s  {s['calls']} moves  ok {s['ok']}"
          + (f"  {errors}" if errors else ""), file=sys.stderr, flush=True)


def _by_scenario(result: WorkloadResult) -> list[str]:
    """One row per scenario: too many calls to list one by one."""
    rows = [f"  {'SCENARIO':<20} {'CALLS':>6}  OUTCOMES"]
    for name, counts in result.outcomes.items():
        rows.append(f"  {name:<20} {sum(counts.values()):>6}  "
                    + ", ".join(f"{k} x{v}" for k, v in counts.most_common()))
    return rows


def render(result: WorkloadResult) -> str:
    s = result.summary()
    plural = "" if s["calls"] == 1 else "s"
    out = [f"scenario {result.scenario}: {s['calls']} UFFDIO_MOVE call{plural} in "
           f"{s['elapsed_s']:.3f} s" + (" (interrupted)" if result.interrupted else "")]
    if result.recorded_calls > MAX_LISTED_CALLS:
        out.extend(_by_scenario(result))
    elif result.calls:
        out.append(f"  {'DST':<14} {'SRC':<14} {'LEN':>8} {'MODE':>4} {'RET':>3} "
                   f"{'ERRNO':<7} {'MOVE':>8} {'PID':>7} {'USEC':>7}")
        for _, c in result.calls:
            out.append(f"  {c.dst:#014x} {c.src:#014x} {c.len:>8} {c.mode:>4} {c.ret:>3} "
                       f"{c.errno or '-':<7} {c.move:>8} {c.pid:>7} {c.ns / 1000:>7.1f}")
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(s["errors"].items())) or "none"
    out.append(f"  ok {s['ok']}, failed {s['failed']} ({errors}), "
               f"{s['bytes_moved']} bytes moved"
               + (f", {s['moves_per_s']:.0f} moves/s" if s["moves_per_s"] else ""))
    if result.scenario in SCENARIOS and not result.interrupted:
        out.append("  UNEXPECTED: " + "; ".join(result.problems) if result.problems
                   else "  reproduced as expected")
    return "\n".join(out)


def run(args) -> int:
    if args.list:
        print(list_scenarios())
        return 0
    if not args.scenario:
        print("uffdtrace: workload needs --scenario NAME (or --list)", file=sys.stderr)
        return 2
    if args.comm is not None:
        set_comm(args.comm)
    progress = _progress if sys.stderr.isatty() and not args.json else None
    result = run_workload(args.scenario, pages=args.pages, iterations=args.iterations,
                          rate=args.rate, duration=args.duration, hold=args.hold,
                          rewrite=args.rewrite, progress=progress,
                          before_move=pause_before_move if args.pause_before_move else None)
    print(json.dumps(result.to_json()) if args.json else render(result))
    if result.interrupted and args.scenario != "mixed":
        return 130
    return 1 if result.problems else 0
