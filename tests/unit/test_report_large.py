"""A million-move trace is reported in bounded memory, streamed.

This is a memory-boundedness check, not a benchmark: the bounds are
generous (bench/report_large.py measures; on the 2-core development machine
a 1,000,000-move, 631 MiB trace took 16 s and 32 MiB peak RSS under a load
average of 5)."""
from __future__ import annotations

import json
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


# ru_maxrss of a child counts the memory it had before exec, i.e. whatever
# the forking process had: a small fresh interpreter forks the measured one.
MEASURE = """
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
out = proc.stdout.read()
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "rss_kb": usage.ru_maxrss,
                  "out": out.decode()}))
"""


def run_measured(args: list[str]) -> tuple[int, str, float, float]:
    """Run the CLI; (exit status, stdout, seconds, peak RSS in MiB)."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "uffdtrace",
                           *args], cwd=ROOT, capture_output=True, text=True, check=True)
    m = json.loads(proc.stdout)
    return m["rc"], m["out"], time.monotonic() - start, m["rss_kb"] / 1024


def test_million_move_report_is_streamed_in_bounded_memory(tmp_path):
    path = tmp_path / "million.jsonl"
    # generated in a child too, so this process stays small and fast to fork
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
