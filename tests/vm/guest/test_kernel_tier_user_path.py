"""The kernel tier as a user meets it, inside the guest: one `uffdtrace
record` of every workload scenario (the `mixed` cycle, then `ksm`, then a
failure storm and a livelock-like retry loop), then `report`, `report
--json`, `export --perfetto` and `top --replay` on that trace -- each exits
0 without a traceback, and says for each scenario the cause, evidence
`observed`, and the pinner's pid and method; every failure of the storms is
accounted for, and the retry loop is flagged as a livelock.  A fault_wake
workload (threads faulting on pages a monitor fills by moves) says which
threads each move or UFFDIO_WAKE woke, with exact waits (tests/wakecheck.py).

One `record --stacks` (one BPF compile: several minutes under TCG) serves
every test here and in test_stacks.py (tests/vm/guest/recording.py).
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

from tests import wakecheck
from tests.helpers import (assert_move_path, evidence_of, expected_cause, failure_story,
                           paired, seen_calls, uffdtrace)
from tests.traceevents import check_trace_events
from tests.vm.guest import recording
from tests.vm.guest.recording import STORMS
from uffdtrace import movepaths
from uffdtrace.records import events_lost
from uffdtrace.tracereader import iter_records


@pytest.fixture(scope="module")
def recorded(kernel_tier_recording):
    """(trace path, the listed workloads' calls each tagged with its scenario,
    pid and setup, in the order made, less any the tracer counted as lost;
    the storms' workload outputs by scenario)."""
    trace = kernel_tier_recording.trace
    calls = []
    for name in recording.LISTED:
        out = kernel_tier_recording.workload(name)
        calls += [{**c, "pid": out["pid"], "setup": out["setup"]} for c in out["calls"]]
    storms = {name: kernel_tier_recording.workload(name) for name in STORMS}
    records = _records(trace)
    moves = [r for r in records if r["type"] == "move"]
    counters = [r for r in records if r["type"] == "aggregates"][-1]["counters"]
    return trace, seen_calls(calls, moves, events_lost(counters)), storms


def _records(trace):
    """As every reader sees them (a `successes` record is its move records)."""
    return list(iter_records(str(trace)))


def _wake_workload(trace) -> dict:
    return json.loads((trace.parent / "fault_wake.json").read_text())


def _storm_pids(storms, trace) -> set[int]:
    """The processes whose moves are not among `calls`: the storms' and the
    fault_wake workload's."""
    return {out["pid"] for out in storms.values()} | {_wake_workload(trace)["pid"]}


def _expected(call: dict, record: dict) -> tuple[str, str | None]:
    if call["scenario"] == "ksm" and record["ret"] == 0:
        return "ok", None   # 6.12 moves pages the workload saw merged (measured)
    return expected_cause(call["scenario"], record["errno"])


def test_every_scenario_recorded_observed_with_its_cause(recorded):
    trace, calls, storms = recorded
    records = _records(trace)
    assert records[0]["tier"] == "kernel" and records[-1]["type"] == "footer"
    moves = sorted((r for r in records if r["type"] == "move"
                    and r["pid"] not in _storm_pids(storms, trace)), key=lambda r: r["ts_ns"])
    assert len(moves) == len(calls)
    seen_events = set()
    for call, m in paired(calls, moves):
        assert (m["dst"], m["src"], m["len"], m["errno"], m["move"]) == \
            (call["dst"], call["src"], call["len"], call["errno"], call["move"])
        d = m["diagnosis"]
        assert (d["cause"], d["underlying"]) == _expected(call, m), (call, d)
        assert d["evidence"] == evidence_of(call["scenario"], "kernel", m["errno"]), (call, d)
        assert not any(k.startswith("scratch") for k in m)   # no kernel pointer leaves
        if call["scenario"] == "pinned":
            c = d["culprit"]
            assert (c["kind"], c["source"], c["pid"], c["longterm"]) == \
                ("pin", "GUP hook", call["pid"], True), c
            assert c["method"].startswith("pin_user_pages"), c
        if call["scenario"] == "ksm" and m["ret"]:
            assert d["culprit"]["kind"] == "ksm"
        if call["scenario"] == "mmap_changing":
            # the uffd's unread event, read at exit: which, and who raised it
            c = d["culprit"]
            (pending,) = [p for s in call["setup"] if s["scenario"] == "mmap_changing"
                          for p in s["pending_events"] if p["tid"] == c["tid"]]
            assert (c["kind"], c["event"], c["pid"]) == \
                ("uffd_event", pending["event"], call["pid"]), c
            assert m["uffd_state"]["mmap_changing"] == 1, m["uffd_state"]
            seen_events.add(c["event"])
        if not m["ret"]:   # question 6: the path it took, question 7: what it split
            facts = next((f for f in call["setup"] if f["scenario"] == call["scenario"]), {})
            assert_move_path(call["scenario"], facts, m, _splits_hooked(records))
    assert seen_events == {"remove", "unmap", "remap", "fork"}


def _hooked(records, *functions: str) -> bool:
    return any(p.split(":", 1)[-1] in functions for p in records[0]["probes"])


def _splits_hooked(records) -> bool:
    return _hooked(records, "split_folio_to_list")


def _pte_steps_hooked(records) -> bool:
    return _hooked(records, "move_pages_ptes", "move_pages_pte")


def test_report_text_and_json(recorded):
    trace, calls, storms = recorded
    text = uffdtrace("report", str(trace), timeout=300)
    assert text.returncode == 0, text.stderr
    assert "kernel tier" in text.stdout and "TOTALS (from in-kernel counters)" in text.stdout
    pinned = next(c for c in calls if c["scenario"] == "pinned")
    assert f"pid {pinned['pid']} " in text.stdout and "via pin_user_pages" in text.stdout

    proc = uffdtrace("report", str(trace), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    moves = [r for r in _records(trace) if r["type"] == "move"
             and r["pid"] not in _storm_pids(storms, trace)]
    want = Counter(r["diagnosis"]["underlying"] or r["diagnosis"]["cause"]
                   for r in moves if r["ret"])
    want_evidence = Counter((r["diagnosis"]["underlying"] or r["diagnosis"]["cause"],
                             r["diagnosis"]["evidence"]) for r in moves if r["ret"])
    for name, (_, cause) in STORMS.items():
        failed = storms[name]["summary"]["failed"]
        want[cause] += failed
        want_evidence[(cause, "observed")] += failed
    assert {c["cause"]: c["count"] for c in s["causes"]} == dict(want)
    for c in s["causes"]:
        assert c["evidence"] == {ev: n for (cause, ev), n in want_evidence.items()
                                 if cause == c["cause"]}, c
    made = len(calls) + sum(out["summary"]["calls"] for out in storms.values()) + \
        _wake_workload(trace)["summary"]["calls"]
    assert s["totals"]["moves"] == made
    assert s["totals"]["failures_recorded"] == s["totals"]["failed"], s["totals"]["notes"]
    pinners = {p["pid"]: p for p in s["pinners"]}
    assert pinners[pinned["pid"]]["method"].startswith("pin_user_pages")
    assert pinners[pinned["pid"]]["blocked_moves"] == 1
    # questions 6, 7: the mixed workload's paths, summed from its records
    mixed_pid = next(c["pid"] for c in calls if c["scenario"] == "thp")
    tally = movepaths.Tally()
    for r in moves:
        if r["pid"] == mixed_pid:
            tally.add(movepaths.paths(r, 4096))
    want = tally.result()
    row = next(r for r in s["move_paths"]["processes"] if r["pid"] == mixed_pid)
    assert (row["counts"], row["thp_splits"], row["split_pages"]) == \
        (want.counts, want.thp_splits, want.split_pages)
    assert row["counts"]["pmd"] > 0, row
    # holes are PTE steps: seen where the PTE step function is not inlined (not 6.12)
    assert (row["counts"]["src_hole"] > 0) == _pte_steps_hooked(_records(trace)), row
    section = text.stdout.split("MOVE PATHS")[1].split("\n\n")[0]
    assert f"pid {mixed_pid} " in section and movepaths.describe(want) in section


def test_export_perfetto(recorded, tmp_path):
    trace, calls, storms = recorded
    out = tmp_path / "all.json"
    proc = uffdtrace("export", "--perfetto", str(trace), "-o", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = check_trace_events(out)["traceEvents"]
    records = _records(trace)
    wake_pid = _wake_workload(trace)["pid"]
    storm_moves = [r for r in records if r["type"] == "move"
                   and r["pid"] in _storm_pids(storms, trace) - {wake_pid}]
    wake_moves = [r for r in records if r["type"] == "move" and r["pid"] == wake_pid]
    repeats = [r for r in records if r["type"] == "repeat"]
    assert sum(e["ph"] == "X" and e.get("cat") != "fault_wait" for e in events) == \
        len(calls) + len(storm_moves) + len(wake_moves) + len(repeats)
    failures = [e["args"] for e in events if e.get("cat") == "uffd_move_failure"]
    assert len(failures) == sum(1 for c in calls if c["errno"]) + len(storm_moves)
    pinned = [a for a in failures if a["underlying"] == "page_pinned"]
    assert pinned and all(a["culprit"]["source"] == "GUP hook" and a["evidence"] == "observed"
                          for a in pinned)
    # each move's path (question 6), as its record says (not a repeat's slice,
    # which has a "count", nor a faulting thread's wait)
    slices = [e for e in events if e["ph"] == "X" and e.get("cat") == "uffd_move"
              and "count" not in e["args"]]
    assert slices and all(e["args"]["paths"] for e in slices)
    holes = [e for e in slices if "src holes skipped" in e["args"]["paths"]]
    assert len(holes) == sum(c["scenario"] == "src_hole_allowed" for c in calls) * \
        _pte_steps_hooked(records)


@pytest.mark.asyncio
async def test_top_replay(recorded):
    from tests.tui.screen import screen_text
    from tests.tui.topapp import running
    trace, calls, storms = recorded
    async with running(trace) as (app, pilot):
        snap = app.snapshot
        assert app.model.malformed == 0 and app.model.error is None
        assert snap.tier == "kernel"
        storm_failures = sum(out["summary"]["failed"] for out in storms.values())
        assert snap.failures == sum(1 for c in calls if c["errno"]) + storm_failures
        await pilot.press("tab")
        row = next(f for f in snap.failures_recent if f.cause == "page_pinned")
        app.focused.move_to_item(str(row.seq))
        await pilot.press("enter")
        await pilot.pause()
        screen = screen_text(app)
        assert "GUP hook" in screen and "observed: seen in the kernel" in screen
        assert "long-term (FOLL_LONGTERM)" in screen


@pytest.mark.parametrize("name", list(STORMS))
def test_storm_failures_all_accounted_for(recorded, name):
    """Identical failures coalesced in the kernel tier too: the move records
    plus repeat counts of the storm's process are exactly what it made."""
    trace, _, storms = recorded
    out = storms[name]
    made = out["summary"]["failed"]
    assert made == out["summary"]["calls"] > 0
    mine = [r for r in _records(trace) if r.get("pid") == out["pid"]]
    moves = [r for r in mine if r["type"] == "move"]
    repeats = [r for r in mine if r["type"] == "repeat"]
    assert repeats and len(moves) + sum(r["count"] for r in repeats) == made
    assert {r["diagnosis"]["underlying"] or r["diagnosis"]["cause"] for r in moves} == \
        {STORMS[name][1]}
    assert all(r["diagnosis"]["evidence"] == "observed" for r in moves)


def test_retry_loop_flagged_as_livelock(recorded):
    trace, _, storms = recorded
    pid = storms["retry-loop"]["pid"]
    livelocks = [r for r in _records(trace) if r["type"] == "livelock" and r["pid"] == pid]
    assert [r["state"] for r in livelocks] == ["ongoing", "ended"], livelocks
    assert livelocks[0]["cause"] == "page_pinned" and livelocks[0]["culprit"]["pid"] == pid
    assert livelocks[1]["failures"] == storms["retry-loop"]["summary"]["failed"], \
        failure_story(_records(trace), pid)


def test_woken_threads_recorded_with_exact_waits(recorded):
    trace = recorded[0]
    wakecheck.check_wake_records(trace, _wake_workload(trace), "kernel")


def test_woken_threads_report(recorded):
    trace = recorded[0]
    wakecheck.check_report(trace, _wake_workload(trace), "kernel")


def test_woken_threads_export(recorded, tmp_path):
    trace = recorded[0]
    wakecheck.check_export(trace, _wake_workload(trace), tmp_path)


@pytest.mark.asyncio
async def test_woken_threads_top_replay(recorded):
    trace = recorded[0]
    await wakecheck.check_top_replay(trace, _wake_workload(trace))
