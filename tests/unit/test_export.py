"""`uffdtrace export --perfetto` on hand-built traces: the Trace Event
Format rules, the events each record becomes, and Perfetto's own trace
processor where its binary can be had."""
from __future__ import annotations

import errno as E
import os
import shutil

import pytest

from tests.helpers import uffdtrace
from tests.traceevents import check_trace_events
from tests.tracegen import T0, failed, mixed_items, ok, write_trace
from uffdtrace.chrometrace import COUNTER_BIN_NS
from uffdtrace.taxonomy import CAUSES


@pytest.fixture
def exported(tmp_path):
    src, out = tmp_path / "mixed.jsonl", tmp_path / "mixed.json"
    write_trace(src, mixed_items())
    proc = uffdtrace("export", "--perfetto", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return check_trace_events(out)


def events(trace, ph, **match):
    return [e for e in trace["traceEvents"] if e["ph"] == ph and
            all(e.get(k) == v for k, v in match.items())]


def test_every_move_is_a_slice_on_its_thread(exported):
    slices = events(exported, "X")
    assert len(slices) == 15
    assert {(e["pid"], e["tid"]) for e in slices} == {(100, 100), (200, 201)}
    pinned = next(e for e in slices if e["args"]["cause"] == "page_pinned")
    assert pinned["name"] == "UFFDIO_MOVE EAGAIN" and pinned["dur"] == 90.0
    assert pinned["ts"] == 1300.0   # us after the trace start
    assert pinned["args"]["src"] == "0x7f1000000000" and pinned["args"]["moved"] == 16384


def test_failures_are_instants_with_the_diagnosis(exported):
    instants = events(exported, "i", cat="uffd_move_failure")
    assert len(instants) == 6
    pinned = next(e for e in instants if e["args"]["underlying"] == "page_pinned")
    assert pinned["name"] == "partial: page_pinned" and pinned["s"] == "t"
    assert pinned["ts"] == 1300.0 + 90.0       # when the call returned
    assert pinned["args"]["remedy"] == CAUSES["page_pinned"].remedy
    assert pinned["args"]["evidence"] == "inferred"
    assert pinned["args"]["culprit"]["pid"] == 300
    assert pinned["args"]["culprit"]["range"][0] == "0x7f1000004000"


def test_names_pins_and_ksm_merges(exported):
    names = {(e["name"], e["pid"], e["tid"]): e["args"]["name"] for e in events(exported, "M")}
    assert names[("process_name", 100, 100)] == "mover"
    assert names[("thread_name", 200, 201)] == "worker"
    assert names[("process_name", 300, 300)] == "fio"
    assert names[("process_name", 42, 42)] == "ksmd"
    (pin,) = events(exported, "i", cat="pin")
    assert pin["pid"] == 300 and pin["args"]["addr"] == "0x7f1000004000"
    (merge,) = events(exported, "i", cat="ksm")
    assert merge["pid"] == 42 and merge["ts"] == 200.0 and merge["args"]["page_of_pid"] == 100


def test_counters_add_up_to_the_moves(exported):
    per_s = 1e9 / COUNTER_BIN_NS
    moves = events(exported, "C", name="moves/s")
    total = {pid: sum(e["args"]["ok"] + e["args"]["failed"] for e in moves if e["pid"] == pid)
             / per_s for pid in (100, 200)}
    assert total == {100: 10, 200: 5}
    byte_rate = sum(e["args"]["bytes/s"] for e in events(exported, "C", name="bytes/s"))
    assert byte_rate / per_s == 16 * 4096
    tlb = sum(e["args"]["flushes/s"] for e in events(exported, "C", name="TLB flushes/s"))
    assert tlb / per_s == 18
    # each process's counters fall back to zero after its last bin
    assert moves[-1]["args"] == {"ok": 0, "failed": 0}


def test_sparse_moves_get_zero_counters_in_between(tmp_path):
    src, out = tmp_path / "t.jsonl", tmp_path / "t.json"
    gap = 50 * COUNTER_BIN_NS
    write_trace(src, [ok(ts_ns=T0 + 1000), ok(ts_ns=T0 + gap), ok(ts_ns=T0 + 2 * gap)])
    assert uffdtrace("export", "--perfetto", str(src), "-o", str(out)).returncode == 0
    moves = events(check_trace_events(out), "C", name="moves/s")
    values = [(round(e["ts"] * 1000 / COUNTER_BIN_NS), e["args"]["ok"]) for e in moves]
    per_s = 1e9 / COUNTER_BIN_NS
    assert values == [(0, per_s), (1, 0), (50, per_s), (51, 0), (100, per_s), (101, 0)]


def test_other_data_describes_the_trace(exported):
    other = exported["otherData"]
    assert other["source"] == "uffdtrace" and other["complete"] is True
    assert (other["moves"], other["failures"], other["events_before_start"]) == (15, 6, 0)


def test_stdout_and_format_choice(tmp_path):
    src = tmp_path / "t.jsonl"
    write_trace(src, [ok(), failed(E.EEXIST, "dst_populated")])
    proc = uffdtrace("export", "--perfetto", str(src), "-o", "-")
    assert proc.returncode == 0 and '"UFFDIO_MOVE EEXIST"' in proc.stdout
    proc = uffdtrace("export", str(src), "-o", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and "--perfetto" in proc.stderr


def test_a_bad_trace_leaves_an_existing_output_alone(tmp_path):
    src, out = tmp_path / "t.jsonl", tmp_path / "t.json"
    out.write_text("previous")
    write_trace(src, [ok()])
    src.write_text(src.read_text() + "{broken\n")
    proc = uffdtrace("export", "--perfetto", str(src), "-o", str(out))
    assert proc.returncode == 2 and out.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".uffdtrace")] == []


