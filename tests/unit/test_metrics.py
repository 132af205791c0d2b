"""The metrics `serve` exposes and `report --openmetrics` renders: one
rendering of trace records, checked against the report's own reading of the
same trace, against a strict OpenMetrics parser, and for the bounds a
daemon needs (labels, per-process state, exited processes)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from collections import Counter

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.helpers import ROOT, trace_records, uffdtrace
from uffdtrace.metrics import (LATENCY_BUCKETS, OTHER_COMM, MetricsState, log2_histogram,
                               registry_of, render_openmetrics)
from uffdtrace.serving import MetricsSink
from uffdtrace.tracesummary import summarize

MIXED = ROOT / "tests/tui/data/mixed.jsonl"


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, through the strict parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_label(text: str, name: str, label: str) -> Counter:
    total = Counter()
    for (sample, labels), value in samples(text).items():
        if sample == name:
            total[dict(labels)[label]] += value
    return total


def state_of(records, **kw) -> MetricsState:
    state = MetricsState(**kw)
    state.add_all(records)
    return state


def text_of(state: MetricsState) -> str:
    return render_openmetrics(registry_of(state))


def test_log2_buckets_are_cumulative_with_exact_integer_bounds():
    # bucket b counts [2**(b-1), 2**b): 4096 is in bucket 13, so le=8191 holds it
    # and le=4095 does not
    assert log2_histogram({0: 2, 13: 5, 14: 1, 60: 1}, (0, 12, 13, 14)) == [
        ("0.0", 2), ("4095.0", 2), ("8191.0", 7), ("16383.0", 8), ("+Inf", 9)]
    bounds = [le for le, _ in log2_histogram({}, LATENCY_BUCKETS, 10 ** 9)]
    assert bounds[0] == "2.55e-07" and bounds[-1] == "+Inf"


def test_the_report_and_the_metrics_count_the_same_failures_by_cause():
    text = uffdtrace("report", "--openmetrics", str(MIXED)).stdout
    report = summarize(str(MIXED))
    causes = by_label(text, "uffdtrace_move_failures_total", "cause")
    assert causes == Counter({row["cause"]: row["count"] for row in report["causes"]})
    moves = samples(text)
    totals = report["totals"]
    assert sum(v for (n, _), v in moves.items() if n == "uffdtrace_moves_total") \
        == totals["moves"]
    assert sum(v for (n, labels), v in moves.items()
               if n == "uffdtrace_moves_total" and ("result", "ok") not in labels) \
        == totals["failed"]
    assert sum(by_label(text, "uffdtrace_partial_moves_total", "comm").values()) \
        == totals["partial"]


def test_live_records_and_a_trace_file_render_the_same_text():
    """serve feeds the records `record` writes (MetricsSink); report reads
    them back from the file: the same records give the same text."""
    records = trace_records(MIXED)
    live = MetricsState()
    sink = MetricsSink(live)
    for r in records:
        sink.write(r)
    assert text_of(live) == uffdtrace("report", "--openmetrics", str(MIXED)).stdout


def test_histograms_count_every_move_the_kernel_counted():
    text = uffdtrace("report", "--openmetrics", str(MIXED)).stdout
    s = samples(text)
    last = [r for r in trace_records(MIXED) if r["type"] == "aggregates"][-1]
    moves = sum(row["count"] for row in last["outcomes"])
    assert s[("uffdtrace_move_latency_seconds_bucket", (("le", "+Inf"),))] == moves
    buckets = [v for (n, _), v in sorted(
        ((k, v) for k, v in s.items() if k[0] == "uffdtrace_move_size_bytes_bucket"),
        key=lambda kv: float(dict(kv[0][1])["le"]))]
    assert buckets == sorted(buckets) and buckets[-1] == moves


def test_histogram_sums_are_the_kernels_exact_sums():
    """A trace from before the kernel summed latency has no _sum (nor
    _count: prometheus-client leaves both out) rather than a made-up one."""
    agg = _aggregates(1.0, [(1, None, 3)])
    agg["counters"] = {"latency_ns": 4500, "bytes_requested": 3 * 4096}
    agg["histograms"] = {"latency_log2": {"11": 2, "12": 1}, "size_log2": {"13": 3}}
    s = samples(text_of(state_of([agg])))
    assert s[("uffdtrace_move_latency_seconds_sum", ())] == 4.5e-06
    assert s[("uffdtrace_move_latency_seconds_count", ())] == 3
    assert s[("uffdtrace_move_size_bytes_sum", ())] == 3 * 4096
    assert s[("uffdtrace_move_size_bytes_bucket", (("le", "4095.0"),))] == 0
    assert s[("uffdtrace_move_size_bytes_bucket", (("le", "8191.0"),))] == 3


def _failure(pid, tid, ts, comm="w", errno="EEXIST", cause="dst_populated"):
    return {"type": "move", "pid": pid, "tid": tid, "comm": comm, "ts_ns": ts, "ret": -17,
            "errno": errno, "move": 0, "len": 4096,
            "diagnosis": {"cause": cause, "underlying": None, "evidence": "observed"}}


def _aggregates(t, rows):
    return {"type": "aggregates", "elapsed_s": t, "counters": {}, "histograms": {},
            "outcomes": [{"pid": pid, "errno": e, "partial": False, "count": n}
                         for pid, e, n in rows]}


def test_repeats_count_under_their_runs_cause_and_lost_firsts_as_unknown():
    state = state_of([
        _failure(1, 1, 100),
        {"type": "repeat", "pid": 1, "tid": 1, "count": 41, "first_ts_ns": 100},
        {"type": "repeat", "pid": 1, "tid": 2, "count": 7, "first_ts_ns": 50},
        # a first failure that met a full ring buffer comes after its run's repeat
        {"type": "repeat", "pid": 1, "tid": 3, "count": 5, "first_ts_ns": 70},
        _failure(1, 3, 70, cause="src_hole", errno="ENOENT"),
    ])
    causes = lambda: by_label(text_of(state), "uffdtrace_move_failures_total", "cause")
    # tid 2's first failure may still come: not counted yet
    assert causes() == Counter({"dst_populated": 42, "src_hole": 6})
    state.add(_aggregates(11.0, []))            # ... but not after 10 s
    assert causes() == Counter({"dst_populated": 42, "src_hole": 6, "unknown": 7})


def test_comm_labels_are_capped_first_come():
    state = state_of([_failure(pid, pid, pid, comm=f"c{pid}") for pid in range(1, 6)],
                     comm_limit=2)
    comms = by_label(text_of(state), "uffdtrace_move_failures_total", "comm")
    assert comms == Counter({"c1": 1, "c2": 1, OTHER_COMM: 3})


def test_a_retired_process_keeps_its_counts_under_its_comm():
    """serve takes exited processes out of the kernel's outcome map: the
    moves they made must not disappear from the counters."""
    state = state_of([_failure(7, 7, 1, comm="gc"),
                      _aggregates(1.0, [(7, None, 10), (7, "EEXIST", 1), (8, None, 5)]),
                      _aggregates(2.0, [(8, None, 6)])])     # pid 7 exited, retired
    moves = samples(text_of(state))
    assert moves[("uffdtrace_moves_total", (("comm", "gc"), ("result", "ok")))] == 10
    assert moves[("uffdtrace_moves_total", (("comm", "gc"), ("result", "EEXIST")))] == 1
    assert state.tracked_pids() == 1
    # pid 8 was never named: while tracing it waits for a name, at the end
    # it counts as unknown
    assert ("uffdtrace_moves_total", (("comm", "unknown"), ("result", "ok"))) not in moves
    state.finish("end")
    assert samples(text_of(state))[
        ("uffdtrace_moves_total", (("comm", "unknown"), ("result", "ok")))] == 6


def test_a_process_retired_before_its_records_came_counts_under_their_name():
    """Behind a backlog of failure records, a short-lived process can leave
    the kernel's counts before any record names it: its moves wait."""
    state = state_of([_aggregates(1.0, [(9, "EEXIST", 1)]), _aggregates(2.0, [])])
    assert not samples(text_of(state)).get(("uffdtrace_moves_total",
                                            (("comm", "unknown"), ("result", "EEXIST"))))
    state.add(_failure(9, 9, 5, comm="late"))
    assert samples(text_of(state))[
        ("uffdtrace_moves_total", (("comm", "late"), ("result", "EEXIST")))] == 1


