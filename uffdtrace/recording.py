"""One tracing run, shared by every command that traces (`trace`, `record`,
`top`'s live source, `serve`): the run loop, the gate COMMAND waits
behind, and the trace records (header, periodic aggregates, footer) a run
writes.  Where the records go is the TraceRecords subclass: a file for
`record`, the TUI's model for `top`, so both see the same records.

    with session:
        session.start()
        result = record(session, TraceWriter(path), command=argv, duration=10)
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Callable

from .livelock import LivelockDetector
from .session import Session
from .signals import stop_on_signals
from .tracefile import TraceRecords

AGGREGATE_EVERY_S = 1.0     # how often a recording snapshots the in-kernel aggregates
# How long the run loop waits for records: POLL_BUSY_MS while they come,
# doubling up to POLL_IDLE_MS while none do (and never past the next
# aggregates tick or the end of -d).  An idle recorder then wakes about once
# a second instead of ten times: on a guest of one vCPU under QEMU TCG its
# wake-ups cost a tenth of the CPU.  What must not wait wakes it at once: a
# failure (its ring buffer's wakeup), a stop signal (the wakeup pipe), the
# COMMAND's exit (its pidfd).  Successes, sent without a wakeup, may wait
# up to POLL_IDLE_MS after an idle spell.  A run stopped from another thread
# (`stop`: top's worker) keeps the busy cadence: nothing wakes it early.
POLL_BUSY_MS, POLL_IDLE_MS = 100, 1000


@dataclass
class RunResult:
    reason: str                 # why tracing stopped
    command_status: int | None  # COMMAND's exit status, if one was run
    elapsed_s: float
    counters: dict | None = None   # the in-kernel counters at the end (record() sets them)


# COMMAND's exit status when its gate broke before it opened (it never ran)
GATE_BROKEN = 125


def launch_gated(session: Session, command: list[str], output: IO | None = None
                 ) -> subprocess.Popen:
    """Start COMMAND held at a gate until its pid is in the traced map, so
    not one of its moves is missed.  With `output`, COMMAND's stdout and
    stderr go there and its stdin is /dev/null (a TUI owns the terminal)."""
    gate_r, gate_w = os.pipe()
    # /proc/self/fd/N, not <&N: dash only redirects single-digit fds, and a
    # process with many files open (a TUI) has higher ones; not /dev/fd/N:
    # a system without udev (a minimal VM, a container) has no /dev/fd.  No
    # preexec_fn to dup2 it low: that is unsafe in a threaded process (top
    # launches from a thread).  A gate that cannot be read (the recorder
    # gone) runs nothing: the command would be untraced.
    script = f'read -r _ < /proc/self/fd/{gate_r} || exit {GATE_BROKEN}; exec "$@"'
    io = {} if output is None else {"stdin": subprocess.DEVNULL, "stdout": output,
                                    "stderr": output}
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", script, "sh", *command], pass_fds=(gate_r,),
                                **io)
    finally:
        os.close(gate_r)
    session.follow_pid(proc.pid)
    try:
        os.write(gate_w, b"go\n")
    except BrokenPipeError:
        pass        # its shell is gone from the gate: its exit status says why
    finally:
        os.close(gate_w)
    return proc


def run_session(session: Session, command: list[str], duration: float,
                sink: Callable[[list], None], tick: Callable[[float], None] | None = None,
                tick_every: float = 1.0, stop: threading.Event | None = None,
                command_output: IO | None = None) -> RunResult:
    """Drain events into `sink` until COMMAND exits, -d passes, Ctrl-C or
    `stop` is set (from another thread: the TUI runs this in its worker).
    The sink gets the session's items, then the livelocks they show."""
    start = time.monotonic()
    livelocks = LivelockDetector()

    def deliver(items: list, end: bool = False):
        found = livelocks.feed(items)
        if end:
            found += livelocks.finish()
        sink(items + found if found else items)

    next_tick = start + tick_every
    proc = None
    reason = "interrupted"
    wait_ms = POLL_BUSY_MS
    with stop_on_signals() as signalled, ExitStack() as watching:
        try:
            _watch(session, watching, signalled.wakeup_fd, drain=True)
            if command:
                proc = launch_gated(session, command, command_output)
                _watch(session, watching, _pidfd(proc.pid))
            while not signalled:
                items = session.poll(_wait_bound(wait_ms, time.monotonic(), next_tick if tick
                                                 else None, start + duration if duration
                                                 else None))
                deliver(items)
                wait_ms = (POLL_BUSY_MS if items or stop is not None
                           else min(2 * wait_ms, POLL_IDLE_MS))
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
            deliver(session.finish(), end=True)
    return RunResult(reason, proc.returncode if proc is not None else None,
                     time.monotonic() - start)


