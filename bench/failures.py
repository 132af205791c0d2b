"""Failure recording rate: paced storms of failing 4 KiB moves at rising
rates, each recorded by its own `uffdtrace record -p <bench pid>`, the trace
read back.

Per point: failures made (the native loop counts them) against failures in
the trace, ring-buffer drops, what the failures were diagnosed as (the
expected cause, observed from the kernel's page state at exit, is what the
state reader is for) and the collector's CPU.  The figure is the highest
rate at which every failure was recorded and nothing was dropped, in every
repetition; once a rate loses failures the higher ones are not run (they
would only lose more, and each costs a tracer start: 30 s in the TCG guest).

Two kinds of failure, both repeatable at any rate because they change
nothing: a move onto a populated destination (EEXIST), and a move of a
source page pinned by an io_uring fixed buffer (EBUSY), which only the
page's state explains.  Both are identical failures, which uffdtrace
coalesces in the kernel into runs (one move record and a repeat count per
100 ms); `--coalesce-ms 0` sends each by itself, as a storm of ever
different failures would be, and `--no-state-at-exit` on top of that
(failures explained from /proc after each call, as before the reader) is
run on the first kind for comparison.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from uffdtrace.native import PAGE_SIZE, IoUringPin, LoopStats, Mapping, Uffd, lib

from .stats import median
from .tracers import Uffdtrace

RATES = [1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 200_000, 0]   # 0 = flat out
# A storm must outlast the failure ring buffer's headroom (some ten thousand
# records) by far for a collector that falls behind to show a loss.
MIN_SECONDS = 2.0
SETTLE_TIMEOUT_S = 10.0


class FailureStorm:
    """One failing 4 KiB move, repeated: onto a populated dst (EEXIST), or
    of a src page pinned by an io_uring fixed buffer (EBUSY)."""

    def __init__(self, key: str, label: str, cause: str, pinned_src: bool):
        self.key, self.label, self.cause, self.pinned_src = key, label, cause, pinned_src
        self._uffd = self._src = self._dst = self._pin = None

    def setup(self):
        self._uffd = Uffd()
        self._src, self._dst = Mapping(PAGE_SIZE), Mapping(PAGE_SIZE)
        for m in (self._src, self._dst):
            m.madvise(lib().MADV_NOHUGEPAGE)
        self._src.fill()
        if not self.pinned_src:
            self._dst.fill()        # populated before it is registered
        self._uffd.register(self._dst)
        if self.pinned_src:
            self._pin = IoUringPin(self._src.addr, PAGE_SIZE)

    def run(self, count: int, rate: int) -> LoopStats:
        return self._uffd.move_repeat(self._dst.addr, self._src.addr, PAGE_SIZE, count,
                                      rate=rate)

    def flat_out_count(self, seconds: float) -> int:
        """How many calls take about `seconds` untraced."""
        s = self.run(20_000, 0)
        return max(20_000, int(s.calls / s.ns * 1e9 * seconds))

    def close(self):
        for obj in (self._pin, self._src, self._dst, self._uffd):
            if obj is not None:
                obj.close()


def storms() -> list[FailureStorm]:
    return [FailureStorm("eexist", "dst populated (EEXIST)", "dst_populated", False),
            FailureStorm("pinned", "src pinned by io_uring (EBUSY)", "page_pinned", True)]


def configs(extra: tuple[str, ...] = ()) -> list[tuple[Uffdtrace, tuple[str, ...]]]:
    """Each recorder and the storms it records: uffdtrace as it is (identical
    failures coalesced in the kernel) on both; every failure sent by itself
    (--coalesce-ms 0) on both, what a storm of different failures costs;
    and that without the page-state reader on EEXIST only (failures then
    explained from /proc, as before the reader)."""
    pid = ("-p", str(os.getpid()))
    each = ("--coalesce-ms", "0")
    return [(Uffdtrace("uffdtrace", "uffdtrace record", (*pid, *extra), keep_moves=True),
             ("eexist", "pinned")),
            (Uffdtrace("uffdtrace-each", "uffdtrace record --coalesce-ms 0",
                       (*each, *pid, *extra), keep_moves=True), ("eexist", "pinned")),
            (Uffdtrace("uffdtrace-each-no-state",
                       "uffdtrace record --coalesce-ms 0 --no-state-at-exit",
                       (*each, "--no-state-at-exit", *pid, *extra), keep_moves=True),
             ("eexist",))]


@dataclass
class Point:
    config: str
    storm: str
    target_rate: int
    achieved_rate: float
    made: int                 # failures the loop made
    recorded: int             # failures of the bench process in the trace
    drops: int
    diagnoses: dict           # "cause/evidence" -> failures
    errno: str | None
    collector_cores: float    # collector CPU / time, from the storm's start until it caught up
    collector_us: float       # collector CPU per failure recorded
    lag_s: float              # after the storm, until the collector went idle
    tier: str | None = None   # the recorder's tier (trace header)

    @property
    def lossless(self) -> bool:
        return self.recorded == self.made and not self.drops

    def to_json(self) -> dict:
        return {**self.__dict__, "lossless": self.lossless}


def _settle(tracer: Uffdtrace) -> float:
    """Wait until the collector has caught up (its CPU use falls under a
    tenth of a core); the seconds that took."""
    t0 = time.monotonic()
    last = tracer.cpu_ns()
    while time.monotonic() - t0 < SETTLE_TIMEOUT_S:
        time.sleep(0.05)
        now = tracer.cpu_ns()
        if now - last < 0.05 * 0.1 * 1e9:
            break
        last = now
    return time.monotonic() - t0


def _point(tracer: Uffdtrace, storm: FailureStorm, rate: int, count: int) -> Point:
    tracer.start()
    try:
        cpu0 = tracer.cpu_ns()
        s = storm.run(count, rate)
        lag = _settle(tracer)
        cpu = tracer.cpu_ns() - cpu0
    finally:
        report = tracer.stop()
    pid = os.getpid()
    _, recorded = report.detail["by_pid"].get(pid, [0, 0])
    return Point(tracer.key, storm.key, rate, s.calls / s.ns * 1e9, s.failed, recorded,
                 report.detail["drops"] or 0, report.detail["diagnoses"].get(pid, {}),
                 s.first_errno, cpu / (s.ns + lag * 1e9), cpu / 1e3 / max(recorded, 1), lag,
                 report.detail.get("tier"))


def run(seconds: float, reps: int, log: Callable[[str], None], extra: tuple[str, ...] = (),
        rates: list[int] = RATES) -> dict:
    seconds = max(seconds, MIN_SECONDS)
    plan = configs(extra)
    skipped = {t.key: why for t, _ in plan if (why := t.unavailable())}
    by_key = {s.key: s for s in storms()}
    points: dict[tuple[str, str, int], list[Point]] = {}
    problems: list[str] = []
    try:
        for s in by_key.values():
            s.setup()
        flat_out = {k: s.flat_out_count(seconds) for k, s in by_key.items()}
        for rep in range(reps):
            for tracer, storm_keys in plan:
                if tracer.key in skipped:
                    continue
                for key in storm_keys:
                    storm = by_key[key]
                    for rate in rates:
                        log(f"  rep {rep + 1}/{reps}: {tracer.label}, {storm.label}, "
                            f"{rate or 'max'} failures/s")
                        count = int(rate * seconds) if rate else flat_out[key]
                        p = _point(tracer, storm, rate, count)
                        points.setdefault((tracer.key, key, rate), []).append(p)
                        if p.made != count:
                            problems.append(f"{storm.label} at {rate or 'max'}/s: {count - p.made}"
                                            " of the moves did not fail")
                        if not p.lossless:
                            break       # higher rates would only lose more
    finally:
        for s in by_key.values():
            s.close()
    labels = {t.key: t.label for t, _ in plan}
    rows = []
    for (cfg, key, rate), ps in points.items():
        mid = sorted(ps, key=lambda p: p.achieved_rate)[len(ps) // 2]
        rows.append({**mid.to_json(), "label": labels[cfg], "storm_label": by_key[key].label,
                     "cause": by_key[key].cause,
                     "collector_cores": median([p.collector_cores for p in ps]),
                     "collector_us": median([p.collector_us for p in ps]),
                     "drops_max": max(p.drops for p in ps),
                     "lossless_all": len(ps) == reps and all(p.lossless for p in ps),
                     "reps": [p.to_json() for p in ps]})
    return {"rows": rows, "skipped": skipped, "problems": problems, "seconds": seconds,
            "reps": reps}
