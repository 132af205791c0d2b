"""What `trace` and `record` share: their filter options and the run loop
(start the session, optionally launch COMMAND, stop on exit/-d/Ctrl-C)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable

from ..errors import UserError
from ..session import Session
from ..tiers import KERNEL_HOOKS, REQUESTS
from ..signals import stop_on_signals


def add_filter_options(p):
    p.add_argument("-p", "--pid", type=int, default=0, help="trace this process only")
    p.add_argument("-t", "--tid", type=int, default=0, help="trace this thread only")
    p.add_argument("--failed-only", action="store_true",
                   help="report failed moves only (the in-kernel counters still see all)")
    p.add_argument("--sample-successes", type=int, default=1, metavar="N",
                   help="report 1 in N successful moves, chosen at random (default 1: "
                   "all); every failure is still reported and the in-kernel counters "
                   "count every move.  Keeps the tracer cheap under move storms")
    p.add_argument("--no-cost-stats", action="store_true",
                   help="do not count TLB flushes and lock waits per move: their hooks "
                   "fire on every TLB flush and mmap_lock wait of the machine (cheaper "
                   "to leave running; diagnosis is unaffected)")
    p.add_argument("-d", "--duration", type=float, default=0,
                   help="stop after this many seconds (default: until Ctrl-C or COMMAND exits)")
    p.add_argument("--tier", choices=REQUESTS, default="auto",
                   help="auto: the richest this kernel allows (default); kernel: fail "
                        "unless move-path hooks attach; tracepoint: syscall tracepoints only")
    p.add_argument("--kernel-hooks", choices=KERNEL_HOOKS, default="auto",
                   help="how the kernel tier attaches (default: fentry if possible)")
    p.add_argument("--ebpf", action="store_true", help="print the BPF program and exit")
    p.add_argument("command", nargs="*", metavar="-- COMMAND",
                   help="run COMMAND and trace it and its children until it exits")


def session_from_args(args) -> Session:
    if args.pid < 0 or args.tid < 0:
        raise UserError("-p/-t take a positive id")
    if args.duration < 0:
        raise UserError("-d must be >= 0")
    if args.pid and args.command:
        raise UserError("give either -p PID or a COMMAND, not both")
    if args.sample_successes < 1:
        raise UserError("--sample-successes must be >= 1 (1 = every success)")
    return Session(pid=args.pid, tid=args.tid, follow=bool(args.command),
                   failed_only=args.failed_only, success_sample=args.sample_successes,
                   cost_stats=not args.no_cost_stats, tier=args.tier,
                   kernel_hooks=args.kernel_hooks)


def sampling_note(session: Session) -> str:
    """How much of what is traced is reported, for banners and summaries."""
    n = session.config.success_sample
    if session.config.failed_only:
        note = "failures only; every move is counted in the kernel"
    elif n > 1:
        note = f"successes sampled 1 in {n}, every failure; every move is counted in the kernel"
    else:
        note = "every move"
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


def launch_gated(session: Session, command: list[str], output: IO | None = None
                 ) -> subprocess.Popen:
    """Start COMMAND held at a gate until its pid is in the traced map, so
    not one of its moves is missed.  With `output`, COMMAND's stdout and
    stderr go there and its stdin is /dev/null (a TUI owns the terminal)."""
    gate_r, gate_w = os.pipe()
    # /dev/fd/N, not <&N: dash only redirects single-digit fds, and a process
    # with many files open (a TUI) has higher ones.  No preexec_fn to dup2 it
    # low: that is unsafe in a threaded process (top launches from a thread).
    script = f'read -r _ < /dev/fd/{gate_r}; exec "$@"'
    io = {} if output is None else {"stdin": subprocess.DEVNULL, "stdout": output,
                                    "stderr": output}
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", script, "sh", *command], pass_fds=(gate_r,),
                                **io)
    finally:
        os.close(gate_r)
    session.follow_pid(proc.pid)
    os.write(gate_w, b"go\n")
    os.close(gate_w)
    return proc


@dataclass
class RunResult:
    reason: str                 # why tracing stopped
    command_status: int | None  # COMMAND's exit status, if one was run
    elapsed_s: float


def run_session(session: Session, command: list[str], duration: float,
                sink: Callable[[list], None], tick: Callable[[float], None] | None = None,
                tick_every: float = 1.0, stop: threading.Event | None = None,
                command_output: IO | None = None) -> RunResult:
    """Drain events into `sink` until COMMAND exits, -d passes, Ctrl-C or
    `stop` is set (from another thread: the TUI runs this in its worker)."""
    start = time.monotonic()
    next_tick = start + tick_every
    proc = None
    reason = "interrupted"
    with stop_on_signals() as signalled:
        try:
            if command:
                proc = launch_gated(session, command, command_output)
            while not signalled:
                sink(session.poll(100))
                now = time.monotonic()
                if tick and now >= next_tick:
                    tick(now - start)
                    next_tick += tick_every
                if proc is not None and proc.poll() is not None:
                    reason = "command exited"
                    break
                if duration and now - start >= duration:
                    reason = "duration elapsed"
                    break
                if stop is not None and stop.is_set():
                    reason = "stopped"
                    break
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            sink(session.drain())
    return RunResult(reason, proc.returncode if proc is not None else None,
                     time.monotonic() - start)
