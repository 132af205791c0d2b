"""A kernel-tier trace as a user meets it: `report` (text and --json),
`export --perfetto` and `top`'s model, detail view and table cells, on the
shapes only the kernel tier records -- a GUP pin culprit with no range or
thread, a KSM culprit with no ksmd pid, GUP pin and unpin records, step
errors with retries.  (These crashed report and export with KeyErrors.)"""
from __future__ import annotations

import json

import pytest

from tests.helpers import uffdtrace
from tests.traceevents import check_trace_events
from tests.tracegen import kernel_items, write_trace
from uffdtrace.top.detail import describe_failure
from uffdtrace.top.model import TopModel
from uffdtrace.top.view import failure_cells
from uffdtrace.tracereader import iter_records

GUP_LABEL = "pin_user_pages_fast(), FOLL_LONGTERM"


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "kernel.jsonl"
    write_trace(path, kernel_items(), tier="kernel")
    return str(path)


def test_report_text_names_the_gup_pinner_and_the_ksm_page(trace):
    proc = uffdtrace("report", trace)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "kernel tier" in out
    assert f"pid 300 (fio) via {GUP_LABEL}" in out
    assert "io_uring_register" not in out     # the label of registrations, not GUP pins
    assert "pinned by pid 300 (fio) via pin_user_pages_fast(), long-term" in out
    assert "merged by KSM before tracing started" in out
    assert "KSM (merged before tracing started): blocked 1 move" in out


def test_report_json_causes_evidence_and_pinners(trace):
    proc = uffdtrace("report", trace, "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    causes = {c["cause"]: c for c in s["causes"]}
    assert set(causes) == {"page_pinned", "page_ksm", "dst_populated"}
    assert all(c["evidence"] == {"observed": c["count"]} for c in causes.values())
    assert causes["page_pinned"]["errno"] == {"EAGAIN": 1}
    assert causes["dst_populated"]["errno"] == {"EEXIST": 1, "EAGAIN": 1}
    assert causes["page_pinned"]["example"]["culprit"]["range"] is None
    [pinner] = s["pinners"]
    assert (pinner["pid"], pinner["method"], pinner["blocked_moves"]) == (300, GUP_LABEL, 1)
    assert pinner["ranges"] == [[0x7f1000004000, 4 * 4096]]   # from its pin record
    [ksm] = s["ksm"]
    assert ksm["ksmd_pid"] is None and ksm["blocked_moves"] == 1


def test_export_shows_gup_pins_and_culprits_without_a_range(trace, tmp_path):
    out = tmp_path / "k.json"
    proc = uffdtrace("export", "--perfetto", trace, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    events = check_trace_events(out)["traceEvents"]
    pins = [e for e in events if e.get("cat") == "pin"]
    assert [e["name"] for e in pins] == ["pages pinned", "pages unpinned"]
    assert all(e["args"]["method"] == GUP_LABEL and "io_uring_fd" not in e["args"]
               for e in pins)
    failures = {e["args"]["underlying"] or e["args"]["cause"]: e for e in events
                if e.get("cat") == "uffd_move_failure"}
    pinned = failures["page_pinned"]["args"]
    assert pinned["underlying"] == "page_pinned" and pinned["culprit"]["range"] is None
    assert pinned["culprit"]["source"] == "GUP hook"
    assert failures["page_ksm"]["args"]["culprit"] == {"kind": "ksm", "merged_ts_ns": None,
                                                        "ksmd_pid": None}


def test_top_model_and_detail_view(trace):
    records = list(iter_records(trace))
    model = TopModel()
    model.feed(records)
    snap = model.snapshot()
    assert snap.malformed == 0 and snap.tier == "kernel"
    assert dict(snap.causes) == {"page_pinned": 1, "page_ksm": 1, "dst_populated": 2}
    rows = {r.cause: r for r in snap.failures_recent}
    pinned = rows["page_pinned"]
    assert pinned.partial and pinned.evidence == "observed"
    cells = failure_cells(pinned)
    assert "page_pinned (partial)" in cells and "16,384" in cells
    detail = {label: value for _, lines in describe_failure(pinned.record, pinned.t,
                                                            snap.t0_ns, snap.page_size)
              for label, value in lines}
    assert detail["pinned by"] == "pid 300 (fio)"
    assert detail["method"] == "pin_user_pages_fast(), long-term (FOLL_LONGTERM)"
    assert detail["seen by"] == "GUP hook" and "pinned range" not in detail
    ksm = {label: value for _, lines in describe_failure(rows["page_ksm"].record)
           for label, value in lines}
    assert ksm["merged by"] == "KSM (ksmd)" and ksm["merged"] == "before tracing started"
