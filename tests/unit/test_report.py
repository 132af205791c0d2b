"""`uffdtrace report` on hand-built traces whose contents are known."""
from __future__ import annotations

import errno as E
import json
import os
import shutil
import tempfile

import pytest

from tests.helpers import uffdtrace
from tests.tracegen import failed, mixed_items, ok, write_trace
from uffdtrace.commands.report import render
from uffdtrace.taxonomy import CAUSES
from uffdtrace.tracesummary import summarize


@pytest.fixture
def mixed(tmp_path):
    path = tmp_path / "mixed.jsonl"
    write_trace(path, mixed_items())
    return str(path)


def by_pid(rows):
    return {r["pid"]: r for r in rows}


def test_totals_processes_and_tlb(mixed):
    s = summarize(mixed)
    t = s["totals"]
    assert (t["source"], t["moves"], t["ok"], t["failed"], t["partial"]) == \
        ("in-kernel counters", 15, 9, 6, 1)
    # 6 + 16 KiB (partial) from pid 100, 3 x 8 KiB from pid 200
    assert t["bytes_moved"] == (6 + 4 + 6) * 4096 and t["bytes_source"] == "move records"
    procs = by_pid(s["processes"])
    assert (procs[100]["moves"], procs[100]["failed"], procs[100]["comm"]) == (10, 4, "mover")
    assert (procs[200]["moves"], procs[200]["failed"], procs[200]["bytes_moved"]) == \
        (5, 2, 6 * 4096)
    assert procs[200]["tlb_flushes_per_moved_page"] == round((3 * 2 + 2) / 6, 4)
    assert s["tlb"]["flushes"] == 6 + 6 + 1 + 1 + 2 + 1 + 1 and s["tlb"]["pages_moved"] == 16


def test_causes_ranked_with_taxonomy_text_and_evidence(mixed):
    causes = summarize(mixed)["causes"]
    assert [c["cause"] for c in causes][0] == "dst_populated"   # 2, then the 1s by name
    assert [c["count"] for c in causes] == [2, 1, 1, 1, 1]
    for c in causes:
        assert (c["explanation"], c["remedy"]) == (CAUSES[c["cause"]].explanation,
                                                   CAUSES[c["cause"]].remedy)
    pinned = next(c for c in causes if c["cause"] == "page_pinned")
    assert pinned["errno"] == {"EAGAIN": 1} and pinned["evidence"] == {"inferred": 1}
    assert pinned["example"]["culprit"]["pid"] == 300
    assert next(c for c in causes if c["cause"] == "busy_unknown")["evidence"] == {"errno": 1}


def test_pinners_ksm_latencies_and_drops(mixed):
    s = summarize(mixed)
    (pinner,) = s["pinners"]
    assert (pinner["pid"], pinner["comm"], pinner["blocked_moves"], pinner["registrations"]) == \
        (300, "fio", 1, 1)
    assert pinner["blocked"] == [{"pid": 100, "comm": "mover", "moves": 1,
                                  "same_process": False}]
    (ksm,) = s["ksm"]
    assert ksm["ksmd_pid"] == 42 and ksm["blocked_moves"] == 1
    worst = s["worst_latencies"]
    assert len(worst) == 10 and worst[0]["latency_us"] == 90.0 and worst[0]["cause"] == \
        "page_pinned"
    assert [w["latency_us"] for w in worst] == sorted((w["latency_us"] for w in worst),
                                                      reverse=True)
    assert s["drops"] == {"ringbuf_drops": 0, "arg_read_fails": 0, "inflight_full": 0,
                          "footer_drops": 0}


def test_pid_filter(mixed):
    s = summarize(mixed, pid=200)
    assert [p["pid"] for p in s["processes"]] == [200]
    assert s["totals"]["moves"] == 5 and [c["cause"] for c in s["causes"]] == ["dst_populated"]
    assert s["pinners"] == []      # pid 300's pin blocked pid 100, not 200
    assert summarize(mixed, pid=100)["pinners"][0]["pid"] == 300


def test_totals_count_what_the_file_does_not_hold(tmp_path):
    """--failed-only: the kernel counted 50 successes the file never saw."""
    path = tmp_path / "t.jsonl"
    items = [failed(E.EEXIST, "dst_populated")]
    write_trace(path, items, extra_moves=[ok() for _ in range(50)],
                filters={"pid": 0, "tid": 0, "failed_only": True, "duration": 0, "command": []})
    t = summarize(str(path))["totals"]
    assert (t["moves"], t["ok"], t["failed"], t["move_records"]) == (51, 50, 1, 1)
    assert any("--failed-only" in n for n in t["notes"])


