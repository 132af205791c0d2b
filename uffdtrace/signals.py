"""SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` and ExitStack runs
(children reaped, settings restored, trace files completed)."""
from __future__ import annotations

import signal
from contextlib import contextmanager


@contextmanager
def terminate_as_interrupt():
    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
