"""Runs of identical failures (repeat records) and livelocks, through every
consumer: report, export, top's model and detail, trace lines, and the
livelock detector fed what a session delivers."""
from __future__ import annotations

import errno as E
import io
import json

import pytest

from tests.tracegen import (LOST_RUN_ERRNO, PAGE, T0, failed, ok, repeat, storm_items, write_trace)
from uffdtrace.chrometrace import export
from uffdtrace.commands.report import render
from uffdtrace.commands.trace import format_livelock, format_repeat
from uffdtrace.culprits import PIN_REGISTRATION, PinCulprit
from uffdtrace.livelock import LivelockDetector
from uffdtrace.native import lib
from uffdtrace.taxonomy import OBSERVED
from uffdtrace.top.detail import describe_failure
from uffdtrace.top.model import TopModel
from uffdtrace.top.view import failure_cells
from uffdtrace.tracereader import iter_records
from uffdtrace.tracesummary import summarize
from uffdtrace.walkstate import WalkedPage

pytestmark = pytest.mark.unit

# storm_items(): 12 runs of 1000 EBUSY (gc-thread), 1 success, 42 EEXIST and
# 1 ENOENT (compactor), 7 failures of a run whose first record was lost
GC_FAILURES, COMPACTOR_EEXIST, LOST = 12_000, 42, 7


@pytest.fixture
def storm_trace(tmp_path):
    path = tmp_path / "storm.jsonl"
    write_trace(path, storm_items())
    return path


def test_report_counts_every_repeated_failure_under_its_cause(storm_trace):
    s = summarize(str(storm_trace))
    causes = {c["cause"]: c for c in s["causes"]}
    assert causes["page_pinned"]["count"] == GC_FAILURES
    assert causes["page_pinned"]["evidence"] == {"observed": GC_FAILURES}
    assert causes["dst_populated"]["count"] == COMPACTOR_EEXIST
    assert causes["src_hole"]["count"] == 1
    t = s["totals"]
    failed_total = GC_FAILURES + COMPACTOR_EEXIST + 1 + LOST
    assert t["failed"] == failed_total and t["failures_recorded"] == failed_total
    assert t["repeated_failures"] == 12 * 999 + 41 + LOST
    # exact accounting: no "the kernel counted ..." note; the lost first one is said
    assert not any("the kernel counted" in n for n in t["notes"])
    assert any(f"{LOST} repeated failures whose first failure was not recorded" in n
               for n in t["notes"])
    pinners = {p["pid"]: p for p in s["pinners"]}
    assert pinners[300]["blocked_moves"] == GC_FAILURES
    text = render(s)
    assert f"of which {12 * 999 + 41 + LOST} as repeat counts" in text


def test_report_says_when_the_kernel_counted_failures_the_trace_lacks(tmp_path):
    path = tmp_path / "lossy.jsonl"
    kept = failed(E.EEXIST, "dst_populated", ts_ns=T0 + 1_000_000)
    lost = [failed(E.EEXIST, "dst_populated", ts_ns=T0 + 2_000_000 + i) for i in range(5)]
    write_trace(path, [kept, repeat(kept, 10)], extra_moves=lost, drops=5)
    t = summarize(str(path))["totals"]
    assert t["failed"] == 16 and t["failures_recorded"] == 11
    assert any("the kernel counted 16 failures, the trace accounts for 11" in n
               for n in t["notes"])


def test_a_repeat_links_only_to_its_threads_latest_failure(tmp_path):
    # thread 100's run was opened by its second failure; a repeat naming the
    # first (already superseded) links to nothing
    path = tmp_path / "t.jsonl"
    a = failed(E.EEXIST, "dst_populated", ts_ns=T0 + 1_000_000)
    b = failed(E.ENOENT, "src_hole", ts_ns=T0 + 2_000_000)
    stale = repeat(None, 3, tid=100, first_ts_ns=a.event.ts_ns)
    write_trace(path, [a, b, stale])
    s = summarize(str(path))
    assert {c["cause"]: c["count"] for c in s["causes"]} == {"dst_populated": 1,
                                                             "src_hole": 1}
    assert any("3 repeated failures whose first failure was not recorded" in n
               for n in s["totals"]["notes"])


