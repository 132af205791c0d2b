"""The top model: fed trace records, checked against the same records
counted independently (tests/tui/data/mixed.jsonl is a real recording of
the `mixed` workload)."""
from __future__ import annotations

import errno

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from uffdtrace.records import effective_cause
from uffdtrace.top.model import TopModel
from uffdtrace.top.stats import LatencyHistogram, RateMeter, bucket_bounds, latency_bucket

MIXED = Path(__file__).resolve().parent.parent / "tui" / "data" / "mixed.jsonl"


def records(path=MIXED) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def move(pid, t, *, ret=0, length=4096, moved=None, comm="app", latency_ns=1000, tlb=0,
         cause=None, t0=10**12):
    r = {"type": "move", "pid": pid, "tid": pid, "comm": comm, "ts_ns": t0 + int(t * 1e9),
         "latency_ns": latency_ns, "len": length, "ret": ret, "tlb_flushes": tlb,
         "move": length if ret == 0 else (moved if moved is not None else ret),
         "errno": None if ret == 0 else errno.errorcode[-ret]}
    if ret:
        r["diagnosis"] = {"cause": cause or "busy_unknown", "underlying": None,
                          "evidence": "errno"}
    return r


HEADER = {"type": "header", "format": "uffdtrace-trace", "tier": "tracepoint",
          "kernel_release": "6.x", "filters": {"failed_only": False}, "start_ktime_ns": 10**12}


# -- building blocks ---------------------------------------------------------

def test_rate_meter_counts_the_last_window_only():
    m = RateMeter()
    for i in range(1000):                # 100/s for 10 s
        m.add(i / 100)
    assert m.rate(10.0, 1.0) == pytest.approx(100, rel=0.05)
    assert m.rate(12.0, 1.0) == 0        # nothing in (11, 12]
    assert m.total == 1000


def test_rate_meter_young_series_is_not_inflated():
    m = RateMeter()
    for i in range(10):                  # 10 moves in the last 0.1 s of a 1 s window
        m.add(5.0 + i / 100)
    assert m.rate(5.1, 1.0) == pytest.approx(10)
    # ...but the window never reaches back before the start of the trace
    assert m.rate(5.1, 1.0, since=4.6) == pytest.approx(10 / 0.5)


def test_rate_meter_from_cumulative_counter():
    def meter(upto):
        m = RateMeter()
        for t, total in [(1, 100), (2, 300), (3, 300), (4, 700)][:upto]:
            m.set(t, total)
        return m
    assert meter(4).rate(4, 1.0) == 400
    assert meter(3).rate(3, 1.0) == 0
    assert meter(2).rate(2, 1.0) == 200


def test_latency_buckets_cover_every_value_once():
    for ns in list(range(0, 300)) + [1023, 1024, 1025, 10**6, 2**40 + 7]:
        low, high = bucket_bounds(latency_bucket(ns))
        assert low <= ns < high, ns


def test_latency_percentiles_within_bucket_precision():
    rng = random.Random(5)
    values = [int(rng.lognormvariate(9, 1.2)) for _ in range(20000)]
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    values.sort()
    for q in (0.5, 0.9, 0.99):
        exact = values[int(q * len(values)) - 1]
        assert h.percentile(q) == pytest.approx(exact, rel=0.125)
    assert LatencyHistogram().percentile(0.5) is None


# -- the model on a real recording -----------------------------------------

