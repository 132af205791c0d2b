"""top without Textual: filter language, sorting, cell text, the detail
view's content, the replay source and the command line."""
from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from tests.helpers import uffdtrace
from uffdtrace.errors import UserError
from uffdtrace.taxonomy import CAUSES, EVIDENCE_MEANING
from uffdtrace.top.detail import describe_failure
from uffdtrace.top.model import FailureRow, ProcessRow, TopModel
from uffdtrace.top.sources import ReplaySource, open_trace
from uffdtrace.top.view import COLUMN_BY_KEY, PROCESS_COLUMNS, RowFilter, Sort, process_cells

from .test_top_model import MIXED, move, records

SAMPLE = MIXED.parent.parent.parent / "data" / "pinned-early-v1.jsonl"   # tests/data


def proc(pid, comm="app", moves_per_s=0.0, failures=0, causes=(), p99=None):
    return ProcessRow(pid=pid, comm=comm, moves_per_s=moves_per_s, mib_per_s=None, moves=10,
                      failures=failures, causes=tuple(causes), p50_us=None, p99_us=p99,
                      tlb_per_page=None)


# -- filter ----------------------------------------------------------------

def test_filter_parts():
    f = RowFilter.parse("pid:42 comm:JaVa cause:pinned")
    assert (f.pid, f.comm, f.cause) == (42, "java", "pinned")
    assert f.process(proc(42, "java-main", causes=[("page_pinned", 1)]))
    assert not f.process(proc(43, "java-main", causes=[("page_pinned", 1)]))
    assert not f.process(proc(42, "python", causes=[("page_pinned", 1)]))
    assert not f.process(proc(42, "java", causes=[("page_ksm", 1)]))
    assert RowFilter.parse("").empty


def test_bare_word_matches_pid_comm_or_cause():
    f = RowFilter.parse("ksm")
    assert f.process(proc(1, "ksm-tool")) and f.process(proc(2, causes=[("page_ksm", 3)]))
    assert not f.process(proc(3, "other"))
    assert RowFilter.parse("77").process(proc(77)) and not RowFilter.parse("77").process(proc(7))


def test_filter_on_failure_rows():
    row = FailureRow(1, 0.5, 9, "gc-thread", "EBUSY", "page_pinned", True, "inferred", {})
    assert RowFilter.parse("cause:pinned comm:gc").failure(row)
    assert not RowFilter.parse("cause:ksm").failure(row)


@pytest.mark.parametrize("text, message", [("pid:abc", "number"), ("color:red", "unknown"),
                                           ("comm:", "needs a value")])
def test_bad_filters_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        RowFilter.parse(text)


def test_filter_round_trips_through_describe():
    f = RowFilter.parse("pid:5 comm:a cause:b word")
    assert RowFilter.parse(f.describe()) == f


# -- sorting -----------------------------------------------------------------

def test_sort_by_each_column_and_reverse():
    rows = [proc(3, "b", 5.0, 1, p99=3.0), proc(1, "c", 50.0, 0), proc(2, "a", 50.0, 9, p99=1.0)]
    assert [r.pid for r in Sort().apply(rows)] == [1, 2, 3]     # moves/s desc, ties by pid
    assert [r.pid for r in Sort("comm", False).apply(rows)] == [2, 3, 1]
    assert [r.pid for r in Sort("fails", True).apply(rows)] == [2, 3, 1]
    assert [r.pid for r in Sort("p99", True).apply(rows)] == [3, 2, 1]   # unknown last
    assert [r.pid for r in Sort("pid", False).reversed().apply(rows)] == [3, 2, 1]


def test_sort_cycles_through_every_column_and_clicking_twice_reverses():
    s, seen = Sort(), []
    for _ in PROCESS_COLUMNS:
        s = s.next()
        seen.append(s.column)
        assert s.descending == COLUMN_BY_KEY[s.column].descending
    assert sorted(seen) == sorted(c.key for c in PROCESS_COLUMNS)
    assert Sort("pid", False).by("pid") == Sort("pid", True)
    assert Sort("pid", False).by("fails") == Sort("fails", True)


def test_cells_show_untrusted_names_literally():
    cells = process_cells(proc(1, "a\x1b[31mb", causes=[("page_ksm", 2)]))
    assert cells[1] == "a\\x1b[31mb"
    assert cells[6] == "page_ksm:2"
    assert process_cells(proc(1, ""))[1] == "?"


# -- detail ------------------------------------------------------------------

def lines_of(sections) -> dict[str, str]:
    return {label: value for _, lines in sections for label, value in lines}


def test_detail_of_a_pinned_partial_move():
    rec = next(r for r in records(SAMPLE) if r["type"] == "move")
    t0 = records(SAMPLE)[0]["start_ktime_ns"]
    sections = describe_failure(rec, 0.07, t0)
    assert [title for title, _ in sections][:3] == ["Diagnosis", "Culprit", "Request"]
    d = lines_of(sections)
    culprit = rec["diagnosis"]["culprit"]
    assert d["cause"].startswith("partial: stopped by page_pinned")
    assert d["evidence"] == f"inferred: {EVIDENCE_MEANING['inferred']}"
    assert d["failing address"].startswith(f"{rec['diagnosis']['fail_addr']:#x}")
    assert d["explanation"] == CAUSES["page_pinned"].explanation
    assert d["remedy"] == CAUSES["page_pinned"].remedy
    assert d["resume"] == CAUSES["partial"].remedy
    assert d["pinned by"] == f"pid {culprit['pid']} tid {culprit['tid']} ({culprit['comm']})"
    assert d["method"] == culprit["method"]
    assert d["pinned"] == f"{(culprit['ts_ns'] - t0) / 1e9:.6f} s into the trace"
    assert d["pinned range"] == f"{culprit['range'][0]:#x} + {culprit['range'][1]:,} bytes"
    assert f"len {rec['len']:,} bytes" in d["request"]
    assert "16,384 bytes (4 pages) moved" in d["result"]
    assert d["src page"].endswith("present, exclusive; flags anon mmap swapbacked")
    assert "um" in d["dst VMA"]