def test_export_draws_a_run_as_one_slice_with_its_count(storm_trace):
    out = io.StringIO()
    stats = export(str(storm_trace), out)
    assert stats["repeat_runs"] == 14 and stats["repeated_failures"] == 12 * 999 + 41 + LOST
    events = json.loads(out.getvalue())["traceEvents"]
    runs = [e for e in events if e.get("name", "").endswith("×999")]
    assert len(runs) == 12
    assert all(e["ph"] == "X" and e["args"]["cause"] == "page_pinned" and
               e["args"]["count"] == 999 and e["tid"] == 401 for e in runs)
    lost = [e for e in events if e.get("name") == f"UFFDIO_MOVE failure ×{LOST}"]
    assert len(lost) == 1 and "cause" not in lost[0]["args"]
    bin_s = json.loads(out.getvalue())["otherData"]["counter_bin_ms"] / 1000
    counted = sum(e["args"]["failed"] for e in events if e.get("name") == "moves/s") * bin_s
    assert round(counted) == 12_000 + COMPACTOR_EEXIST + 1 + LOST


def test_top_counts_repeats_and_shows_runs_and_the_livelock(storm_trace):
    m = TopModel("storm")
    records = list(iter_records(str(storm_trace)))
    # while the livelock is ongoing: header data and the process flagged
    upto = next(i for i, r in enumerate(records)
                if r["type"] == "livelock" and r["state"] == "ongoing")
    m.feed(records[:upto + 1])
    snap = m.snapshot()
    assert [(lv["tid"], lv["cause"]) for lv in snap.livelocks] == [(401, "page_pinned")]
    gc = next(p for p in snap.processes if p.pid == 400)
    assert gc.livelocked and gc.failures == GC_FAILURES
    m.feed(records[upto + 1:])
    snap = m.snapshot()
    assert snap.livelocks == ()
    assert not next(p for p in snap.processes if p.pid == 400).livelocked
    assert dict(snap.causes)["page_pinned"] == GC_FAILURES
    rows = [r for r in snap.failures_recent if r.repeats]
    assert [r.repeats for r in rows] == [999] * 12 + [41, LOST]
    cells = failure_cells(rows[0])
    assert "page_pinned ×999" in cells
    sections = dict(describe_failure(rows[0].record, rows[0].t, snap.t0_ns, repeats=999))
    assert "999 more failures of this thread identical" in sections["Repeated"][0][1]
    lost = dict(describe_failure(rows[-1].record, rows[-1].t, snap.t0_ns, repeats=LOST))
    assert "first record was lost" in lost["Repeated"][0][1]


def _traced(items):
    return [i for i in items if not hasattr(i, "state")]


def test_trace_lines_name_the_run_and_the_livelock():
    items = storm_items()
    rep = items[1]
    line = format_repeat(rep, T0)
    assert "×999 more like the failure at 0.002" in line and "run ended: time" in line
    lost = format_repeat(items[-1], T0)
    assert "whose first failure was lost" in lost
    livelock = next(i for i in items if getattr(i, "state", None) == "ongoing")
    text = format_livelock(livelock, T0)
    assert "LIVELOCK ongoing: tid 401 failed the same move 12,000 times" in text
    assert "fio" in text and "gc-helper (400/402)" in text


def _page(pfn: int) -> WalkedPage:
    return WalkedPage(addr=0x7f1000000000, entry=0, pfn=pfn, flags=0, refcount=3, mapcount=1,
                      page_mapcount=1, pincount=0, where=lib().UT_PSW_PTE_PRESENT,
                      level=lib().UT_PSL_PAGE, order=0, swp_type=0)


