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

Three storms, repeatable at any rate because their moves change nothing:
a move onto a populated destination (EEXIST), a move of a source page
pinned by an io_uring fixed buffer (EBUSY), which only the page's state
explains, and the two with a move of a never-touched source (ENOENT) in
turn.  The first two are identical failures, which uffdtrace coalesces in
the kernel into runs (one move record and a repeat count per 100 ms);
`--coalesce-ms 0` sends each by itself, and `--no-state-at-exit` on top of
that (failures explained from /proc after each call, as before the reader)
is run on the first kind for comparison.  The third has no two failures
alike in a row: each is sent by itself until the ring buffer is full, then
counted in the kernel per thread, shape and period (closed_by overflow).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from uffdtrace.native import LoopStats
from uffdtrace.workload.failcycle import ERRNO as FAILURE_KINDS, FailureCycle

from .stats import median
from .tracers import Uffdtrace

RATES = [1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 200_000, 0]   # 0 = flat out
# A storm must outlast the failure ring buffer's headroom (some ten thousand
# records) by far for a collector that falls behind to show a loss.
MIN_SECONDS = 2.0
SETTLE_TIMEOUT_S = 10.0


class FailureStorm:
    """Failing 4 KiB moves that change nothing, of one kind or several in
    turn (uffdtrace/workload/failcycle.py, as `workload -s mixed-storm`)."""

    def __init__(self, key: str, label: str, cause: str, kinds: list[str]):
        self.key, self.label, self.cause, self.kinds = key, label, cause, kinds
        self._cycle: FailureCycle | None = None

    def setup(self):
        self._cycle = FailureCycle(self.kinds).__enter__()

    def run(self, count: int, rate: int) -> LoopStats:
        return self._cycle.run(count, rate)

    def flat_out_count(self, seconds: float) -> int:
        return self._cycle.flat_out_count(seconds)

    def close(self):
        if self._cycle is not None:
            self._cycle.__exit__(None, None, None)
            self._cycle = None


def storms() -> list[FailureStorm]:
    return [FailureStorm("eexist", "dst populated (EEXIST)", "dst_populated", ["dst_populated"]),
            FailureStorm("pinned", "src pinned by io_uring (EBUSY)", "page_pinned",
                         ["src_pinned"]),
            FailureStorm("mixed", "EEXIST, EBUSY, ENOENT in turn", "3 causes",
                         list(FAILURE_KINDS))]


def configs(extra: tuple[str, ...] = ()) -> list[tuple[Uffdtrace, tuple[str, ...]]]:
    """Each recorder and the storms it records: uffdtrace as it is (identical
    failures coalesced in the kernel) on both; every failure sent by itself
    (--coalesce-ms 0) on both, what a storm of different failures costs;
    and that without the page-state reader on EEXIST only (failures then
    explained from /proc, as before the reader)."""
    pid = ("-p", str(os.getpid()))
    each = ("--coalesce-ms", "0")
    return [(Uffdtrace("uffdtrace", "uffdtrace record", (*pid, *extra), keep_moves=True),
             ("eexist", "pinned", "mixed")),
            (Uffdtrace("uffdtrace-each", "uffdtrace record --coalesce-ms 0",
                       (*each, *pid, *extra), keep_moves=True), ("eexist", "pinned")),
            (Uffdtrace("uffdtrace-each-no-state",
                       "uffdtrace record --coalesce-ms 0 --no-state-at-exit",
                       (*each, "--no-state-at-exit", *pid, *extra), keep_moves=True),
             ("eexist",))]


# --stacks side by side: a stack walk per failure sent, so storms whose
# every failure is sent (coalescing off; failures that differ in turn)
STACK_RATES = [10_000, 50_000, 0]


def stacks_configs(extra: tuple[str, ...] = ()) -> list[tuple[Uffdtrace, tuple[str, ...]]]:
    """Failure recording without and with --stacks, on the storms where
    every failure is sent (and so takes its stacks): EEXIST with coalescing
    off, and the three kinds in turn (as uffdtrace records by default)."""
    pid = ("-p", str(os.getpid()))
    each = ("--coalesce-ms", "0")
    return [(Uffdtrace("each", "uffdtrace record --coalesce-ms 0", (*each, *pid, *extra),
                       keep_moves=True), ("eexist",)),
            (Uffdtrace("each-stacks", "uffdtrace record --coalesce-ms 0 --stacks",
                       (*each, "--stacks", *pid, *extra), keep_moves=True), ("eexist",)),
            (Uffdtrace("default", "uffdtrace record", (*pid, *extra), keep_moves=True),
             ("mixed",)),
            (Uffdtrace("stacks", "uffdtrace record --stacks", ("--stacks", *pid, *extra),
                       keep_moves=True), ("mixed",))]


# (without, with) --stacks: the pairs stacks_cost() compares
STACK_PAIRS = [("each", "each-stacks", "eexist"), ("default", "stacks", "mixed")]


def stacks_cost(res: dict) -> list[dict]:
    """What --stacks adds per failure, from the flat-out points of each
    pair: in the failing thread (its moves' time, BPF included) and in the
    collector (CPU per failure recorded)."""
    flat = {(r["config"], r["storm"]): r for r in res["rows"] if r["target_rate"] == 0}
    out = []
    for plain, stacked, storm in STACK_PAIRS:
        a, b = flat.get((plain, storm)), flat.get((stacked, storm))
        if a is None or b is None or not a["achieved_rate"] or not b["achieved_rate"]:
            continue
        out.append({"storm": storm, "storm_label": a["storm_label"], "without": a["label"],
                    "with": b["label"],
                    "thread_us": (1e6 / b["achieved_rate"]) - (1e6 / a["achieved_rate"]),
                    "thread_us_without": 1e6 / a["achieved_rate"],
                    "collector_us": b["collector_us"] - a["collector_us"],
                    "collector_us_without": a["collector_us"],
                    "lossless": (a["lossless_all"], b["lossless_all"])})
    return out


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
        rates: list[int] = RATES, plan: list | None = None) -> dict:
    """plan: the recorders and their storms (default: configs(extra))."""
    seconds = max(seconds, MIN_SECONDS)
    plan = configs(extra) if plan is None else plan
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
