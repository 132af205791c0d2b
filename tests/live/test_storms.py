"""Failure storms and livelocks, recorded as a user would: a storm of one
failing move at full speed and a livelock-like retry of a pinned page, in
one `uffdtrace record`; then report, export and top --replay on the trace.
Every failure the workloads made is accounted for (move records plus repeat
counts, exactly the kernel's count), and the retry loop is flagged as a
livelock with the cause and the pinner."""
from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import failure_story, trace_records, uffdtrace
from tests.traceevents import check_trace_events

STORM_MOVES = 300_000
RETRY_S, RETRY_RATE = 1.6, 2000


@pytest.fixture(scope="module")
def storms(tmp_path_factory):
    d = tmp_path_factory.mktemp("storms")
    trace = d / "storms.jsonl"
    py = sys.executable
    script = (f"{py} -m uffdtrace workload -s failure-storm --iterations {STORM_MOVES} --json "
              f"> {d}/storm.json && {py} -m uffdtrace workload -s retry-loop -d {RETRY_S} "
              f"--rate {RETRY_RATE} --json > {d}/retry.json")
    proc = uffdtrace("record", "-o", str(trace), "--", "sh", "-c", script, timeout=300)
    assert proc.returncode == 0, proc.stderr
    made = {name: json.loads((d / f"{name}.json").read_text()) for name in ("storm", "retry")}
    return trace, made


def _records(trace):
    return trace_records(trace)


def _report(trace, pid: int) -> dict:
    proc = uffdtrace("report", str(trace), "--json", "-p", str(pid))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name,cause", [("storm", "dst_populated"), ("retry", "page_pinned")])
def test_every_failure_is_accounted_for_exactly(live, storms, name, cause):
    trace, made = storms
    out = made[name]
    failures = out["summary"]["failed"]
    assert failures == out["summary"]["calls"] > 0
    s = _report(trace, out["pid"])
    t = s["totals"]
    assert s["drops"]["ringbuf_drops"] == 0 and s["drops"].get("repeat_drops", 0) == 0
    # the kernel's count, the workload's, and the trace's records agree
    assert t["failed"] == failures and t["failures_recorded"] == failures, t["notes"]
    assert t["repeated_failures"] > failures * 0.9
    (row,) = s["causes"]
    assert (row["cause"], row["count"], row["evidence"]) == \
        (cause, failures, {"observed": failures})
    records = [r for r in _records(trace) if r.get("pid") == out["pid"]]
    moves = [r for r in records if r["type"] == "move"]
    repeats = [r for r in records if r["type"] == "repeat"]
    assert len(moves) + sum(r["count"] for r in repeats) == failures
    # runs last at most the header's coalesce_ms: a handful of records per second
    header = _records(trace)[0]
    span_s = (max(r.get("last_ts_ns", r.get("ts_ns", 0)) for r in records)
              - min(r["ts_ns"] for r in moves)) / 1e9
    assert len(moves) <= span_s / (header["coalesce_ms"] / 1000) + 3
    assert all(r["count"] >= 1 and r["last_ts_ns"] >= r["first_ts_ns"] for r in repeats)


def test_the_retry_loop_is_flagged_as_a_livelock_with_its_pinner(live, storms):
    trace, made = storms
    pid = made["retry"]["pid"]
    livelocks = [r for r in _records(trace) if r["type"] == "livelock" and r["pid"] == pid]
    assert [r["state"] for r in livelocks] == ["ongoing", "ended"], livelocks
    ongoing, ended = livelocks
    assert ongoing["cause"] == "page_pinned" and ongoing["errno"] == "EBUSY"
    assert ongoing["evidence"] == "observed"
    assert ongoing["culprit"]["kind"] == "pin" and ongoing["culprit"]["pid"] == pid
    assert (ongoing["last_ts_ns"] - ongoing["first_ts_ns"]) / 1e9 >= 1.0
    assert ended["failures"] == made["retry"]["summary"]["failed"], \
        failure_story(_records(trace), pid)
    storm_pid = made["storm"]["pid"]
    # the storm lasts about a second too: flagged only if it ran past 1 s
    assert all(r["cause"] == "dst_populated" for r in _records(trace)
               if r["type"] == "livelock" and r["pid"] == storm_pid)