def test_without_aggregates_totals_come_from_records_and_say_so(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [ok(), ok(), failed(E.ENOENT, "src_hole")], aggregates=False,
                success_sample=10)
    s = summarize(str(path))
    t = s["totals"]
    assert (t["source"], t["moves"], t["failed"]) == ("move records", 3, 1)
    assert any("1 in 10 successful moves" in n for n in t["notes"])
    assert s["drops"] == {"footer_drops": 0}


def test_killed_recorder_moves_after_the_last_snapshot_are_added(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [ok(), ok()], footer=False)
    with open(path, "a") as f:      # two more moves, then a cut line
        good = [line for line in open(path) if '"type":"move"' in line][0]
        f.write(good + good + good[:40])
    s = summarize(str(path))
    assert s["totals"]["moves"] == 4 and s["trace"]["complete"] is False
    assert "partial line" in s["trace"]["truncated"]
    assert any("after the last in-kernel snapshot" in n for n in s["totals"]["notes"])


def test_footer_count_mismatch_is_a_warning(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [ok(), ok(), ok()])
    lines = open(path).read().splitlines()
    del lines[1]
    path.write_text("\n".join(lines) + "\n")
    (warning,) = summarize(str(path))["trace"]["warnings"]
    assert "footer counts 3 move records, the file holds 2" in warning


def test_unknown_cause_uses_the_trace_text_and_says_so(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [ok()])
    lines = open(path).read().splitlines()
    move = json.loads(lines[1])
    move.update(ret=-16, move=-16, errno="EBUSY")
    move["diagnosis"].update(cause="folio_locked_forever", explanation="from the future",
                             remedy="upgrade")
    lines[1] = json.dumps(move)
    path.write_text("\n".join(lines) + "\n")
    (cause,) = summarize(str(path))["causes"]
    assert (cause["known"], cause["explanation"], cause["remedy"]) == \
        (False, "from the future", "upgrade")
    out = uffdtrace("report", str(path)).stdout
    assert "does not know this cause" in out


def test_text_report_reads_well(mixed):
    proc = uffdtrace("report", mixed)
    assert proc.returncode == 0 and proc.stderr == ""
    out = proc.stdout
    for heading in ("TOTALS (from in-kernel counters)", "PROCESSES", "FAILURE CAUSES",
                    "WORST LATENCIES", "TLB FLUSHES", "PINNED PAGES", "KSM-MERGED PAGES",
                    "DROPS"):
        assert heading in out
    assert "15 moves: 9 ok, 6 failed (40.0%)" in out
    assert f"fix: {CAUSES['page_pinned'].remedy}" in out
    assert "pid 300 (fio) via io_uring fixed buffer" in out and "pid 100 (mover): 1 move" in out
    assert max(len(line) for line in out.splitlines()) < 200


def test_json_output_is_the_summary(mixed):
    proc = uffdtrace("report", mixed, "--json", "-p", "100")
    assert json.loads(proc.stdout) == summarize(mixed, pid=100)


def test_hostile_names_are_escaped_in_text(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [ok(comm="\x1b[2Jevil\nline"), failed(E.EEXIST, "dst_populated",
                                                           comm="\x1b]0;x\x07")])
    out = uffdtrace("report", str(path)).stdout
    assert "\x1b" not in out and "\x07" not in out and "\\x1b[2Jevil\\x0aline" in out


