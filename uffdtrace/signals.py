"""SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` and ExitStack runs
(children reaped, settings restored, trace files completed)."""
from __future__ import annotations

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
