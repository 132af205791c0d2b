"""The options that make tracing cheap, on the running kernel: success
sampling (every failure still sent, in-kernel totals exact), the separate
success ring buffer (a flood of successes cannot crowd a failure out) and
leaving out the cost-statistics hooks."""
from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import require_bcc_root
from tests.helpers import trace_records, uffdtrace
from uffdtrace.native import PAGE_SIZE, Mapping, Uffd, lib

SLOTS = 64
CALLS = 200 * SLOTS      # whole round trips of the ping-pong
FAIL_EVERY = 50          # planned failures (dst populated): CALLS // FAIL_EVERY of them


@pytest.fixture(scope="module")
def bcc_ready():
    require_bcc_root()


def storm():
    """CALLS moves from this process, every FAIL_EVERY-th one failing."""
    with Uffd() as u, Mapping(SLOTS * PAGE_SIZE) as a, Mapping(SLOTS * PAGE_SIZE) as b:
        a.fill()
        u.register(a)
        u.register(b)
        return u.move_loop(a, b, PAGE_SIZE, CALLS, fail_every=FAIL_EVERY)


# Room for every success of a storm: these tests drain only after it (the
# default buffer holds fewer records than CALLS; overflow is tested apart).
ROOMY = 4096


def traced_storm(**session_options):
    from uffdtrace.session import Session
    with Session(pid=os.getpid(), **{"success_ringbuf_pages": ROOMY, **session_options}) as s:
        s.start()
        loop = storm()
        moves = [m.event for m in s.drain()]
        return loop, moves, s.counters(), s.outcomes(), s.histograms()


@pytest.mark.parametrize("sample", [1, 10])
def test_every_failure_sent_and_totals_exact(bcc_ready, sample):
    loop, moves, counters, outcomes, hist = traced_storm(success_sample=sample)
    assert loop.failed == CALLS // FAIL_EVERY and loop.ok == CALLS - loop.failed
    failures = [m for m in moves if m.failed]
    successes = [m for m in moves if not m.failed]
    # every failure, as the kernel returned it
    assert len(failures) == loop.failed
    assert {m.errno for m in failures} == {loop.first_errno}
    # in-kernel totals count every move, sampled or not
    assert counters["moves_entered"] == CALLS
    # nothing lost: no full ring buffer, and no program run the kernel skipped
    # (read from each program's fdinfo; only recursion into a running
    # program skips one, which nothing here causes)
    assert counters["success_drops"] == counters["ringbuf_drops"] == 0
    assert counters["recursion_misses"] == 0
    assert counters["successes_unsent"] + len(successes) == loop.ok
    assert counters["events_sent"] == len(moves)
    by_errno = {o["errno"]: o["count"] for o in outcomes if o["pid"] == os.getpid()}
    assert by_errno == {None: loop.ok, loop.first_errno: loop.failed}
    assert sum(hist["latency_log2"].values()) == CALLS
    assert sum(hist["size_log2"].values()) == CALLS
    sampled = lib().UT_F_SAMPLED
    assert not any(m.flags & sampled for m in failures)
    if sample == 1:
        assert len(successes) == loop.ok and counters["successes_unsent"] == 0
        assert not any(m.flags & sampled for m in successes)
    else:
        # 1 in 10 at random: expected 1254 of 12544, sd ~34; 8 sd either side
        expected = loop.ok / sample
        assert abs(len(successes) - expected) < 8 * (expected * (1 - 1 / sample)) ** 0.5
        assert all(m.flags & sampled for m in successes)


def test_failed_only_sends_no_success_but_counts_them(bcc_ready):
    from uffdtrace.session import Session
    with Session(pid=os.getpid(), failed_only=True) as s:
        s.start()
        loop = storm()
        moves = [m.event for m in s.drain()]
        counters = s.counters()
    assert len(moves) == loop.failed and all(m.failed for m in moves)
    assert counters["successes_unsent"] == loop.ok


def test_successes_cannot_crowd_out_failures(bcc_ready):
    # A one-page success buffer, never drained during the storm, overflows;
    # failures have their own buffer and all arrive.
    loop, moves, counters, _, _ = traced_storm(success_ringbuf_pages=1)
    assert counters["success_drops"] > 0
    assert counters["ringbuf_drops"] == 0
    assert len([m for m in moves if m.failed]) == loop.failed
    successes = len([m for m in moves if not m.failed])
    assert successes + counters["success_drops"] == loop.ok


def test_record_header_says_successes_are_sampled(tmp_path, bcc_ready):
    trace = tmp_path / "t.jsonl"
    proc = uffdtrace("record", "-o", str(trace), "--sample-successes", "7", "--",
                     sys.executable, "-m", "uffdtrace", "workload", "-s", "storm",
                     "--iterations", "7000")
    assert proc.returncode == 0, proc.stderr
    records = trace_records(trace)
    assert records[0]["type"] == "header" and records[0]["success_sample"] == 7
    moves = [r for r in records if r["type"] == "move"]
    assert moves and all(r["flags"] & lib().UT_F_SAMPLED for r in moves)
    counters = [r for r in records if r["type"] == "aggregates"][-1]["counters"]
    assert counters["moves_entered"] == 7000
    assert counters["successes_unsent"] + len(moves) == 7000
    assert "sampled 1 in 7" in proc.stderr


def test_sample_successes_must_be_positive():
    proc = uffdtrace("record", "-o", "/dev/null", "--sample-successes", "0")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "uffdtrace: --sample-successes must be >= 1 (1 = every success)"


@pytest.mark.parametrize("cost_stats", [True, False])
def test_cost_stats_hooks_and_fields(bcc_ready, cost_stats):
    from uffdtrace.session import Session
    with Session(pid=os.getpid(), cost_stats=cost_stats, success_ringbuf_pages=ROOMY) as s:
        s.start()
        probes = s.probes
        loop = storm()
        moves = [m.event for m in s.drain()]
    assert len(moves) == CALLS
    raw = {"raw:tlb_flush", "raw:mmap_lock_start_locking", "raw:mmap_lock_acquire_returned",
           "raw:contention_begin", "raw:contention_end"}
    assert "syscalls:sys_enter_ioctl" in probes and "syscalls:sys_exit_ioctl" in probes
    assert raw <= set(probes) if cost_stats else not raw & set(probes)
    assert all(m.cost_stats is cost_stats for m in moves)
    flushes = sum(m.tlb_flushes for m in moves if not m.failed)
    if cost_stats:
        # each 4 KiB move of a present page flushes the source page's TLB entry
        assert flushes >= loop.ok
    else:
        assert flushes == 0
