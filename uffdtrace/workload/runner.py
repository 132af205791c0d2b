"""Run a scenario for N rounds (or `mixed` for a duration, or a `storm`)."""
from __future__ import annotations

import os
import time
from collections import Counter, deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError
from ..signals import terminate_as_interrupt
from ..native import PAGE_SIZE, LoopStats, Mapping, MoveCall, Uffd
from .failcycle import ERRNO as FAILURE_KINDS, FailureCycle
from .scenarios import (MIXED_CYCLE, OUTSIDE_MIXED, SCENARIOS, PlannedMove, Round,
                        unexpected)

SPECIAL = {
    "mixed": f"a steady mix of every scenario but {', '.join(OUTSIDE_MIXED)}, at --rate "
             "moves/s for --duration s",
    "storm": "maximum-rate 4 KiB moves in a native loop (--iterations = number of moves)",
    "failure-storm": "one failing move (EEXIST: dst populated) repeated at full speed in a "
                     "native loop (--iterations = number of moves, default 500000)",
    "retry-loop": "a livelock-like retry: one move of an io_uring-pinned page (EBUSY) "
                  "repeated at --rate moves/s for --duration s (defaults 1000/s, 2 s)",
    "mixed-storm": "three failing moves in turn (EEXIST: dst populated, EBUSY: src pinned, "
                   "ENOENT: src hole) at full speed in a native loop: no two failures in a "
                   "row alike (--iterations = number of moves, default 500000)",
}

STORM_DEFAULT_MOVES = 100_000
STORM_DEFAULT_PAGES = 64
FAILURE_STORM_DEFAULT_MOVES = 500_000
# --rate and --duration when not given: mixed's, or the scenario's own
DEFAULT_RATE, DEFAULT_DURATION = 200.0, 10.0
SCENARIO_RATE = {"retry-loop": 1000.0}
SCENARIO_DURATION = {"retry-loop": 2.0}
# An endless run (mixed without -d or --iterations: what `top --demo` runs)
# keeps only its latest per-call records, round facts and problems, so its
# memory stays flat however long it runs; its summary still counts every call.
ENDLESS_KEEP = 1000


def scenario_names() -> list[str]:
    return [*SCENARIOS, *SPECIAL]


@dataclass
class WorkloadResult:
    scenario: str
    keep: int | None = None       # records kept of each kind (None: all of them)
    loop: LoopStats | None = None
    elapsed_s: float = 0.0
    interrupted: bool = False
    # the latest `keep` calls, round facts and problems (add_round fills them)
    calls: deque[tuple[str, MoveCall]] = field(init=False)
    setup: deque[dict] = field(init=False)
    problems: deque[str] = field(init=False)
    # every call's outcome, per scenario: what the summary counts
    outcomes: dict[str, Counter] = field(init=False, default_factory=dict)
    _recorded: int = field(init=False, default=0)
    _ok: int = field(init=False, default=0)
    _moved: int = field(init=False, default=0)

    def __post_init__(self):
        self.calls, self.setup, self.problems = (deque(maxlen=self.keep) for _ in range(3))

    @property
    def recorded_calls(self) -> int:
        """Calls recorded one by one, kept or not (a storm's loop records none)."""
        return self._recorded

    def add_calls(self, calls: list[tuple[str, MoveCall]]):
        for name, call in calls:
            self.calls.append((name, call))
            self.outcomes.setdefault(name, Counter())[call.errno or "ok"] += 1
            self._recorded += 1
            self._ok += call.ret == 0
            self._moved += max(call.move, 0)

    def summary(self) -> dict:
        if self.loop is not None:
            errors = dict(self.loop.errors)
            calls, ok, moved = self.loop.calls, self.loop.ok, self.loop.bytes_moved
        else:
            errors = Counter()
            for counts in self.outcomes.values():
                errors.update({k: n for k, n in counts.items() if k != "ok"})
            calls, ok, moved, errors = self._recorded, self._ok, self._moved, dict(errors)
        return {
            "calls": calls, "ok": ok, "failed": calls - ok, "errors": errors,
            "bytes_moved": moved, "elapsed_s": round(self.elapsed_s, 6),
            "moves_per_s": round(calls / self.elapsed_s, 1) if self.elapsed_s else None,
            "interrupted": self.interrupted, "calls_listed": len(self.calls),
        }

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario,
            "pid": os.getpid(),
            "calls": [{**c.to_json(), "scenario": name} for name, c in self.calls],
            "summary": self.summary(),
            "setup": list(self.setup),
            "problems": list(self.problems),
        }


def _run_round(uffd: Uffd, name: str, pages: int, result: WorkloadResult, hold: float,
               rewrite: bool = False, before_move: Callable[[PlannedMove], None] | None = None):
    scenario = SCENARIOS[name]
    with ExitStack() as stack:
        r = Round(uffd=uffd, pages=pages, stack=stack, scenario=name, rewrite=rewrite,
                  before_move=before_move)
        try:
            scenario.run(r)
            if hold:
                time.sleep(hold)  # let a tracer read /proc before we unmap
        finally:
            # Keep what was done even if the round was cut short.
            result.add_calls(r.calls)
            if r.facts:
                result.setup.append({"scenario": name, **r.facts})
    for _, call in r.calls:
        problem = unexpected(scenario, call)
        if problem:
            result.problems.append(f"{name}: {problem}")
    result.problems.extend(f"{name}: {problem}" for problem in r.problems)


