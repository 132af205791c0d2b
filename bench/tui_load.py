"""Does `uffdtrace top` keep up with 1,000 processes and 100,000 moves/s?

Standalone: `python bench/tui_load.py [--duration S] [--processes N] [--rate R]`,
or `run(...)` from another script (it returns the numbers as a dict).

Three measurements, on the real model, worker thread and app (headless):
  1. model throughput: synthetic move records fed as fast as possible;
  2. snapshot cost: one model.snapshot() with N processes;
  3. under load: a synthetic source emits R moves/s over N processes (1% of
     them failures, with diagnoses) through the real Feeder thread while the
     app refreshes at 4 Hz; per-refresh cost (snapshot + changed cells),
     cells updated, the rate the worker actually sustained, and how long a
     key press takes to be handled (the UI staying responsive).
The synthetic records carry only what the model reads from a move record.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from uffdtrace.top.app import TopApp                      # noqa: E402
from uffdtrace.top.model import TopModel                  # noqa: E402
from uffdtrace.top.sources import Feeder                  # noqa: E402
from uffdtrace.top.widgets import ListTable               # noqa: E402

FAIL_EVERY = 100
CAUSES = ["page_pinned", "dst_populated", "src_hole", "page_shared", "invalid_misaligned"]
T0 = 10**12


def header() -> dict:
    return {"type": "header", "format": "uffdtrace-trace", "tier": "synthetic",
            "kernel_release": "bench", "filters": {"failed_only": False}, "start_ktime_ns": T0}


def move_record(i: int, t: float, processes: int) -> dict:
    pid = 1000 + i % processes
    r = {"type": "move", "pid": pid, "tid": pid, "comm": f"worker-{pid % 97}",
         "ts_ns": T0 + int(t * 1e9), "latency_ns": 800 + (i * 7919) % 20000, "len": 4096,
         "ret": 0, "move": 4096, "tlb_flushes": i & 1, "errno": None}
    if i % FAIL_EVERY == 0:
        cause = CAUSES[(i // FAIL_EVERY) % len(CAUSES)]
        r.update(ret=-16, move=-16, errno="EBUSY",
                 diagnosis={"cause": cause, "underlying": None, "evidence": "inferred",
                            "fail_addr": 0x7f0000000000, "culprit": None, "notes": []})
    return r


class RebuildTable(ListTable):
    """The naive strategy, for comparison: clear() and re-add every row at
    each refresh (what keyed rows with changed-cell updates avoid)."""

    def sync(self, items):
        self.clear()
        self._shown = []
        super().sync(items)


class RebuildApp(TopApp):
    table_class = RebuildTable


class SyntheticSource:
    """`rate` moves/s over `processes` pids, in 20 ms batches, for `duration` s."""

    label = "synthetic"

    def __init__(self, rate: float, processes: int, duration: float):
        self.rate, self.processes, self.duration = rate, processes, duration
        self.emitted = 0
        self.elapsed = 0.0

    def prepare(self):
        pass

    def run(self, emit, stop: threading.Event) -> str:
        emit([header()])
        start = time.monotonic()
        i = 0
        tick = 0.02
        while not stop.is_set():
            now = time.monotonic() - start
            if now >= self.duration:
                break
            due = int(self.rate * now)          # moves that should exist by now
            batch = [move_record(j, j / self.rate, self.processes) for j in range(i, due)]
            i = due
            if batch:
                emit(batch)
            self.emitted = i
            time.sleep(max(tick - (time.monotonic() - start - now), 0))
        self.elapsed = time.monotonic() - start
        return "done"

    def close(self):
        pass


def model_throughput(records: int = 300_000, processes: int = 1000) -> float:
    """Records per second the model ingests (no UI, no source)."""
    batch = [move_record(i, i / 100_000, processes) for i in range(records)]
    model = TopModel()
    model.feed([header()])
    start = time.perf_counter()
    for k in range(0, records, 2000):
        model.feed(batch[k:k + 2000])
    return records / (time.perf_counter() - start)


def snapshot_ms(processes: int = 1000) -> float:
    model = TopModel()
    model.feed([header()] + [move_record(i, i / 100_000, processes) for i in range(100_000)])
    start = time.perf_counter()
    for _ in range(10):
        model.snapshot()
    return (time.perf_counter() - start) / 10 * 1000


async def _under_load(duration: float, processes: int, rate: float, size,
                      app_class=TopApp) -> dict:
    source = SyntheticSource(rate, processes, duration)
    model = TopModel(source.label)
    app = app_class(model, Feeder(source, model), interval=0.25)
    costs: list[float] = []       # wall time: includes waiting for the GIL
    cpu: list[float] = []         # this thread's CPU time: the refresh's own cost
    refresh = app.refresh_view

    def timed_refresh():
        start, start_cpu = time.perf_counter(), time.thread_time()
        refresh()
        costs.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)

    app.refresh_view = timed_refresh
    keys: list[float] = []
    async with app.run_test(size=size) as pilot:
        app._timer.stop()                          # re-arm with the timed refresh
        app._timer = app.set_interval(app.interval, app.refresh_view)
        end = time.monotonic() + duration
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            # A key as the terminal would send it; handled when the sort
            # order changed (the handler re-sorts and redraws the table).
            before = app.sort_order
            start = time.perf_counter()
            app.simulate_key("s")
            while app.sort_order == before:
                await asyncio.sleep(0.002)
            keys.append(time.perf_counter() - start)
        cells = app._processes.cell_updates + app._failures.cell_updates
        rows = app._processes.row_count
        await pilot.press("q")
    app.feeder.join()
    ms = sorted(c * 1000 for c in costs)
    cpu_ms = sorted(c * 1000 for c in cpu)
    return {
        "target_moves_per_s": rate,
        "sustained_moves_per_s": round(source.emitted / max(source.elapsed, 1e-9)),
        "processes_shown": rows,
        "refreshes": len(costs),
        "refresh_ms_p50": round(statistics.median(ms), 1),
        "refresh_ms_p95": round(ms[int(0.95 * (len(ms) - 1))], 1),
        "refresh_ms_max": round(ms[-1], 1),
        "refresh_cpu_ms_p50": round(statistics.median(cpu_ms), 1),
        "refresh_cpu_ms_p95": round(cpu_ms[int(0.95 * (len(cpu_ms) - 1))], 1),
        "cells_updated_per_refresh": round(cells / max(len(costs), 1)),
        "cells_in_table": rows * 10,
        "key_press_ms_p50": round(statistics.median(keys) * 1000, 1),
        "key_press_ms_max": round(max(keys) * 1000, 1),
    }


def run(duration: float = 10.0, processes: int = 1000, rate: float = 100_000,
        size=(160, 50), compare: bool = True) -> dict:
    """Everything this benchmark measures, as one dict.  With `compare`, the
    same load again with tables rebuilt at each refresh, side by side."""
    result = {
        "machine_cpus": os.cpu_count(),
        "model_records_per_s": round(model_throughput(processes=processes)),
        "snapshot_ms": round(snapshot_ms(processes), 1),
        "under_load": asyncio.run(_under_load(duration, processes, rate, size)),
    }
    if compare:
        rebuild = asyncio.run(_under_load(duration, processes, rate, size, RebuildApp))
        result["rebuild_every_refresh"] = rebuild
        result["refresh_cpu_ratio_rebuild_vs_top"] = round(
            rebuild["refresh_cpu_ms_p50"] / max(result["under_load"]["refresh_cpu_ms_p50"], 0.1),
            1)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--processes", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100_000)
    p.add_argument("--no-compare", action="store_true",
                   help="skip the side-by-side run with tables rebuilt at each refresh")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    result = run(a.duration, a.processes, a.rate, compare=not a.no_compare)
    if a.json:
        print(json.dumps(result))
        return
    rebuild = result.pop("rebuild_every_refresh", None)
    load = result.pop("under_load")
    width = 36
    for k, v in result.items():
        print(f"{k:<{width}} {v:,}")
    print(f"{'under load':<{width}} {'top':>12} {'rebuild' if rebuild else '':>12}")
    for k, v in load.items():
        other = f"{rebuild[k]:>12,}" if rebuild else ""
        print(f"  {k:<{width - 2}} {v:>12,} {other}")


if __name__ == "__main__":
    main()