def test_totals_causes_and_processes_match_the_trace():
    recs = records()
    moves = [r for r in recs if r["type"] == "move"]
    last_aggregates = [r for r in recs if r["type"] == "aggregates"][-1]
    m = TopModel("test")
    m.feed(recs)
    s = m.snapshot()

    kernel_total = sum(o["count"] for o in last_aggregates["outcomes"])
    kernel_failed = sum(o["count"] for o in last_aggregates["outcomes"] if o["errno"])
    assert s.kernel_totals
    assert s.moves == max(kernel_total, len(moves))
    assert s.failures == max(kernel_failed, sum(r["ret"] < 0 for r in moves))
    assert s.drops == last_aggregates["counters"]["ringbuf_drops"]
    assert s.tier == "tracepoint" and s.kernel == recs[0]["kernel_release"]

    want_causes = Counter(r["diagnosis"]["underlying"] or r["diagnosis"]["cause"]
                          for r in moves if r["ret"] < 0)
    assert dict(s.causes) == dict(want_causes)
    assert "page_pinned" in want_causes          # the recording has the interesting case

    per_pid = Counter(r["pid"] for r in moves)
    assert {p.pid for p in s.processes} == set(per_pid)
    for p in s.processes:
        mine = [r for r in moves if r["pid"] == p.pid]
        assert p.moves == len(mine)
        assert p.failures == sum(r["ret"] < 0 for r in mine)
        assert dict(p.causes) == dict(Counter(effective_cause(r["diagnosis"])
                                              for r in mine if r["ret"] < 0))
        moved_pages = sum(r["len"] if r["ret"] == 0 else max(r["move"], 0)
                          for r in mine) // 4096
        if moved_pages:
            assert p.tlb_per_page == pytest.approx(sum(r["tlb_flushes"] for r in mine)
                                                   / moved_pages)
        lat = sorted(r["latency_ns"] for r in mine)
        assert p.p50_us * 1000 == pytest.approx(lat[(len(lat) + 1) // 2 - 1], rel=0.125)

    failures = [r for r in moves if r["ret"] < 0]
    assert [f.record for f in s.failures_recent] == failures
    assert s.elapsed_s == pytest.approx(max(last_aggregates["elapsed_s"],
                                            (moves[-1]["ts_ns"] - recs[0]["start_ktime_ns"]) / 1e9))
    kernel_hist = {int(b): n for b, n in last_aggregates["histograms"]["latency_log2"].items()}
    assert dict(s.latency_log2) == kernel_hist
    assert len(s.sparkline) == int(s.elapsed_s)


def test_without_aggregates_totals_come_from_events():
    recs = [r for r in records() if r["type"] != "aggregates"]
    m = TopModel()
    m.feed(recs)
    s = m.snapshot()
    moves = [r for r in recs if r["type"] == "move"]
    assert not s.kernel_totals
    assert s.moves == len(moves)
    assert sum(n for _, n in s.latency_log2) == len(moves)


def test_rates_prefer_the_kernel_counters():
    m = TopModel(rate_window=1.0)
    # events: only failures are sent (--failed-only), 10/s; kernel: 1000 moves/s
    m.feed([{**HEADER, "filters": {"failed_only": True}}])
    for i in range(50):
        m.feed([move(7, i / 10, ret=-16)])
    for t in range(1, 6):
        m.feed([{"type": "aggregates", "elapsed_s": float(t), "counters": {"ringbuf_drops": 3},
                 "outcomes": [{"pid": 7, "errno": None, "partial": False, "count": 1000 * t},
                              {"pid": 7, "errno": "EBUSY", "partial": False,
                               "count": 10 * t}]}])
    s = m.snapshot()
    assert s.moves_per_s == pytest.approx(1010)
    assert s.moves == 5050 and s.failures == 50
    assert s.mib_per_s is None                   # successes were never seen
    assert s.drops == 3
    (p,) = s.processes
    assert p.moves_per_s == pytest.approx(1010) and p.mib_per_s is None
    assert s.sparkline == (1010.0,) * 5


def test_event_rates_and_bytes():
    m = TopModel(rate_window=1.0)
    m.feed([HEADER] + [move(1, i / 200, length=8192) for i in range(400)]      # 200/s
           + [move(2, 1 + i / 50, ret=-11, moved=4096, cause="partial") for i in range(50)])
    s = m.snapshot()
    by_pid = {p.pid: p for p in s.processes}
    assert by_pid[1].moves_per_s == pytest.approx(200, rel=0.02)
    assert by_pid[1].mib_per_s == pytest.approx(200 * 8192 / 2**20, rel=0.02)
    assert by_pid[2].moves_per_s == pytest.approx(50, rel=0.05)
    assert by_pid[2].mib_per_s == pytest.approx(50 * 4096 / 2**20, rel=0.05)
    assert s.mib_quality == "exact"


def test_sampled_successes_estimate_bytes_and_drops_add_up():
    m = TopModel(rate_window=1.0)
    m.feed([{**HEADER, "success_sample": 10}]
           + [move(1, i / 20, length=4096) for i in range(40)])       # 20 sampled/s
    s = m.snapshot()
    assert s.mib_quality == "estimated"
    assert s.mib_per_s == pytest.approx(20 * 10 * 4096 / 2**20, rel=0.05)
    # a failure counts once, a sampled success ten times: the P50 stays a success's
    m.feed([move(1, 2.0, ret=-17, latency_ns=900_000) for _ in range(45)])   # > 40 records
    (p,) = m.snapshot().processes
    assert p.p50_us < 10 and p.tlb_per_page == 0
    m.feed([{"type": "aggregates", "elapsed_s": 2.0,
             "counters": {"ringbuf_drops": 2, "success_drops": 5, "recursion_misses": 3},
             "outcomes": []}])
    s = m.snapshot()
    assert s.drops == 10 and s.mib_quality == "at least"


def test_untrusted_records_are_counted_not_fatal():
    m = TopModel()
    m.feed([HEADER, {"type": "move", "pid": "x"}, {"type": "move"}, {"type": "aggregates"},
            {"type": "future-kind"}, move(3, 0.5)])
    s = m.snapshot()
    assert s.malformed == 3
    assert [p.pid for p in s.processes] == [3]


def test_comm_follows_exec():
    m = TopModel()
    m.feed([HEADER, move(4, 0.1, comm="before"), move(4, 0.2, comm="after")])
    assert m.snapshot().processes[0].comm == "after"


def test_failure_and_error_states():
    m = TopModel()
    m.finish("end of trace")
    m.fail("boom")
    s = m.snapshot()
    assert (s.finished, s.error) == ("end of trace", "boom")


def test_the_detail_of_a_move_says_which_faulting_threads_it_woke(tmp_path):
    from tests.tracegen import FAULTER, T0, wake_items, write_trace
    from uffdtrace.top.detail import describe_failure
    from uffdtrace.tracereader import iter_records
    path = tmp_path / "wake.jsonl"
    write_trace(path, wake_items())
    m = TopModel()
    m.feed(list(iter_records(str(path))))
    snap = m.snapshot()
    rows = [r for r in snap.failures_recent if r.record.get("woken_threads")]
    # the two successes get rows of their own; the EEXIST failure has its row
    assert [r.cause for r in rows] == ["woke_threads", "woke_threads", "dst_populated"]
    sections = dict(describe_failure(rows[0].record, rows[0].t, snap.t0_ns))
    lines = dict(sections["Faulting threads (asleep in its range when it began)"])
    assert lines[f"tid {FAULTER}"] == (
        "pid 600 (faulter) faulted at 0x7f2000000000: waited at least 50 ms (first seen "
        "asleep: no hook on page faults); woken by this move")
    # the DONTWAKE move: the UFFDIO_WAKE 20 ms after it woke its thread
    lines = dict(dict(describe_failure(rows[1].record, rows[1].t, snap.t0_ns))[
        "Faulting threads (asleep in its range when it began)"])
    assert lines[f"tid {FAULTER + 1}"].endswith(
        f"waited at least 90 ms (first seen asleep: no hook on page faults); woken by "
        f"UFFDIO_WAKE of tid 600 (monitor) {(T0 + 3_040_000_000 - snap.t0_ns) / 1e9:.6f} s")
    lines = dict(dict(describe_failure(rows[2].record, rows[2].t, snap.t0_ns))[
        "Faulting threads (asleep in its range when it began)"])
    assert lines[f"tid {FAULTER + 2}"].endswith("left asleep (the move failed before its page)")


def test_a_faulting_threads_comm_is_made_printable(tmp_path):
    # (the UI renders detail lines as Text, never as markup: "[red]" stays text)
    import dataclasses
    from tests.tracegen import T0, DST, ok, wake, waiter, write_trace
    from uffdtrace.top.detail import describe_failure
    from uffdtrace.tracereader import iter_records
    evil = dataclasses.replace(waiter(700, DST, T0), comm="[red]x\x1b")
    path = tmp_path / "w.jsonl"
    write_trace(path, [wake(T0 + 5, DST, (evil,)), ok(pid=600, tid=600, ts_ns=T0 + 5, dst=DST)])
    m = TopModel()
    m.feed(list(iter_records(str(path))))
    row = next(r for r in m.snapshot().failures_recent if r.cause == "woke_threads")
    text = "\n".join(v for _, lines in describe_failure(row.record, row.t) for _, v in lines)
    assert "\x1b" not in text and "[red]x\\x1b" in text


def test_woken_threads_reach_the_detail_whichever_record_comes_first(tmp_path):
    from tests.tracegen import wake_items, write_trace
    from tests.unit.test_wakes import moves_first
    from uffdtrace.tracereader import iter_records

    def woken(items):
        path = tmp_path / "w.jsonl"
        write_trace(path, items)
        m = TopModel()
        m.feed(list(iter_records(str(path))))
        return [(r.cause, [w["tid"] for w in r.record["woken_threads"]])
                for r in m.snapshot().failures_recent if "woken_threads" in r.record]

    assert woken(moves_first(wake_items())) == woken(wake_items())
    assert [tids for _, tids in woken(wake_items())] == [[610], [611], [612]]
