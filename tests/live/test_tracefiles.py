"""record -> report and record -> export --perfetto, end to end on real
traces of every workload scenario (tracepoint tier, real bcc): every
record validates against the trace schema, the report's numbers match what
the workload did, the export follows the Trace Event Format rules."""
from __future__ import annotations

import json
import sys

import jsonschema
import pytest

from collections import Counter

from tests.helpers import SCENARIO_CAUSES, record_then_sigkill, scenario_path, uffdtrace
from tests.live.test_tracing import expected, hold_for
from tests.traceevents import check_trace_events
from uffdtrace.taxonomy import contradiction
from uffdtrace.tracereader import iter_records
from uffdtrace.traceschema import strict_schema
from uffdtrace.workload.runner import scenario_names

WORKLOAD_ARGS = {"mixed": ["-d", "3", "--rate", "300"], "storm": ["--iterations", "20000"],
                 "failure-storm": ["--iterations", "50000"],
                 "mixed-storm": ["--iterations", "30000"],
                 "retry-loop": ["-d", "0.5", "--rate", "2000"]}



@pytest.fixture(scope="module")
def schema():
    return jsonschema.Draft7Validator(strict_schema())


def record(tmp_path, scenario: str) -> tuple[str, dict]:
    trace = str(tmp_path / f"{scenario}.jsonl")
    args = WORKLOAD_ARGS.get(scenario, ["--hold", hold_for(scenario)])
    proc = uffdtrace("record", "-o", trace, "--", sys.executable, "-m", "uffdtrace",
                     "workload", "-s", scenario, *args, "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    return trace, json.loads(proc.stdout)


def validate_every_record(schema, trace: str) -> list[dict]:
    records = [json.loads(line) for line in open(trace, encoding="utf-8")]
    for n, r in enumerate(records, 1):
        errors = [e.message for e in schema.iter_errors(r)]
        assert not errors, f"{trace}:{n}: {errors}"
    # as every reader sees them: a `successes` record is its move records
    return list(iter_records(trace))


def causes_of(workload: dict) -> dict[str, Counter]:
    """The workload's failed calls: cause a correct diagnosis names (a
    partial move's underlying one) -> evidence levels."""
    out: dict[str, Counter] = {}
    for call in workload["calls"]:
        if call["ret"] != 0:
            cause, underlying, evidence = expected(call["scenario"], call["errno"])
            out.setdefault(underlying or cause, Counter())[evidence] += 1
    return out


def report_causes(report: dict) -> dict[str, Counter]:
    return {row["cause"]: Counter(row["evidence"]) for row in report["causes"]}


@pytest.mark.parametrize("scenario", scenario_names())
def test_record_report_export(live, schema, tmp_path, scenario):
    trace, workload = record(tmp_path, scenario)
    records = validate_every_record(schema, trace)
    assert records[0]["type"] == "header" and records[-1]["type"] == "footer"
    moves = [r for r in records if r["type"] == "move"]
    repeats = [r for r in records if r["type"] == "repeat"]
    repeated = sum(r["count"] for r in repeats)
    made = workload["summary"]

    proc = uffdtrace("report", trace, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    totals = report["totals"]
    # from the in-kernel counters: exact even if the ring buffer dropped some
    assert totals["source"] == "in-kernel counters"
    assert (totals["moves"], totals["ok"], totals["failed"]) == \
        (made["calls"], made["ok"], made["failed"])
    assert report["trace"]["complete"] and report["trace"]["warnings"] == []
    if report["drops"]["ringbuf_drops"] + report["drops"].get("success_drops", 0) == 0:
        assert totals["bytes_moved"] == made["bytes_moved"]
        # identical failures in a row are one move record and a repeat count
        assert len(moves) + repeated == made["calls"]
    assert totals["failures_recorded"] == made["failed"]
    if scenario in SCENARIO_CAUSES:
        assert report_causes(report) == causes_of(workload)
        assert all(row["explanation"] and row["remedy"] for row in report["causes"])
    if scenario == "pinned":
        (pinner,) = report["pinners"]
        assert pinner["pid"] == workload["pid"] and pinner["blocked_moves"] == 1
    if scenario == "mmap_changing":
        pending = workload["setup"][0]["pending_events"]
        assert sorted((u["event"], u["raised_by"]["tid"], u["pid"], u["blocked_moves"])
                      for u in report["unread_events"]) == \
            sorted((p["event"], p["tid"], workload["pid"], 1) for p in pending)
    if scenario == "ksm":
        assert report["ksm"] and report["ksm"][0]["blocked_moves"] == made["failed"]
        assert sum(r["type"] == "ksm" for r in records) == made["failed"]

    # question 6: the path its successes took, read at exit
    facts = {f["scenario"]: f for f in workload.get("setup", ())}
    path = scenario_path(scenario, facts.get(scenario, {}))
    if path and made["ok"]:
        (row,) = [r for r in report["move_paths"]["processes"] if r["pid"] == workload["pid"]]
        assert row["read_at_exit"] and row["counts"][path] > 0, row
        assert sum(row["counts"].values()) == row["counts"][path], row

    text = uffdtrace("report", trace)
    assert text.returncode == 0 and "TOTALS (from in-kernel counters)" in text.stdout

    out = tmp_path / f"{scenario}.json"
    proc = uffdtrace("export", "--perfetto", trace, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    exported = check_trace_events(out)
    events = exported["traceEvents"]
    # a run in a row is a slice; failures counted while the ring buffer was
    # full are not in a row: an instant each (chrometrace._repeat)
    in_a_row = [r for r in repeats if r["closed_by"] != "overflow"]
    # slices: the moves and runs (a woken faulting thread's wait is its own)
    waits = [e for e in events if e.get("cat") == "fault_wait"]
    # one per sleeping thread (a DONTWAKE move's thread: at its UFFDIO_WAKE)
    assert len(waits) == len({(w["tid"], w["addr"]) for r in records if r["type"] == "wake"
                              for w in r["waiters"]})
    assert sum(e["ph"] == "X" for e in events) - len(waits) == len(moves) + len(in_a_row)
    counted = [e for e in events if "count" in e.get("args", {})]
    assert sum(e["args"]["count"] for e in counted) == repeated
    failures = [e for e in events if e.get("cat") == "uffd_move_failure"]
    assert len(failures) == sum(m["ret"] != 0 for m in moves)
    assert exported["otherData"]["events_before_start"] == 0
    if path and made["ok"]:
        assert all("paths" in e["args"] for e in events if e.get("cat") == "uffd_move"
                   and e["args"].get("result") == "ok"), events
    assert {e["pid"] for e in events if e["ph"] == "X"} <= \
        {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}


def test_killed_recorder_trace_is_reported_and_exported(live, schema, tmp_path):
    trace = tmp_path / "killed.jsonl"
    record_then_sigkill(trace)
    report = uffdtrace("report", str(trace), "--json")
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)
    assert summary["trace"]["complete"] is False
    assert summary["totals"]["moves"] > 100 and summary["causes"]
    text = uffdtrace("report", str(trace)).stdout
    assert "INCOMPLETE" in text
    out = tmp_path / "killed.json"
    assert uffdtrace("export", "--perfetto", str(trace), "-o", str(out)).returncode == 0
    assert sum(e["ph"] == "X" for e in check_trace_events(out)["traceEvents"]) > 100


@pytest.mark.parametrize("state_at_exit", [True, False], ids=["state-at-exit", "proc-only"])
def test_pages_rewritten_right_after_each_failure_get_only_errno_compatible_causes(
        live, schema, tmp_path, state_at_exit):
    """A program that changes its pages right after a failed call (a
    compacting GC moves on).  Read when the move returns, the kernel's state
    still explains every page-state failure (observed); read from /proc
    after the call, it points at causes the errno rules out -- and no
    diagnosis may name one: it falls back to the errno and says so."""
    trace = str(tmp_path / "rewrite.jsonl")
    options = [] if state_at_exit else ["--no-state-at-exit"]
    proc = uffdtrace("record", "-o", trace, *options, "--", sys.executable, "-m", "uffdtrace",
                     "workload", "-s", "mixed", "--iterations", "3", "--rewrite", "--hold",
                     "0.1", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    made = json.loads(proc.stdout)["summary"]
    failed = [r for r in validate_every_record(schema, trace)
              if r["type"] == "move" and r["ret"] != 0]
    assert len(failed) == made["failed"]
    for m in failed:
        d = m["diagnosis"]
        assert contradiction(d["cause"], d["underlying"], m["errno"], m["move"] > 0
                             and m["errno"] == "EAGAIN") is None, (m["errno"], d)
    # EAGAIN with nothing moved (mmap_changing) has no page state to go on
    page_state = [m for m in failed if m["errno"] != "EINVAL"
                  and not (m["errno"] == "EAGAIN" and m["move"] <= 0)]
    if state_at_exit:
        # observed, but where the state shows only an outcome (a contended
        # move's page at dst: moved by which call is inferred)
        from uffdtrace.state_evidence import INFERRED_FROM_STATE
        assert all(m["diagnosis"]["evidence"] == (
            "inferred" if m["diagnosis"]["cause"] in INFERRED_FROM_STATE else "observed")
            for m in page_state), [(m["errno"], m["diagnosis"]) for m in page_state]
    else:
        # --hold keeps the rewritten pages mapped until /proc is read: the
        # rewrite hid the state at least once, and the diagnosis fell back
        # on the errno and said what the pages showed
        fell_back = [m for m in page_state if m["diagnosis"]["evidence"] == "errno"
                     and any("changed since" in n for n in m["diagnosis"]["notes"])]
        assert fell_back, [(m["errno"], m["diagnosis"]["cause"]) for m in page_state]
    report = uffdtrace("report", trace, "--json")
    assert report.returncode == 0, report.stderr


def test_report_of_a_mixed_trace_shows_contended_moves(live, tmp_path):
    """`mixed` composes `contended`: on 6.18 some of its moves answer EEXIST
    after moving their page, and `report` names them moved_then_eexist,
    with the taxonomy's explanation and remedy.  Whole cycles until one does
    (4 at most; measured: most traced cycles have one)."""
    import os
    from uffdtrace.taxonomy import CAUSES
    for attempt in range(4):
        trace = str(tmp_path / f"mixed-{attempt}.jsonl")
        proc = uffdtrace("record", "-o", trace, "--", sys.executable, "-m", "uffdtrace",
                         "workload", "-s", "mixed", "--iterations", "3", "--rate", "100000",
                         "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
        workload = json.loads(proc.stdout)
        assert workload["problems"] == []
        made = sum(c["scenario"] == "contended" and c["errno"] == "EEXIST"
                   for c in workload["calls"])
        report = json.loads(uffdtrace("report", trace, "--json").stdout)
        causes = {row["cause"]: row for row in report["causes"]}
        if not made:
            assert "moved_then_eexist" not in causes
            if not os.uname().release.startswith("6.18"):
                pytest.skip("this kernel never answered EEXIST to a contended move "
                            "(measured: only 6.18 does)")
            continue
        row = causes["moved_then_eexist"]
        assert (row["count"], row["errno"], row["evidence"]) == \
            (made, {"EEXIST": made}, {"inferred": made})
        text = uffdtrace("report", trace).stdout
        cause = CAUSES["moved_then_eexist"]
        assert "moved_then_eexist" in text and cause.remedy.split(":")[0] in text, text
        return
    pytest.fail("no contended move of 4 traced mixed runs answered EEXIST")
