"""The bench's workloads on the real kernel: a move loop must keep moving
beside the bystanders the same process forks (bench/workloads.py)."""
from __future__ import annotations

from bench.workloads import bystander_workloads, move_workloads


def test_move_loops_survive_a_forking_bystander():
    """A bystander runs in a forked child; without MADV_DONTFORK on the move
    areas that fork left every ping-pong page shared-then-not-exclusive, and
    every move after it failed EBUSY."""
    fork = next(w for w in bystander_workloads() if w.key == "fork")
    moves = move_workloads()[:2]          # 4 KiB and 64-page ping-pongs
    for w in moves:
        w.setup()
    try:
        fork.setup()
        fork.run(10)
        for w in moves:
            sample = w.run(4 * w.slots)   # two full passes over every page
            assert sample.failed == 0, (w.label, sample.errors)
    finally:
        fork.close()
        for w in moves:
            w.close()
