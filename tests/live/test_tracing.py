"""Live tracing on the running kernel (tracepoint tier, real bcc): each
workload scenario is traced and its diagnosis checked against the scenario
that caused it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, uffdtrace

# scenario: (cause, underlying cause of a partial move, evidence)
EXPECTED = {
    "ok": ("ok", None, "observed"),
    "thp": ("ok", None, "observed"),
    "src_hole_allowed": ("ok", None, "observed"),
    "pinned": ("partial", "page_pinned", "inferred"),
    "partial": ("partial", "dst_populated", "inferred"),
    "ksm": ("page_ksm", None, "inferred"),
    "fork_shared": ("page_shared", None, "inferred"),
    "dst_populated": ("dst_populated", None, "inferred"),
    "src_hole": ("src_hole", None, "inferred"),
    "misaligned": ("invalid_misaligned", None, "observed"),
    "dst_not_registered": ("invalid_dst_not_registered", None, "inferred"),
    "vma_shared": ("invalid_vma_shared", None, "inferred"),
    "src_readonly": ("invalid_src_not_writable", None, "inferred"),
    "cross_mm": ("invalid_cross_mm", None, "inferred"),
}
HOLD = "0.3"   # the tracepoint tier reads /proc after the call


@pytest.fixture(scope="module")
def session():
    if os.geteuid() != 0:
        pytest.skip("live tracing needs root")
    try:
        import bcc  # noqa: F401
    except ImportError:
        pytest.skip("bcc is not importable (python3-bpfcc missing)")
    from uffdtrace.session import Session
    s = Session()
    s.start()
    yield s
    s.close()


def traced_workload(session, *args):
    """Run a workload while polling the session; its JSON and traced moves."""
    session.drain()
    proc = subprocess.Popen([sys.executable, "-m", "uffdtrace", "workload", *args, "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    items = []
    while proc.poll() is None:
        items += session.poll(50)
    stdout, stderr = proc.communicate()
    items += session.drain()
    assert proc.returncode == 0, stderr
    out = json.loads(stdout)
    pids = {c["pid"] for c in out["calls"]} | {out["pid"]}
    moves = [i for i in items if hasattr(i, "diagnosis") and i.event.pid in pids]
    return out, moves


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_scenario_is_traced_and_diagnosed(session, scenario):
    out, moves = traced_workload(session, "-s", scenario, "--hold", HOLD)
    calls = out["calls"]
    assert len(moves) == len(calls)
    traced = sorted(moves, key=lambda m: m.event.ts_ns)
    for call, m in zip(calls, traced):
        e = m.event
        # the request and result as the kernel saw them = what the workload got
        assert (e.pid, e.tid, e.dst, e.src, e.len, e.mode) == \
            (call["pid"], call["tid"], call["dst"], call["src"], call["len"], call["mode"])
        assert e.errno == call["errno"] and e.move == call["move"]
        assert e.latency_ns > 0
        d = m.diagnosis
        assert (d.cause, d.underlying, d.evidence) == EXPECTED[scenario], (d, m.enrichment)
        if e.failed:
            assert d.to_json()["remedy"] and d.to_json()["explanation"]


def test_pinned_names_the_pinning_process_and_page(session):
    out, (move,) = traced_workload(session, "-s", "pinned", "--hold", HOLD)
    pin = out["setup"][0]["pinned"]
    d = move.diagnosis
    assert d.fail_addr == move.event.src + move.event.move == pin["addr"]
    assert d.culprit["kind"] == "pin" and d.culprit["pid"] == out["pid"] == pin["pid"]
    assert d.culprit["range"] == [pin["addr"], pin["len"]]
    assert "io_uring" in d.culprit["method"]


def test_ksm_names_the_merge(session):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _, moves = traced_workload(session, "-s", "ksm", "--hold", HOLD)
    for m in moves:
        # merged while we were tracing: the ksm tracepoint saw it happen
        assert m.diagnosis.culprit["kind"] == "ksm"
        assert m.diagnosis.culprit["merged_ts_ns"] < m.event.ts_ns


def test_storm_no_silent_loss(session):
    before = session.counters()
    out, moves = traced_workload(session, "-s", "storm", "--iterations", "100000")
    after = session.counters()
    made = out["summary"]["calls"]
    assert made == 100000
    entered = after["moves_entered"] - before["moves_entered"]
    dropped = session.drops(after) - session.drops(before)
    assert entered == made
    # every move the workload made was delivered or counted as dropped
    assert len(moves) + dropped == made, (len(moves), dropped)
    assert all(m.diagnosis.cause == "ok" for m in moves)


def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_record_pinned_end_to_end(tmp_path, root_required):
    trace = tmp_path / "t.jsonl"
    proc = uffdtrace("record", "-o", str(trace), "--", sys.executable, "-m", "uffdtrace",
                     "workload", "--scenario", "pinned", "--json")
    assert proc.returncode == 0, proc.stderr
    workload = json.loads(proc.stdout)
    records = _records(trace)
    assert records[0]["type"] == "header" and records[0]["tier"] == "tracepoint"
    assert records[-1]["type"] == "footer" and records[-1]["reason"] == "command exited"
    (move,) = [r for r in records if r["type"] == "move"]
    d = move["diagnosis"]
    assert (d["cause"], d["underlying"]) == ("partial", "page_pinned")
    assert d["fail_addr"] == workload["setup"][0]["pinned"]["addr"]
    assert d["culprit"]["pid"] == workload["pid"] and d["remedy"]
    assert any(r["type"] == "pin" and r["pid"] == workload["pid"] for r in records)
    assert any(r["type"] == "aggregates" for r in records)


def test_record_killed_leaves_readable_file(tmp_path, root_required):
    trace = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "uffdtrace", "record", "-o", str(trace),
                             "--", sys.executable, "-m", "uffdtrace", "workload", "-s", "mixed",
                             "-d", "0", "--rate", "300"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    time.sleep(4)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = trace.read_text().splitlines()
    complete = [json.loads(line) for line in lines[:-1]]   # the last may be cut
    assert complete[0]["type"] == "header"
    assert sum(r["type"] == "move" for r in complete) > 100


def test_compile_error_is_one_clear_user_error(monkeypatch, root_required):
    import uffdtrace.bpfprog as bpfprog
    from uffdtrace.errors import UserError
    from uffdtrace.session import Session
    monkeypatch.setattr(bpfprog, "program_text", lambda config: "int broken( {")
    with pytest.raises(UserError, match="cannot load the BPF program.*error"):
        Session().start()


def test_ctrl_c_stops_record_during_an_event_storm(tmp_path, root_required):
    # At hundreds of thousands of events/s, SIGINT mostly lands while bcc is
    # calling back into Python; it must still stop the recorder, not be lost.
    storm = subprocess.Popen([sys.executable, "-m", "uffdtrace", "workload", "-s", "storm",
                              "--iterations", "50000000"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trace = tmp_path / "storm.jsonl"
    try:
        rec = subprocess.Popen([sys.executable, "-m", "uffdtrace", "record", "-o", str(trace),
                                "-p", str(storm.pid)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        assert "Recording" in rec.stderr.readline()
        time.sleep(2)
        rec.send_signal(signal.SIGINT)
        _, err = rec.communicate(timeout=60)
    finally:
        storm.kill()
        storm.wait()
    assert rec.returncode == 0, err
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records[-1]["type"] == "footer" and records[-1]["reason"] == "interrupted"
    assert sum(r["type"] == "move" for r in records) > 0
