"""A million-move trace is reported in bounded memory, streamed.

This is a memory-boundedness check, not a benchmark: the bounds are
generous (bench/report_large.py measures; on the 2-core development machine
a 1,000,000-move, 631 MiB trace took 16 s and 32 MiB peak RSS under a load
average of 5)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.helpers import ROOT

MOVES = 1_000_000
MAX_RSS_MB = 150          # the file is ~660 MB: holding it would blow this many times over
MAX_SECONDS = 300
GENERATE = """
import json, sys
from tests.tracegen import write_large_trace
per_pid = write_large_trace(sys.argv[1], int(sys.argv[2]))
print(json.dumps([[list(k), n] for k, n in per_pid.items()]))
"""


def run_measured(args: list[str]) -> tuple[int, str, float, float]:
    """Run the CLI; (exit status, stdout, seconds, peak RSS in MiB)."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "uffdtrace", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # read stdout before waiting (a full pipe would block the child)
    out = proc.stdout.read()
    proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out.decode(), time.monotonic() - start, usage.ru_maxrss / 1024


def test_million_move_report_is_streamed_in_bounded_memory(tmp_path):
    path = tmp_path / "million.jsonl"
    # Generated in a child: ru_maxrss of the measured child counts what it
    # inherited before exec, so this process must stay small.
    gen = subprocess.run([sys.executable, "-c", GENERATE, str(path), str(MOVES)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    per_pid = {tuple(k): n for k, n in json.loads(gen.stdout)}
    size_mb = path.stat().st_size / 2 ** 20
    rc, out, seconds, rss = run_measured(["report", str(path), "--json"])
    print(f"\nreport of {MOVES} moves ({size_mb:.0f} MiB): {seconds:.1f} s, "
          f"peak RSS {rss:.0f} MiB")
    assert rc == 0
    summary = json.loads(out)
    assert summary["totals"]["moves"] == MOVES == summary["totals"]["move_records"]
    assert summary["totals"]["failed"] == sum(n for (_, err), n in per_pid.items() if err)
    assert len(summary["worst_latencies"]) == 10
    assert rss < MAX_RSS_MB < size_mb / 2, (rss, size_mb)
    assert seconds < MAX_SECONDS