def _gc_failure(tid: int, ts_ns: int, pfn: int = 0x4242, src: int = 0x7f1000000000):
    culprit = PinCulprit(pid=300, tid=300, comm="fio", ts_ns=T0, method="io_uring fixed buffer",
                         longterm=True, source=PIN_REGISTRATION, range=None)
    return failed(E.EBUSY, "page_pinned", OBSERVED, culprit=culprit, pid=400, tid=tid,
                  comm=f"gc-{tid}", ts_ns=ts_ns, src=src, src_state=_page(pfn))


def _runs_of(failure_at, closed_by: int, runs: int = 12) -> list:
    """`runs` runs of 1000 failures, 100 ms apart: failure_at(i) opens run i."""
    items = []
    for i in range(runs):
        m = failure_at(i)
        items += [m, repeat(m, 999, span_ns=99_000_000, closed_by=closed_by)]
    return items


def test_the_detector_flags_a_chain_of_runs_closed_by_time_once():
    d = LivelockDetector(min_s=1.0)
    other = _gc_failure(402, T0 + 10)          # another thread, on the same page
    found = d.feed([other])
    items = _runs_of(lambda i: _gc_failure(401, T0 + 100 + i * 100_000_000),
                     lib().UT_RUN_CLOSED_TIME, runs=11)
    first, ts = items[0], items[-2].event.ts_ns
    found += d.feed(items)
    # flagged by the failure that reaches 1 s: 10 runs of 1000, and it
    assert [(f.state, f.failures) for f in found] == [("ongoing", 10_001)]
    assert found[0].first is first and found[0].parties == ((400, 402, "gc-402"),)
    assert found[0].seconds >= 1.0
    ended = d.feed([ok(pid=400, tid=401, ts_ns=ts + 200_000_000)])
    assert [(f.state, f.failures) for f in ended] == [("ended", 11_000)]
    assert d.finish() == []


def test_moves_of_other_pages_are_no_livelock():
    # a GC making progress: each run a move of another page, failing the same way
    d = LivelockDetector(min_s=1.0)
    items = _runs_of(lambda i: _gc_failure(401, T0 + i * 100_000_000, src=0x7f1000000000 +
                                           i * PAGE, pfn=0x4242 + i),
                     lib().UT_RUN_CLOSED_DIFFERENT)
    assert d.feed(items) == [] and d.finish() == []


def test_a_run_the_kernel_closed_for_a_page_fact_does_not_break_the_chain():
    # the same move, failing for the same cause, on a page the kernel saw
    # change (another pfn: the kernel closes its run as `different`)
    d = LivelockDetector(min_s=1.0)
    items = _runs_of(lambda i: _gc_failure(401, T0 + i * 100_000_000, pfn=0x4242 + i % 2),
                     lib().UT_RUN_CLOSED_DIFFERENT)
    assert [(f.state, f.failures) for f in d.feed(items)] == [("ongoing", 10_001)]
    assert [(f.state, f.failures) for f in d.finish()] == [("ended", 12_000)]


def test_another_errno_for_the_same_move_breaks_the_chain():
    d = LivelockDetector(min_s=1.0)
    items = _runs_of(lambda i: _gc_failure(401, T0 + i * 100_000_000), lib().UT_RUN_CLOSED_TIME)
    other = failed(E.EEXIST, "dst_populated", OBSERVED, pid=400, tid=401, src=0x7f1000000000,
                   ts_ns=T0 + 499_500_000)
    items[10:10] = [other]      # after run 4, before run 5: no chain reaches 1 s
    assert d.feed(items) == []


def test_a_livelock_still_ongoing_when_tracing_ends_is_ended_by_finish():
    d = LivelockDetector(min_s=0.5)
    m = _gc_failure(401, T0)
    assert [f.state for f in d.feed([m, repeat(m, 5000, span_ns=600_000_000)])] == ["ongoing"]
    assert [f.state for f in d.finish()] == ["ended"]


def test_lost_run_errno_is_what_the_generated_aggregates_count(storm_trace):
    agg = [r for r in iter_records(str(storm_trace)) if r["type"] == "aggregates"][-1]
    lost = [o for o in agg["outcomes"] if o["pid"] == 600]
    assert lost == [{"pid": 600, "errno": LOST_RUN_ERRNO, "partial": False, "count": LOST}]