def _wait_bound(wait_ms: int, now: float, *deadlines: float | None) -> int:
    """wait_ms, or less if a deadline (monotonic s) comes sooner."""
    for d in deadlines:
        if d is not None:
            wait_ms = min(wait_ms, max(int((d - now) * 1000) + 1, 0))
    return wait_ms


def _pidfd(pid: int) -> int | None:
    """A pidfd of the child `pid` (readable once it exits), or None where
    the kernel has none (before 5.3): the loop then sees the exit at its
    next wake-up."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _watch(session: Session, stack: ExitStack, fd: int | None, drain: bool = False):
    """Let `fd` end the session's waits until `stack` closes (a pidfd is
    closed then too; the wakeup pipe belongs to stop_on_signals)."""
    if fd is None:
        return
    if not drain:
        stack.callback(os.close, fd)      # callbacks run last first: after unwatch
    session.rings.watch(fd, drain)
    stack.callback(session.rings.unwatch, fd)


def filters(session: Session, command: list[str], duration: float) -> dict:
    """The header's `filters`: what the session was configured to trace."""
    c = session.config
    return {"pid": c.pid, "tid": c.tid, "failed_only": c.failed_only,
            "duration": duration, "command": list(command)}


def write_header(records: TraceRecords, session: Session, command: list[str],
                 duration: float):
    records.header(tier=session.tier, probes=session.probes,
                   filters=filters(session, command, duration),
                   start_wall=session.started_wall, start_ktime_ns=session.started_ktime_ns,
                   success_sample=session.config.success_sample,
                   coalesce_ms=session.config.coalesce_ms, stacks=session.config.stacks)


def write_aggregates(records: TraceRecords, session: Session, elapsed_s: float,
                     retire_exited: bool = False):
    """retire_exited: then forget the processes that had exited before the
    snapshot (Session.forget_processes): a reader sees each leave the
    outcomes with its final count."""
    exited = session.exited_processes() if retire_exited else set()
    counters, outcomes, histograms = session.aggregates()
    records.aggregates(elapsed_s=elapsed_s, counters=counters, outcomes=outcomes,
                       histograms=histograms)
    if exited:
        session.forget_processes(exited)


def record(session: Session, records: TraceRecords, *, command: list[str] = (),
           duration: float = 0, aggregate_every: float = AGGREGATE_EVERY_S,
           stop: threading.Event | None = None, command_output: IO | None = None,
           on_header: Callable[[], None] | None = None,
           retire_exited: bool = False) -> RunResult:
    """A started session, recorded: header, every move and pin, aggregates
    every `aggregate_every` s and at the end, then the footer.  on_header
    runs once the header is out (a banner that promises a readable file).
    retire_exited: see write_aggregates (`serve`, which runs for days)."""
    command = list(command)
    # Records take successes in bulk: at 100,000+ moves/s there is no time
    # to make an object of each (successes.py).
    session.batch_successes = True
    write_header(records, session, command, duration)
    if on_header:
        on_header()
    result = run_session(session, command, duration, records.items,
                         tick=lambda t: write_aggregates(records, session, t, retire_exited),
                         tick_every=aggregate_every, stop=stop, command_output=command_output)
    write_aggregates(records, session, result.elapsed_s)
    result.counters = session.counters()
    records.footer(reason=result.reason, command_status=result.command_status,
                   drops=session.drops(result.counters))
    return result