def _storm(uffd: Uffd, pages: int, moves: int, result: WorkloadResult):
    with Mapping(pages * PAGE_SIZE) as a, Mapping(pages * PAGE_SIZE) as b:
        a.fill()
        uffd.register(a)
        uffd.register(b)
        result.loop = uffd.move_loop(a, b, PAGE_SIZE, moves)
        result.setup.append({"scenario": "storm", "slots": pages, "area_a": a.addr,
                             "area_b": b.addr})
    if result.loop.failed:
        result.problems.append(f"storm: {result.loop.failed} moves failed "
                               f"(first: {result.loop.first_errno})")


def _failure_cycle(uffd: Uffd, name: str, kinds: list[str], moves: int, rate: float,
                   result: WorkloadResult):
    """`moves` failing moves of `kinds` in turn (failcycle.py) at `rate`
    calls/s (0: flat out)."""
    with FailureCycle(kinds, uffd) as cycle:
        result.setup += [{"scenario": name, **facts} for facts in cycle.setup]
        result.loop = cycle.run(moves, int(rate))
    expected = cycle.expected_errors(moves)
    if result.loop.errors != expected:
        result.problems.append(f"{name}: {result.loop.ok} moves succeeded, failures by errno "
                               f"{result.loop.errors} (expected {expected})")


def _mixed(uffd: Uffd, rate: float, duration: float, hold: float, result: WorkloadResult,
           progress: Callable[[WorkloadResult], None] | None, cycles: int | None = None,
           rewrite: bool = False, before_move: Callable[[PlannedMove], None] | None = None):
    """Rounds of MIXED_CYCLE paced at `rate` moves/s, for `duration` seconds
    or, when given, exactly `cycles` whole cycles (every class, whatever the
    machine's speed)."""
    start = time.monotonic()
    next_report = start + 1.0
    i = 0
    while (i < cycles * len(MIXED_CYCLE)) if cycles else \
            (duration <= 0 or time.monotonic() - start < duration):
        name = MIXED_CYCLE[i % len(MIXED_CYCLE)]
        i += 1
        _run_round(uffd, name, SCENARIOS[name].default_pages, result, hold, rewrite,
                   before_move)
        # Pace on moves, not rounds: sleep until the budget catches up.
        ahead = result.recorded_calls / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        if progress and time.monotonic() >= next_report:
            result.elapsed_s = time.monotonic() - start
            progress(result)
            next_report += 1.0


def validate(name: str, pages: int | None, iterations: int | None,
             rate: float, duration: float, hold: float = 0.0) -> None:
    if name not in SCENARIOS and name not in SPECIAL:
        raise UserError(f"unknown scenario {name!r}; choose from: {', '.join(scenario_names())}")
    if pages is not None and pages < 1:
        raise UserError("--pages must be at least 1")
    if name in SCENARIOS and pages is not None and pages < SCENARIOS[name].min_pages:
        raise UserError(f"scenario {name} needs --pages >= {SCENARIOS[name].min_pages}")
    if iterations is not None and iterations < 1:
        raise UserError("--iterations must be at least 1")
    if rate <= 0:
        raise UserError("--rate must be positive")
    if hold < 0:
        raise UserError("--hold must be >= 0")
    if duration < 0:
        raise UserError("--duration must be >= 0 (0 = until interrupted)")
    if name in SCENARIOS and SCENARIOS[name].needs_root and os.geteuid() != 0:
        raise UserError(f"scenario {name} needs root")


def run_workload(name: str, *, pages: int | None = None, iterations: int | None = None,
                 rate: float | None = None, duration: float | None = None, hold: float = 0.0,
                 rewrite: bool = False,
                 progress: Callable[[WorkloadResult], None] | None = None,
                 before_move: Callable[[PlannedMove], None] | None = None) -> WorkloadResult:
    """Run one scenario; Ctrl-C/SIGTERM stop it cleanly with what was done.
    before_move: called right before each move of a scenario round (not the
    native loops of storm, failure-storm and retry-loop)."""
    rate = rate if rate is not None else SCENARIO_RATE.get(name, DEFAULT_RATE)
    duration = duration if duration is not None else SCENARIO_DURATION.get(name, DEFAULT_DURATION)
    validate(name, pages, iterations, rate, duration, hold)
    if name == "retry-loop" and not iterations and duration <= 0:
        raise UserError("retry-loop needs -d > 0 (or --iterations)")
    endless = name == "mixed" and not iterations and duration <= 0
    result = WorkloadResult(scenario=name, keep=ENDLESS_KEEP if endless else None)
    start = time.monotonic()
    with terminate_as_interrupt(), Uffd() as uffd:
        try:
            if name == "storm":
                _storm(uffd, pages or STORM_DEFAULT_PAGES,
                       iterations or STORM_DEFAULT_MOVES, result)
            elif name == "failure-storm":
                _failure_cycle(uffd, name, ["dst_populated"],
                               iterations or FAILURE_STORM_DEFAULT_MOVES, 0, result)
            elif name == "mixed-storm":
                _failure_cycle(uffd, name, list(FAILURE_KINDS),
                               iterations or FAILURE_STORM_DEFAULT_MOVES, 0, result)
            elif name == "retry-loop":
                _failure_cycle(uffd, name, ["src_pinned"], iterations or int(rate * duration),
                               rate, result)
            elif name == "mixed":
                _mixed(uffd, rate, duration, hold, result, progress, cycles=iterations,
                       rewrite=rewrite, before_move=before_move)
            else:
                for _ in range(iterations or 1):
                    _run_round(uffd, name, pages or SCENARIOS[name].default_pages, result, hold,
                               rewrite, before_move)
        except KeyboardInterrupt:
            result.interrupted = True
    result.elapsed_s = time.monotonic() - start
    return result