def test_per_pid_series_are_capped_and_age_out():
    records = [_failure(pid, pid, pid) for pid in range(1, 5)]
    records.append(_aggregates(10.0, [(pid, "EEXIST", 1) for pid in range(1, 5)]))
    state = state_of(records, per_pid=True, pid_limit=2, pid_ttl_s=30)
    pids = by_label(text_of(state), "uffdtrace_process_move_failures_total", "pid")
    assert set(pids) == {"1", "2"}          # first come; the others wait for a slot
    # 90 s later nothing moved: their series go, their counts stay per comm
    state.add(_aggregates(100.0, [(pid, "EEXIST", 1) for pid in range(1, 5)]))
    text = text_of(state)
    assert not [k for k in samples(text) if k[0].startswith("uffdtrace_process_")]
    assert by_label(text, "uffdtrace_move_failures_total", "comm") == Counter({"w": 4})


def test_a_long_run_of_failing_threads_does_not_pile_up_in_the_linker():
    state = MetricsState()
    second = 10 ** 9
    for tid in range(1, 20_001):
        state.add(_failure(1, tid, tid * second // 100))    # 100 threads a second
    assert len(state.linker._latest) < 20_000 // 100 * 60 * 2 + 1024


# --- the Grafana dashboard ----------------------------------------------------

DASHBOARD = ROOT / "contrib/grafana/uffdtrace.json"


def dashboard_metric_names() -> set[str]:
    """The metric names the dashboard's queries use (tests/live/test_serve.py
    checks them against a real serve's /metrics)."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    return {name for e in exprs for name in re.findall(r"\b(?:uffdtrace|process)_[a-z0-9_]+", e)}


def test_the_dashboard_has_the_main_panels():
    board = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for panel in ("moves/s", "failures by cause", "latency heatmap", "drops"):
        assert panel in titles
    assert {"uffdtrace_moves_total", "uffdtrace_move_failures_total",
            "uffdtrace_move_latency_seconds_bucket", "uffdtrace_drops_total"} <= \
        dashboard_metric_names()


@pytest.mark.parametrize("args", [["--listen", "nope"], ["--listen", "::1:80"],
                                  ["--listen", "1:99999"], ["--max-comms", "0"]])
def test_serve_refuses_bad_options_in_one_line(args):
    proc = uffdtrace("serve", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("uffdtrace: ")


# --- the systemd unit -----------------------------------------------------------

UNIT = ROOT / "contrib/systemd/uffdtrace.service"


def test_the_systemd_units_command_is_one_serve_accepts():
    import shlex
    from uffdtrace.cli import build_parser
    (line,) = [ln for ln in UNIT.read_text().splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(line[len("ExecStart="):])
    assert argv[0].endswith("/.venv/bin/uffdtrace")
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert "Type=notify" in UNIT.read_text()


def test_systemd_accepts_the_unit(tmp_path):
    import shutil
    import subprocess
    import sys
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    script = Path(sys.executable).parent / "uffdtrace"
    unit = tmp_path / "uffdtrace.service"
    unit.write_text(UNIT.read_text().replace("/opt/uffdtrace/.venv/bin/uffdtrace", str(script)))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    complaints = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "uffdtrace" in ln]
    assert not complaints, complaints


def test_serve_without_root_gives_the_tracing_commands_one_line_reason():
    import os
    preexec = (lambda: os.setuid(65534)) if os.geteuid() == 0 else None
    serve = uffdtrace("serve", preexec=preexec)
    record = uffdtrace("record", "-o", "/dev/null", preexec=preexec)
    assert serve.returncode == 2 and serve.stderr.count("\n") == 1, serve.stderr
    assert serve.stderr == record.stderr
