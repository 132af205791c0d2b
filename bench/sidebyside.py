"""Run workloads under several conditions, alternating, and summarise.

One repetition starts each condition (tracer) in turn, in an order rotated
every repetition, and runs every workload under it.  A ratio is always taken
between measurements of the same repetition (minutes apart at most), then
the median over repetitions is reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from uffdtrace.errors import UserError

from .machine import BusyMeter
from .stats import median, paired_ratios, spread
from .tracers import TracerReport, TracerStartError, TracerStopError, Untraced
from .workloads import Sample


@dataclass
class Cell:
    """One workload under one condition, over every repetition."""

    samples: list[Sample | None]
    tracer_cores: list[float]            # tracer CPU / wall time while the workload ran
    ratios: list[float] = field(default_factory=list)       # vs untraced, wall clock
    cpu_ratios: list[float] = field(default_factory=list)   # vs untraced, thread CPU time

    @property
    def rate(self) -> float | None:
        return median([s.rate for s in self.samples if s])

    @property
    def ratio(self) -> float | None:
        return median(self.ratios)

    @property
    def cpu_ratio(self) -> float | None:
        return median(self.cpu_ratios)

    @property
    def spread(self) -> tuple[float, float] | None:
        """Slowest and fastest repetition relative to the median: the noise."""
        rates = [s.rate for s in self.samples if s]
        mid = median(rates)
        return (min(rates) / mid, max(rates) / mid) if rates else None

    def to_json(self) -> dict:
        return {"rate_median": self.rate, "rate_spread": self.spread,
                "ratio_median": self.ratio,
                "ratio_range": spread(self.ratios), "cpu_ratio_median": self.cpu_ratio,
                "cpu_ratio_range": spread(self.cpu_ratios),
                "tracer_cores_median": median(self.tracer_cores),
                "rates": [s.rate if s else None for s in self.samples]}


@dataclass
class Comparison:
    conditions: list                     # in display order; conditions[0] is the baseline
    workloads: list
    cells: dict[tuple[str, str], Cell]
    reports: dict[str, list[TracerReport]]
    skipped: dict[str, str]              # condition key -> why it did not run
    skipped_workloads: dict[str, str]    # workload key -> why it could not run here
    busy_cpus: list[float]               # per repetition: average busy CPUs (all processes)
    problems: list[str]

    def cell(self, condition: str, workload: str) -> Cell | None:
        return self.cells.get((condition, workload))

    def to_json(self) -> dict:
        return {"conditions": [c.key for c in self.conditions],
                "labels": {c.key: c.label for c in self.conditions},
                "workload_labels": {w.key: w.label for w in self.workloads},
                "workload_notes": {w.key: w.note for w in self.workloads
                                   if getattr(w, "note", None)},
                "skipped_workloads": self.skipped_workloads,
                "cells": {f"{c}/{w}": cell.to_json() for (c, w), cell in self.cells.items()},
                "tracer_ready_s": {k: [r.ready_s for r in v] for k, v in self.reports.items()},
                "tiers": {k: sorted({r.detail.get("tier") for r in v if r.detail.get("tier")})
                          for k, v in self.reports.items()},
                "skipped": self.skipped, "busy_cpus": self.busy_cpus,
                "problems": self.problems}


def side_by_side(conditions: list, workloads: list, reps: int, seconds: float,
                 log: Callable[[str], None]) -> Comparison:
    assert isinstance(conditions[0], Untraced), "the baseline comes first"
    skipped = {c.key: why for c in conditions if (why := c.unavailable())}
    runnable = [c for c in conditions if c.key not in skipped]
    skipped_workloads, ready = {}, []
    for w in workloads:
        try:
            w.setup()
        except (UserError, OSError) as exc:   # e.g. no zram device to read
            w.close()
            skipped_workloads[w.key] = str(exc)
            continue
        w.calibrate(seconds)
        ready.append(w)
    listed, workloads = workloads, ready
    cells = {(c.key, w.key): Cell([None] * reps, []) for c in runnable for w in workloads}
    reports: dict[str, list[TracerReport]] = {c.key: [] for c in runnable}
    busy, problems = [], []
    try:
        for rep in range(reps):
            shift = rep % len(runnable)
            meter = BusyMeter()
            meter.start()
            for cond in runnable[shift:] + runnable[:shift]:
                log(f"  rep {rep + 1}/{reps}: {cond.label}")
                try:
                    ops = _measure(cond, workloads, rep, cells, reports, problems)
                except (TracerStartError, TracerStopError) as exc:
                    # one repetition short for this condition (its samples were
                    # taken while it traced; its own report is lost), not the run
                    problems.append(f"rep {rep + 1}: {exc}")
                    continue
                seen = reports[cond.key][-1].moves_seen
                if seen is not None and seen < ops:
                    problems.append(f"rep {rep + 1}: {cond.label} saw {seen} moves of the "
                                    f"{ops} made: it was not tracing the whole time")
            busy.append(meter.stop())
    finally:
        for w in workloads:
            if w.still_thp() is False:
                problems.append(f"{w.label}: pages were no longer THP after the run")
            w.close()
    base = runnable[0].key
    for (cond, wl), cell in cells.items():
        ref = cells[(base, wl)].samples
        cell.ratios = paired_ratios([s and s.rate for s in cell.samples],
                                    [s and s.rate for s in ref])
        cell.cpu_ratios = paired_ratios([s and s.cpu_rate for s in cell.samples],
                                        [s and s.cpu_rate for s in ref])
    return Comparison([c for c in conditions], listed, cells, reports, skipped,
                      skipped_workloads, busy, problems)


SETTLE_WINDOW_S = 0.2
SETTLE_LIMIT_S = 60.0


def _tracer_cores(cond, window_s: float = SETTLE_WINDOW_S) -> float:
    """The tracer's CPU use over the next `window_s`, in cores."""
    cpu0 = cond.cpu_ns()
    time.sleep(window_s)
    return (cond.cpu_ns() - cpu0) / (window_s * 1e9)