@pytest.mark.parametrize("content, message", [
    (b"", ":1: empty trace: no header"),
    (b'{"type": "header", "format": "uffdtrace-trace", "version": 99}\n', "newer than"),
    (b"garbage\n", ":1: not valid JSON"),
])
def test_malformed_file_is_one_line_exit_2(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    for command in (["report", str(path)], ["export", "--perfetto", str(path), "-o",
                                            str(tmp_path / "out.json")]):
        proc = uffdtrace(*command)
        assert proc.returncode == 2
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"uffdtrace: {path}:") and message in line
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("command", ["report", "export"])
def test_help_has_examples(command):
    proc = uffdtrace(command, "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout


def test_report_needs_no_privileges(mixed):
    """Run as `nobody` when we are root (when not root, we already are unprivileged)."""
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        trace = shutil.copy(mixed, directory)
        os.chmod(trace, 0o644)
        preexec = (lambda: os.setuid(65534)) if os.geteuid() == 0 else None
        proc = uffdtrace("report", trace, "--json", preexec=preexec)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["moves"] == 15


def test_sampled_figures_are_weighted_and_called_estimates(tmp_path):
    """1 in 10 successes recorded: each stands for 10 in the sums over
    records, and every such figure says it is an estimate."""
    path = tmp_path / "t.jsonl"
    items = [ok(tlb_flushes=1), ok(tlb_flushes=1), failed(E.EEXIST, "dst_populated")]
    write_trace(path, items, success_sample=10, extra_moves=[ok() for _ in range(18)])
    s = summarize(str(path))
    assert s["tlb"]["flushes"] == 2 * 10 + 1 and s["tlb"]["pages_moved"] == 20
    assert "sampled 1 in 10" in s["tlb"]["estimate"]
    assert s["totals"]["bytes_moved"] == 20 * 4096
    assert s["totals"]["bytes_source"] == "move records (estimated)"
    assert "3 recorded moves" in s["worst_latencies_note"]
    text = render(s)
    assert "note: estimated from 3 recorded moves" in text
    assert "an unrecorded move may have been slower" in text
    every = tmp_path / "every.jsonl"
    write_trace(every, items)
    s = summarize(str(every))
    assert s["tlb"]["estimate"] is None and s["worst_latencies_note"] is None


def test_moves_entered_but_not_ended_are_said(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [ok(), ok()], in_flight=3)
    notes = summarize(str(path))["totals"]["notes"]
    assert any("saw 5 moves enter and 2 end" in n for n in notes), notes
    write_trace(path, [ok(), ok()])
    assert not any("enter" in n for n in summarize(str(path))["totals"]["notes"])


def test_full_kernel_maps_are_reported_and_close_the_accounting(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [ok(), ok()], in_flight=3)
    lines = open(path).read().splitlines()
    agg = next(i for i, line in enumerate(lines) if '"type":"aggregates"' in line)
    record = json.loads(lines[agg])
    record["counters"].update(outcomes_full=3, follow_full=1, saved_args_full=0)
    lines[agg] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    s = summarize(str(path))
    assert s["drops"]["outcomes_full"] == 3
    assert not any("enter" in n for n in s["totals"]["notes"])   # 5 entered, 2 + 3 ended
    assert "3 moves missing from the per-process counts, 1 children" in render(s)


def test_hook_runs_the_kernel_skipped_are_reported(tmp_path):
    """recursion_misses (read from each program's fdinfo) lose moves that no
    other counter has: report says so under DROPS and in its notes."""
    path = tmp_path / "t.jsonl"
    write_trace(path, [ok(), ok()])
    lines = open(path).read().splitlines()
    agg = next(i for i, line in enumerate(lines) if '"type":"aggregates"' in line)
    record = json.loads(lines[agg])
    record["counters"]["recursion_misses"] = 48
    lines[agg] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    s = summarize(str(path))
    assert s["drops"]["recursion_misses"] == 48
    text = render(s)
    assert "48 hook runs skipped by the kernel (BPF recursion protection" in text
    assert "48 hook runs skipped (see DROPS)" in text


def test_woken_faulting_threads(tmp_path):
    from tests.tracegen import FAULTER, wake_items
    path = tmp_path / "t.jsonl"
    write_trace(path, wake_items())
    s = summarize(str(path))
    w = s["woken_threads"]
    assert w["counts"] == {"woken_by_move": 1, "woken_by_wake": 1, "left_by_dontwake": 0,
                           "not_moved": 1, "unknown": 0}
    rows = {r["tid"]: r for r in w["rows"]}
    assert (rows[FAULTER]["waited_ms"], rows[FAULTER]["wait_evidence"]) == (50.0, "at_least")
    assert rows[FAULTER + 1]["after_dontwake_move"]["at_s"] == pytest.approx(
        rows[FAULTER + 1]["at_s"] - 0.02)
    text = render(s)
    assert "WOKEN FAULTING THREADS" in text
    assert f"tid {FAULTER + 1} of pid 600 (faulter) at 0x7f2000001000: waited at least 90 ms; " \
        "woken by the UFFDIO_WAKE of pid 600 (monitor) tid 600" in text
    assert "after a DONTWAKE move by tid 600 (monitor)" in text
    assert "left asleep (the move failed before its page)" in text


def test_woken_faulting_threads_exact_in_the_kernel_tier(tmp_path):
    from tests.tracegen import wake_items
    path = tmp_path / "t.jsonl"
    write_trace(path, wake_items(since="fault_entry"), tier="kernel")
    text = render(summarize(str(path)))
    assert "waited 50 ms; woken by the move" in text and "at least" not in text


def test_no_woken_section_without_wake_records(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, mixed_items())
    assert "WOKEN FAULTING THREADS" not in render(summarize(str(path)))
