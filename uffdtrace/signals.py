"""Stopping cleanly on Ctrl-C, SIGTERM and SIGHUP.

terminate_as_interrupt: SIGTERM/SIGHUP unwind like Ctrl-C, so every
`finally` and ExitStack runs (children reaped, settings restored, trace
files completed).

stop_on_signals: the three signals set a flag instead of raising, for loops
that call C code which calls back into Python (bcc's ring buffer): an
exception raised inside such a callback, outside our own try, is swallowed
by ctypes, and the Ctrl-C would be lost."""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


@contextmanager
def terminate_as_interrupt():
    """A no-op outside the main thread: only it can receive Python signals
    (a TUI's tracing thread is stopped by its app instead)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class StopFlag:
    """Truthy once a stop signal arrived; `signal` says which.  wakeup_fd:
    readable once one arrived (signal.set_wakeup_fd), for a loop that
    sleeps in epoll (None outside the main thread)."""

    def __init__(self):
        self.signal: int | None = None
        self.wakeup_fd: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals():
    """Outside the main thread the flag is never set: only the main thread
    receives Python signals (a TUI's tracing thread is stopped by its app)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def remember(signum, frame):
        flag.signal = signum

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, remember) for s in signals}
    # A handler that only sets a flag does not end a sleep: Python resumes
    # an interrupted epoll_wait until its timeout (PEP 475).  The wakeup
    # pipe does: the C-level handler writes to it before the flag is set.
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    flag.wakeup_fd = read_fd
    try:
        yield flag
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(read_fd)
        os.close(write_fd)
