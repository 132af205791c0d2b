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
    assert detail["paths"] == ("4 pages by PTE; split 1 large folio: 512 pages of huge-page "
                               "coverage lost")
    ksm = {label: value for _, lines in describe_failure(rows["page_ksm"].record)
           for label, value in lines}
    assert ksm["merged by"] == "KSM (ksmd)" and ksm["merged"] == "before tracing started"


# --- questions 6 and 7: the path each page took, the folios split -------------------

# the last partial move is of a kernel without a PTE step hook: its 2 pages unseen
PATHS_TEXT = ("10 pages by PTE, 1 zero page, 1 swap entry, 2 pages by PTE steps this kernel "
              "inlines (zero page and swap entries not told apart); split 1 large folio: 512 "
              "pages of huge-page coverage lost")


def test_report_sums_each_process_paths_and_splits(trace):
    proc = uffdtrace("report", trace)
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("MOVE PATHS")[1].split("\n\n")[0]
    # the success's 6 + 1 + 1 pages and the partial move's 4 pages and split
    assert PATHS_TEXT in section
    s = json.loads(uffdtrace("report", trace, "--json").stdout)
    mp = s["move_paths"]
    assert mp["seen"] and mp["note"] is None
    [row] = mp["processes"]
    assert row["counts"] == {"pte": 10, "zero_page": 1, "swap_entry": 1, "src_hole": 0,
                             "pmd": 0, "huge_zero_pmd": 0}
    assert (row["thp_splits"], row["split_pages"], row["split_bytes"]) == (1, 512, 512 * 4096)
    assert row["kinds_told_apart"] and row["unseen_pages"] == 2


def test_export_carries_each_moves_path(trace, tmp_path):
    out = tmp_path / "k.json"
    assert uffdtrace("export", "--perfetto", trace, "-o", str(out)).returncode == 0
    moves = [e for e in check_trace_events(out)["traceEvents"] if e.get("ph") == "X"
             and e["name"].startswith("UFFDIO_MOVE")]
    ok = next(e for e in moves if e["args"]["result"] == "ok")
    assert ok["args"]["paths"] == "6 pages by PTE, 1 zero page, 1 swap entry"
    assert ok["args"]["split_pages"] == 0


def test_tracepoint_tier_report_says_it_cannot_see_paths(tmp_path):
    from tests.tracegen import mixed_items
    path = tmp_path / "tp.jsonl"
    write_trace(path, mixed_items())
    out = uffdtrace("report", str(path)).stdout
    assert "MOVE PATHS" in out and "not seen in this trace" in out
    assert "pages by PTE" not in out


def test_tracepoint_tier_paths_are_the_entries_read_at_exit():
    """The tracepoint tier reads at most PATH_READS destination entries of a
    sent move at exit: a larger move's other pages are counted as not read,
    never guessed, and splits are said to be unseen, not zero."""
    from uffdtrace import movepaths
    from uffdtrace.native import lib
    move = {"flags": 0, "kflags": lib().UT_K_PATHS_AT_EXIT | lib().UT_K_PATHS_READ, "ret": 0,
            "errno": None, "len": 20 * 4096, "move": 20 * 4096, "path_pte_pages": 15,
            "path_zero_pages": 1, "path_pmds": 0, "thp_splits": 0, "split_pages": 0}
    p = movepaths.paths(move, 4096)
    assert p.read_at_exit and p.unseen_pages == 4 and p.counts["pte"] == 15
    assert p.to_json()["splits_seen"] is False
    assert movepaths.describe(p) == (
        "15 pages by PTE, 1 zero page, 4 pages past the first 16 entries read (destination "
        "entries read at exit; splits seen by the kernel tier only)")
    # a tracepoint-tier move without the reader says nothing
    assert movepaths.paths({**move, "kflags": 0}, 4096) is None


def test_a_kernel_that_inlines_the_pte_step_counts_only_what_it_sees():
    """6.12: move_pages_pte is inlined, only PMD steps are hooked: the PTE
    pages are what was moved beyond the PMDs, their kind unknown."""
    from uffdtrace import movepaths
    from uffdtrace.native import lib
    move = {"flags": lib().UT_F_KERNEL_TIER, "kflags": lib().UT_K_PATHS_READ, "ret": 0,
            "errno": None, "len": (512 + 3) * 4096, "move": (512 + 3) * 4096,
            "path_pmds": 1, "thp_splits": 0, "split_pages": 0}
    p = movepaths.paths(move, 4096)
    assert p.unseen_pages == 3 and p.counts["pmd"] == 1 and p.counts["pte"] == 0
    assert movepaths.describe(p) == ("1 whole THP by PMD, 3 pages by PTE steps this kernel "
                                     "inlines (zero page and swap entries not told apart)")
