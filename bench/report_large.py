#!/usr/bin/env python3
"""Time and peak memory of `uffdtrace report` and `uffdtrace export
--perfetto` on a large generated trace, side by side with the floor of any
Python reader: a loop that only json-parses each line.

    .venv/bin/python bench/report_large.py [--moves 1000000] [--keep DIR]

Each command runs in its own process; peak RSS is that process's ru_maxrss.
The trace comes from tests/tracegen.py (the real writer's records: 1 in 100
moves a diagnosed failure, 4 processes).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.tracegen import write_large_trace  # noqa: E402

BASELINE = "import json,sys\nfor line in open(sys.argv[1], 'rb'): json.loads(line)\n"


def measure(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one command run to completion."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {err.decode()[-500:]}")
    return time.monotonic() - start, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=1_000_000)
    ap.add_argument("--keep", metavar="DIR", help="write the trace here and keep it")
    args = ap.parse_args()
    directory = Path(args.keep or tempfile.mkdtemp(prefix="uffdtrace-bench-"))
    trace = directory / f"{args.moves}.jsonl"
    start = time.monotonic()
    write_large_trace(trace, args.moves)
    size = trace.stat().st_size / 2 ** 20
    print(f"trace: {args.moves} moves, {size:.0f} MiB, generated in "
          f"{time.monotonic() - start:.1f} s; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    py = sys.executable
    runs = [
        ("json.loads per line (floor)", [py, "-c", BASELINE, str(trace)]),
        ("uffdtrace report --json", [py, "-m", "uffdtrace", "report", str(trace), "--json"]),
        ("uffdtrace report (text)", [py, "-m", "uffdtrace", "report", str(trace)]),
        ("uffdtrace export --perfetto",
         [py, "-m", "uffdtrace", "export", "--perfetto", str(trace), "-o",
          str(directory / "out.json")]),
    ]
    floor = None
    print(f"{'command':<32} {'seconds':>8} {'us/move':>8} {'x floor':>8} {'peak RSS':>10}")
    for name, argv in runs:
        seconds, rss = measure(argv)
        floor = floor or seconds
        print(f"{name:<32} {seconds:>8.1f} {seconds / args.moves * 1e6:>8.1f} "
              f"{seconds / floor:>8.2f} {rss:>7.0f} MiB", flush=True)
    if not args.keep:
        for f in directory.iterdir():
            f.unlink()
        directory.rmdir()


if __name__ == "__main__":
    main()