def test_detail_of_a_kernel_tier_pin():
    rec = move(5, 1.0, ret=-16, cause="page_pinned")
    rec["diagnosis"]["culprit"] = {"kind": "pin", "pid": 9, "comm": "dma", "method":
                                   "pin_user_pages()", "longterm": True, "ts_ns": None,
                                   "source": "GUP hook"}
    d = lines_of(describe_failure(rec))
    assert d["pinned by"] == "pid 9 (dma)"
    assert d["method"] == "pin_user_pages(), long-term (FOLL_LONGTERM)"
    assert d["pinned"] == "before tracing started" and d["seen by"] == "GUP hook"
    assert "pinned range" not in d


def test_detail_of_ksm_and_of_missing_evidence():
    rec = move(5, 1.0, ret=-16, cause="page_ksm", comm="x[/]y")
    rec["diagnosis"]["culprit"] = {"kind": "ksm", "merged_ts_ns": None}
    d = lines_of(describe_failure(rec))
    assert d["merged"] == "before tracing started"
    assert d["state"].startswith("not inspected")
    assert "(x[/]y)" in d["process"]


# -- replay ------------------------------------------------------------------

def replay(path, speed=0.0, stop=None) -> tuple[list[dict], str]:
    got: list[dict] = []
    src = ReplaySource(str(path), speed)
    src.prepare()
    reason = src.run(got.extend, stop or threading.Event())
    return got, reason


def test_replay_yields_every_record_in_order():
    got, reason = replay(MIXED)
    assert got == records()
    assert reason == "end of trace"


def real_trace(path, times: list[float]):
    """A valid trace: the recording's header, then one of its successful
    moves repeated at `times` (seconds into the trace)."""
    recs = records()
    header = recs[0]
    ok = next(r for r in recs if r["type"] == "move" and r["ret"] == 0)
    moves = [{**ok, "ts_ns": header["start_ktime_ns"] + int(t * 1e9)} for t in times]
    path.write_text("".join(json.dumps(r) + "\n" for r in [header, *moves]))
    return [header, *moves]


def test_replay_keeps_the_trace_pace(tmp_path):
    path = tmp_path / "t.jsonl"
    recs = real_trace(path, [0.0, 0.4, 0.8])
    start = time.monotonic()
    got, reason = replay(path, speed=2.0)       # 0.8 s of trace at x2: >= 0.4 s
    assert time.monotonic() - start >= 0.39
    assert got == recs
    assert reason == "end of trace (no footer: unfinished)"


def test_replay_stops_when_told(tmp_path):
    path = tmp_path / "t.jsonl"
    real_trace(path, [0.0, 60.0])
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    got, reason = replay(path, speed=1.0, stop=stop)
    assert reason == "stopped" and len(got) == 2


def test_bad_trace_files(tmp_path):
    # The reader's checks, as top gets them: one UserError, PATH:LINE first.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(records()[0]) + "\n{not json\n")
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        list(open_trace(str(bad)))
    other = tmp_path / "other.jsonl"
    other.write_text('{"type": "move"}\n')
    with pytest.raises(UserError, match=r"other.jsonl:1: not a uffdtrace trace"):
        list(open_trace(str(other)))
    with pytest.raises(UserError, match="cannot read"):
        ReplaySource(str(tmp_path / "missing.jsonl")).prepare()     # before any TUI


def test_a_recorder_killed_mid_line_loses_only_that_line(tmp_path):
    path = tmp_path / "cut.jsonl"
    recs = real_trace(path, [0.0, 0.1])
    with open(path, "a") as f:
        f.write('{"type": "mo')
    got, reason = replay(path)
    assert got == recs
    assert reason == "end of trace (its last line is partial: recorder killed?)"


def test_model_from_replayed_records_equals_model_from_file():
    got, _ = replay(MIXED)
    a, b = TopModel(), TopModel()
    a.feed(got)
    b.feed(records())
    assert a.snapshot() == b.snapshot()


# -- command line ------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--replay", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
    (["--interval", "0.1"], "at least 0.25"),
    (["--speed", "2"], "--replay only"),
    (["--demo", "-p", "5"], "-p does not apply"),
    (["--replay", "x", "--speed", "-1"], "--speed must be >= 0"),
    (["-p", "999999999"], "no process with pid 999999999"),
])
def test_bad_usage_is_one_line_exit_2(args, message):
    proc = uffdtrace("top", *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("uffdtrace: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_top_needs_a_terminal():
    proc = uffdtrace("top", "--replay", str(MIXED), stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr == "uffdtrace: top needs a terminal (for a log or a file: " \
        "uffdtrace trace, uffdtrace record)\n"


def test_help_has_examples():
    out = uffdtrace("top", "--help").stdout
    for needle in ("--demo", "--replay", "--speed", "--interval", "--failed-only", "-p PID",
                   "examples:"):
        assert needle in out
