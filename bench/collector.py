"""Collector throughput: a paced 4 KiB move storm with planned failures,
recorded by `uffdtrace record -p <us>`, at rising rates up to flat out."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .stats import median
from .tracers import Uffdtrace
from .workloads import MoveWorkload, PAGE_SIZE

RATES = [50_000, 100_000, 200_000, 400_000, 0]   # moves/s; 0 = as fast as possible
FAIL_EVERY = 1000                               # 0.1% of the moves fail (dst populated)


@dataclass
class Point:
    config: str
    target_rate: int
    achieved_rate: float
    moves: int
    failures_made: int
    failures_recorded: int
    successes_recorded: int
    drops: int
    unsent: int
    collector_cores: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _configs(sample: int) -> list[Uffdtrace]:
    pid = ("-p", str(os.getpid()))
    return [Uffdtrace("uffdtrace", "uffdtrace record", pid, keep_moves=True),
            Uffdtrace("uffdtrace-sampled", f"uffdtrace record --sample-successes {sample}",
                      ("--sample-successes", str(sample), *pid), keep_moves=True)]


def run(seconds: float, reps: int, sample: int, log: Callable[[str], None],
        rates: list[int] = RATES) -> dict:
    configs = _configs(sample)
    skipped = {c.key: why for c in configs if (why := c.unavailable())}
    configs = [c for c in configs if c.key not in skipped]
    wl = MoveWorkload("storm", "4 KiB storm", PAGE_SIZE, slots=64)
    wl.setup()
    wl.calibrate(seconds)
    flat_out = wl.count
    points: dict[tuple[str, int], list[Point]] = {}
    try:
        for rep in range(reps):
            for cfg in configs:
                for rate in rates:
                    log(f"  rep {rep + 1}/{reps}: {cfg.label} at "
                        f"{rate or 'max'} moves/s")
                    count = int(rate * seconds) if rate else flat_out
                    cfg.start()
                    try:
                        cpu0 = cfg.cpu_ns()
                        s = wl.run(count, rate=rate, fail_every=FAIL_EVERY)
                        cores = (cfg.cpu_ns() - cpu0) / s.wall_ns
                    finally:
                        report = cfg.stop()
                    ours = report.detail["by_pid"].get(os.getpid(), [0, 0])
                    counters = report.detail["counters"]
                    points.setdefault((cfg.key, rate), []).append(Point(
                        cfg.key, rate, s.rate, s.ops, s.failed, ours[1], ours[0] - ours[1],
                        report.detail["drops"], counters.get("successes_unsent", 0), cores))
    finally:
        wl.close()
    rows = []
    for (key, rate), ps in points.items():
        mid = sorted(ps, key=lambda p: p.achieved_rate)[len(ps) // 2]
        rows.append({**mid.to_json(),
                     "label": next(c.label for c in configs if c.key == key),
                     "collector_cores": median([p.collector_cores for p in ps]),
                     "drops_max": max(p.drops for p in ps),
                     "all_failures_kept": all(p.failures_recorded == p.failures_made
                                              for p in ps),
                     "lossless_all": all(p.failures_recorded == p.failures_made and not p.drops
                                         for p in ps),
                     "reps": [p.to_json() for p in ps]})
    return {"rows": rows, "skipped": skipped, "fail_every": FAIL_EVERY,
            "seconds": seconds}


