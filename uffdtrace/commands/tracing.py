"""What `trace` and `record` share: their filter options and the run loop
(start the session, optionally launch COMMAND, stop on exit/-d/Ctrl-C)."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable

from ..errors import UserError
from ..session import TIERS, Session
from ..signals import terminate_as_interrupt


def add_filter_options(p):
    p.add_argument("-p", "--pid", type=int, default=0, help="trace this process only")
    p.add_argument("-t", "--tid", type=int, default=0, help="trace this thread only")
    p.add_argument("--failed-only", action="store_true",
                   help="report failed moves only (the in-kernel counters still see all)")
    p.add_argument("-d", "--duration", type=float, default=0,
                   help="stop after this many seconds (default: until Ctrl-C or COMMAND exits)")
    p.add_argument("--tier", choices=TIERS, default="auto",
                   help="auto: the richest this kernel allows (default); kernel: fail "
                        "unless move-path hooks attach; tracepoint: syscall tracepoints only")
    p.add_argument("--kernel-hooks", choices=("auto", "fentry", "kprobe"), default="auto",
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
    return Session(pid=args.pid, tid=args.tid, follow=bool(args.command),
                   failed_only=args.failed_only, tier=args.tier,
                   kernel_hooks=args.kernel_hooks)


def print_program(session: Session) -> int:
    """--ebpf: the program exactly as start() would load it on this kernel."""
    session.choose_tier()
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
    with terminate_as_interrupt():
        try:
            if command:
                proc = launch_gated(session, command, command_output)
            while True:
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
        except KeyboardInterrupt:
            reason = "interrupted"
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
