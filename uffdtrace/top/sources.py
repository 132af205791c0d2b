"""Where `top` gets its records: live tracing, the demo workload traced
live, or a recorded trace file.  Every source hands the model the same
trace records (header, move, pin, aggregates, footer), in batches.

A source is prepared on the main thread before the TUI takes the terminal
(bcc compiles there and redirects fd 2 while it does), then run on a
worker thread until it ends or `stop` is set.
"""
from __future__ import annotations

import itertools
import os
import shlex
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Protocol

from .. import recording, successes
from ..errors import UserError
from ..session import Session
from ..tracefile import TraceRecords
from ..tracereader import ReadStatus, iter_records
from .model import TopModel, TraceClock

Emit = Callable[[list[dict]], None]
BATCH = 2000          # records per model update: bounds how long the lock is held


class Source(Protocol):
    label: str

    def prepare(self) -> None: ...
    def run(self, emit: Emit, stop: threading.Event) -> str: ...
    def close(self) -> None: ...


def open_trace(path: str, status: ReadStatus | None = None) -> Iterator[dict]:
    """The one place `top` opens a trace file: its validated records, in
    order (TraceFormatError, ``PATH:LINE: problem``, on a malformed file)."""
    return iter_records(path, status)


class ReplaySource:
    """A recorded trace, at `speed` times its own pace (0: as fast as possible)."""

    def __init__(self, path: str, speed: float = 1.0):
        self.path, self.speed = path, speed
        pace = "max speed" if not speed else f"x{speed:g}"
        self.label = f"replay {os.path.basename(path)} ({pace})"
        self._reader: Iterator[dict] | None = None
        self._records: Iterator[dict] | None = None
        self._status = ReadStatus()

    def prepare(self):
        """Open the trace and read its first record now, so that an unreadable
        file is a one-line error before the TUI starts (however lazy the
        reader behind open_trace is)."""
        if self._records is None:
            self._reader = open_trace(self.path, self._status)
            first = next(self._reader, None)
            self._records = itertools.chain([first] if first is not None else [],
                                            self._reader)

    def run(self, emit: Emit, stop: threading.Event) -> str:
        batch: list[dict] = []
        try:
            return self._paced(batch, emit, stop)
        finally:
            emit(batch)       # what was read before a bad line is shown too

    def _paced(self, batch: list[dict], emit: Emit, stop: threading.Event) -> str:
        clock = TraceClock()        # the model's notion of trace time
        start_wall = time.monotonic()
        for record in self._records:
            try:
                t = clock.time(record)
            except (KeyError, TypeError, ValueError):
                t = None            # malformed: the model counts it, pacing ignores it
            if self.speed and t is not None:
                wait = start_wall + t / self.speed - time.monotonic()
                if wait > 0:
                    emit(batch[:])
                    batch.clear()
                    if stop.wait(wait):
                        return "stopped"
            batch.append(record)
            if len(batch) >= BATCH:
                emit(batch[:])
                batch.clear()
                if stop.is_set():
                    return "stopped"
        if self._status.truncated:
            return "end of trace (its last line is partial: recorder killed?)"
        return "end of trace" if self._status.footer else "end of trace (no footer: unfinished)"

    def close(self):
        if self._reader is not None:
            try:
                self._reader.close()   # a generator: closes its file
            except ValueError:         # still running in a worker that did not stop
                pass


def _uffdtrace_command() -> list[str]:
    """This uffdtrace, as a command (the console script keeps comm readable)."""
    script = os.path.join(os.path.dirname(sys.executable), "uffdtrace")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "uffdtrace"]


def demo_command(rate: float = 100.0) -> list[str]:
    """The native `mixed` workload until stopped; --hold keeps each round's
    memory long enough for the tracepoint tier to read its page state."""
    return _uffdtrace_command() + ["workload", "--scenario", "mixed", "--duration", "0",
                                   "--rate", f"{rate:g}", "--hold", "0.05"]


class _ToModel(TraceRecords):
    """The records `record` would write, handed to the model in batches."""

    def __init__(self, emit: Emit):
        super().__init__()
        self._emit, self._batch = emit, []

    def write(self, record: dict):
        if record["type"] == successes.RECORD_TYPE:
            # the model reads moves, as it does from a file (tracereader)
            self._batch.extend(successes.moves(record))
        else:
            self._batch.append(record)
        if len(self._batch) >= BATCH:
            self.flush()

    def flush(self):
        if self._batch:
            batch, self._batch = self._batch, []
            self._emit(batch)


class LiveSource:
    """The tracing Session, optionally running (and following) COMMAND:
    recorded as `record` would (uffdtrace/recording.py), into the model."""

    def __init__(self, session: Session, *, command: list[str] | None = None,
                 aggregate_every: float = recording.AGGREGATE_EVERY_S, label: str = "live"):
        self.session, self.command = session, command or []
        self.aggregate_every = aggregate_every
        self.label = label
        self._output = None

    def prepare(self):
        self.session.start()

    def run(self, emit: Emit, stop: threading.Event) -> str:
        self._output = tempfile.TemporaryFile() if self.command else None
        try:
            result = recording.record(self.session, _ToModel(emit), command=self.command,
                                      aggregate_every=self.aggregate_every, stop=stop,
                                      command_output=self._output)
            failed = result.reason == "command exited" and result.command_status != 0
            why = self._command_tail() if failed else None
        finally:
            self.close()
        if failed:
            command = shlex.join([os.path.basename(self.command[0]), *self.command[1:]])
            raise UserError(f"`{command}` exited with status {result.command_status}: {why}")
        return result.reason

    def _command_tail(self) -> str:
        """The last line COMMAND wrote: most likely why it failed."""
        self._output.seek(0)
        lines = self._output.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def close(self):
        self.session.close()
        if self._output is not None:
            self._output.close()
            self._output = None


class Feeder:
    """The worker thread: drains a source into the model, so the UI thread
    only ever takes snapshots.  A source's failure becomes model.error."""

    def __init__(self, source: Source, model: TopModel):
        self.source, self.model = source, model
        self.stop_event = threading.Event()
        self.internal_error: str | None = None     # a traceback: a bug, not a user error
        self._thread = threading.Thread(target=self._run, name="uffdtrace-top-feeder",
                                        daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self.stop_event.set()

    def join(self, timeout: float | None = 15):
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self):
        try:
            self.model.finish(self.source.run(self.model.feed, self.stop_event))
        except UserError as exc:
            self.model.fail(str(exc))
        except Exception as exc:   # noqa: BLE001 - shown on the error screen, printed after
            self.internal_error = traceback.format_exc()
            self.model.fail(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            try:
                self.source.close()
            except Exception:      # noqa: BLE001 - closing must not hide the real error
                pass