def trace_processor_or_skip():
    """Perfetto's trace processor, if its binary can be had here: from
    $PERFETTO_TRACE_PROCESSOR, or the perfetto package's download (which
    needs Google storage, unreachable from most CI machines)."""
    try:
        from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig
    except ImportError:
        pytest.skip("the perfetto Python package is not installed")
    binary = os.environ.get("PERFETTO_TRACE_PROCESSOR") or shutil.which("trace_processor_shell")
    return TraceProcessor, TraceProcessorConfig, binary


def test_perfetto_trace_processor_loads_the_export(tmp_path):
    TraceProcessor, Config, binary = trace_processor_or_skip()
    src, out = tmp_path / "t.jsonl", tmp_path / "t.json"
    write_trace(src, mixed_items())
    assert uffdtrace("export", "--perfetto", str(src), "-o", str(out)).returncode == 0
    try:
        tp = TraceProcessor(trace=str(out), config=Config(bin_path=binary, load_timeout=30))
    except Exception as exc:  # noqa: BLE001 - the binary download or start failed
        pytest.skip(f"Perfetto's trace processor cannot run here ({type(exc).__name__}): the "
                    "perfetto package could not download or start trace_processor_shell; "
                    "set PERFETTO_TRACE_PROCESSOR to one to run this test")
    with tp:
        slices = list(tp.query("select name, dur from slice where category = 'uffd_move'"))
        assert len(slices) == 15
        assert {r.name for r in slices} >= {"UFFDIO_MOVE", "UFFDIO_MOVE EAGAIN"}
        assert max(r.dur for r in slices) == 90_000          # ns
        failures = list(tp.query("select name from slice where category = 'uffd_move_failure'"))
        assert len(failures) == 6
        names = {r.name for r in tp.query("select name from process where name is not null")}
        assert {"mover", "fio", "ksmd"} <= names
        (counters,) = tp.query("select count(*) as n from counter")
        assert counters.n > 0


def test_woken_faulting_threads_are_wait_slices_on_their_tracks(tmp_path):
    from tests.tracegen import FAULTER, MONITOR, wake_items
    src, out = tmp_path / "wake.jsonl", tmp_path / "wake.json"
    write_trace(src, wake_items())
    proc = uffdtrace("export", "--perfetto", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    trace = check_trace_events(out)
    waits = {e["tid"]: e for e in events(trace, "X", cat="fault_wait")}
    assert set(waits) == {FAULTER, FAULTER + 1, FAULTER + 2}
    woken = waits[FAULTER]
    assert woken["name"] == "uffd fault wait (at least)" and woken["dur"] == 50_000.0
    # it ends where the move that woke it begins, on the monitor's track
    move = next(e for e in events(trace, "X", cat="uffd_move", tid=MONITOR)
                if e["args"]["dst"] == woken["args"]["addr"])
    assert woken["ts"] + woken["dur"] == move["ts"]
    assert woken["args"]["by"] == "UFFDIO_MOVE" and woken["args"]["outcome"] == "woken"
    late = waits[FAULTER + 1]
    assert late["args"]["by"] == "UFFDIO_WAKE" and late["dur"] == 90_000.0
    assert late["args"]["after_dontwake_move_ts_us"] == late["ts"] + 70_000.0
    assert waits[FAULTER + 2]["args"]["outcome"] == "not_moved"
    assert trace["otherData"]["fault_waits"] == 3