def test_export_draws_runs_with_their_counts(live, storms, tmp_path):
    trace, made = storms
    out = tmp_path / "storms.json"
    proc = uffdtrace("export", "--perfetto", str(trace), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    records = _records(trace)
    events = check_trace_events(out)["traceEvents"]
    runs = [e for e in events if e["ph"] in ("X", "i") and "count" in e.get("args", {})]
    repeats = [r for r in records if r["type"] == "repeat"]
    assert len(runs) == len(repeats)
    assert sum(e["args"]["count"] for e in runs) == sum(r["count"] for r in repeats)
    assert "repeated failures in" in proc.stderr


@pytest.mark.asyncio
async def test_top_replay_counts_every_failure(live, storms):
    from tests.tui.screen import screen_text
    from tests.tui.topapp import running
    trace, made = storms
    async with running(trace) as (app, pilot):
        snap = app.snapshot
        assert app.model.malformed == 0 and app.model.error is None
        total = sum(m["summary"]["failed"] for m in made.values())
        assert snap.failures == total
        await pilot.press("tab")
        await pilot.pause()
        assert "×" in screen_text(app)


def test_trace_prints_runs_and_the_livelock(live):
    proc = uffdtrace("trace", "--", sys.executable, "-m", "uffdtrace", "workload", "-s",
                     "retry-loop", "-d", "1.3", "--rate", "1000", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "more like the failure at" in proc.stdout
    assert "LIVELOCK ongoing" in proc.stdout and "LIVELOCK ended" in proc.stdout
    assert "lines of repeat counts" in proc.stderr


def test_coalescing_off_records_every_failure(live, tmp_path):
    trace = tmp_path / "each.jsonl"
    proc = uffdtrace("record", "-o", str(trace), "--coalesce-ms", "0", "--", sys.executable,
                     "-m", "uffdtrace", "workload", "-s", "failure-storm", "--iterations",
                     "3000", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = _records(trace)
    assert records[0]["coalesce_ms"] == 0
    assert not any(r["type"] == "repeat" for r in records)
    assert sum(r["type"] == "move" and r["ret"] != 0 for r in records) == 3000


def test_a_storm_of_ever_different_failures_loses_none(live, tmp_path):
    """EEXIST, EBUSY, ENOENT in turn at full speed: no two failures of the
    thread alike in a row, so no run coalesces them; the failure ring fills
    and the rest is counted in the kernel by (thread, shape, period):
    every failure is in the trace, under its own cause, observed."""
    trace = tmp_path / "mixed-storm.jsonl"
    made = 150_000
    proc = uffdtrace("record", "-o", str(trace), "--", sys.executable, "-m", "uffdtrace",
                     "workload", "-s", "mixed-storm", "--iterations", str(made), "--json",
                     timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["summary"]["errors"] == {"EEXIST": made // 3, "EBUSY": made // 3,
                                        "ENOENT": made // 3}
    records = _records(trace)
    counters = [r for r in records if r["type"] == "aggregates"][-1]["counters"]
    assert counters["failures_overflowed"] > 0           # the ring did fill
    assert counters["ringbuf_drops"] == 0
    overflow = [r for r in records if r["type"] == "repeat" and r["closed_by"] == "overflow"]
    assert overflow
    s = _report(trace, out["pid"])
    assert s["totals"]["failures_recorded"] == made, s["totals"]["notes"]
    by_cause = {row["cause"]: (row["count"], row["evidence"]) for row in s["causes"]}
    assert by_cause == {c: (made // 3, {"observed": made // 3})
                        for c in ("dst_populated", "page_pinned", "src_hole")}