def settle(cond, idle_cores: float, limit_s: float = SETTLE_LIMIT_S) -> float | None:
    """Wait until the tracer has caught up with what the previous workload
    made: its CPU use over a window no more than twice its idle use (and a
    twentieth of a core).  A collector slower than the moves it follows (under
    QEMU TCG it drained a backlog for seconds) would otherwise charge that
    backlog to the next workload -- a bystander that triggers nothing
    measured 0.5-0.9 cores of tracer.  Seconds waited, None if it never
    settled within limit_s."""
    quiet, t0 = max(2 * idle_cores, 0.05), time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if _tracer_cores(cond) <= quiet:
            return time.monotonic() - t0
    return None


def _measure(cond, workloads, rep, cells, reports, problems) -> int:
    """Start `cond`, run every workload under it (each once the tracer has
    settled), stop it; moves made."""
    moves = 0
    cond.start()
    try:
        idle = _tracer_cores(cond, 2 * SETTLE_WINDOW_S)
        for w in workloads:
            if settle(cond, idle) is None:
                problems.append(f"{w.label} under {cond.label}: the tracer still used more "
                                f"than twice its idle CPU ({idle:.3f} cores) after "
                                f"{SETTLE_LIMIT_S:.0f} s: measured while it catches up")
            cpu0 = cond.cpu_ns()
            with cond.measuring():
                sample = w.run()
            cell = cells[(cond.key, w.key)]
            cell.samples[rep] = sample
            cell.tracer_cores.append((cond.cpu_ns() - cpu0) / sample.wall_ns)
            if w.makes_moves:
                moves += sample.ops
            if sample.failed:
                # which errno, and from which call on: one early failure
                # desynchronizes a ping-pong for good, a planned failure
                # storm fails throughout
                problems.append(f"{w.label} under {cond.label}: {sample.failed} of "
                                f"{sample.ops} moves failed ({sample.errors}), the first at "
                                f"call {sample.first_error_call}")
    finally:
        reports[cond.key].append(cond.stop())
    return moves
