"""Startup: from launching `uffdtrace record` to the first move in the file,
while a background loop keeps moving pages (a few thousand moves/s)."""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

from .stats import median, spread
from .tracers import Uffdtrace
from .workloads import MoveWorkload, PAGE_SIZE

BACKGROUND_RATE = 2000          # moves/s while uffdtrace starts
FIRST_EVENT_TIMEOUT_S = 30


class _Mover(threading.Thread):
    """Short paced native loops until stopped (cffi drops the GIL in C)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop_flag = threading.Event()
        self.wl = MoveWorkload("startup", "background moves", PAGE_SIZE, slots=16)
        self.wl.setup()

    def run(self):
        while not self.stop_flag.is_set():
            self.wl.run(BACKGROUND_RATE // 20, rate=BACKGROUND_RATE)

    def close(self):
        self.stop_flag.set()
        self.join()
        self.wl.close()


def _first_move_s(tracer: Uffdtrace) -> float | None:
    deadline = time.monotonic() + FIRST_EVENT_TIMEOUT_S
    with open(tracer.path) as f:
        while time.monotonic() < deadline:
            line = f.readline()
            if not line:
                time.sleep(0.002)
                continue
            # Successes come in bulk records (trace format 2), failures one by one.
            if line.startswith(('{"type":"move"', '{"type":"successes"')):
                return time.monotonic() - tracer.spawned_at
    return None


def run(reps: int, log: Callable[[str], None]) -> dict:
    tracer = Uffdtrace("uffdtrace", "uffdtrace record")
    if why := tracer.unavailable():
        return {"skipped": why}
    mover = _Mover()
    mover.start()
    ready, first = [], []
    try:
        for rep in range(reps):
            log(f"  rep {rep + 1}/{reps}")
            tracer.start()
            try:
                ready.append(tracer.ready_s)
                first.append(_first_move_s(tracer))
            finally:
                tracer.stop()
    finally:
        mover.close()
    got = [f for f in first if f is not None]
    return {"ready_s": median(ready), "ready_range": spread(ready),
            "first_event_s": median(got) if len(got) == len(first) else None,
            "first_event_range": spread(got), "reps": reps, "pid": os.getpid(),
            "background_rate": BACKGROUND_RATE}
