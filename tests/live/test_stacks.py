"""--stacks as a user runs it (tracepoint tier, real bcc): `record --stacks`
of workloads whose moves fail and whose pages are pinned, then report,
export and top --replay on the trace name the workload's own C function
that issued each failing move -- uffdw_move (native/uffdw.c), which calls
ioctl(2) -- and the one that pinned the pages, uffdw_iouring_pin.

glibc's ioctl() keeps no frame pointer, so a frame-pointer walk alone would
skip uffdw_move and name its cffi wrapper: these tests fail unless the
frame the tracer puts back (the return address at the user stack pointer,
where libc's unwind table says) is there and is uffdw_move."""
from __future__ import annotations

import json
import sys

import jsonschema
import pytest

from tests.helpers import trace_records, uffdtrace
from tests.traceevents import check_trace_events
from uffdtrace import stacks
from uffdtrace.chrometrace import MOVE_CATEGORY
from uffdtrace.traceschema import strict_schema

SCENARIOS = {"dst_populated": "dst_populated", "pinned": "page_pinned"}
NATIVE_MODULE = "_native.abi3.so"


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    from tests.conftest import require_bcc_root
    require_bcc_root()
    d = tmp_path_factory.mktemp("stacks")
    trace = d / "stacks.jsonl"
    py = sys.executable
    script = " && ".join(f"{py} -m uffdtrace workload -s {s} --json > {d}/{s}.json"
                         for s in SCENARIOS)
    proc = uffdtrace("record", "--stacks", "-o", str(trace), "--", "sh", "-c", script,
                     timeout=300)
    assert proc.returncode == 0, proc.stderr
    made = {s: json.loads((d / f"{s}.json").read_text()) for s in SCENARIOS}
    return trace, made


def _own_frame(stack: dict) -> dict:
    """The first user frame outside libc: what a reader names as the issuer."""
    return next(fr for fr in stack["frames"] if fr["space"] == "user"
                and not stacks.in_wrapper(fr))


def test_every_failure_names_uffdw_move(live, traced):
    trace, made = traced
    schema = jsonschema.Draft7Validator(strict_schema())
    records = trace_records(trace)
    for r in records:
        assert not list(schema.iter_errors(r)), r
    assert records[0]["stacks"] is True
    pids = {out["pid"] for out in made.values()}
    failures = [r for r in records if r["type"] == "move" and r["ret"] < 0 and r["pid"] in pids]
    assert {r["diagnosis"]["underlying"] or r["diagnosis"]["cause"] for r in failures} == \
        set(SCENARIOS.values())
    for r in failures:
        stack = r["stack"]
        assert stack is not None and stack["notes"] == [], stack
        frames = stack["frames"]
        # the syscall in libc's ioctl(), then the workload's own function,
        # put back from the stack pointer, then its cffi wrapper (the walk)
        assert stacks.function(frames[0]) == "ioctl" and stacks.in_wrapper(frames[0]), frames
        own = _own_frame(stack)
        assert stacks.function(own) == "uffdw_move", frames
        assert own["module"].endswith(NATIVE_MODULE) and own is frames[1]
        assert own["source"] == stacks.STACK_POINTER
        assert stacks.function(frames[2]) == "_cffi_f_uffdw_move", frames
        assert all(fr["space"] == "user" and fr["addr"] for fr in frames)
    # successes carry none: stacks are taken for failures only
    assert all(r.get("stack") is None for r in records if r["type"] == "move" and r["ret"] == 0)


def test_the_pin_names_uffdw_iouring_pin(live, traced):
    trace, made = traced
    pins = [r for r in trace_records(trace) if r["type"] == "pin" and not r["released"]
            and r["pid"] == made["pinned"]["pid"]]
    assert pins
    for p in pins:
        own = _own_frame(p["stack"])
        assert stacks.function(own) == "uffdw_iouring_pin", p["stack"]
        # the tracepoint tier takes no kernel stack (only the syscall entry)
        assert not [fr for fr in p["stack"]["frames"] if fr["space"] == "kernel"]
    culprits = [r["diagnosis"]["culprit"] for r in trace_records(trace)
                if r["type"] == "move" and r["pid"] == made["pinned"]["pid"] and r["ret"] < 0]
    assert culprits and all(stacks.issuer(c["stack"]) == "uffdw_iouring_pin" for c in culprits)


def test_report_says_who_issued_each_cause(live, traced):
    trace, made = traced
    proc = uffdtrace("report", str(trace), "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["trace"]["stacks"] is True
    rows = {c["cause"]: c for c in s["causes"]}
    for scenario, cause in SCENARIOS.items():
        (top, *_) = rows[cause]["issuers"]
        assert top["stack"].startswith("uffdw_move ← _cffi_f_uffdw_move"), top
        assert top["moves"] == made[scenario]["summary"]["failed"]
    (pinner,) = [p for p in s["pinners"] if p["pid"] == made["pinned"]["pid"]]
    assert pinner["pinned_by"].startswith("uffdw_iouring_pin ← _cffi_f_uffdw_iouring_pin")
    text = uffdtrace("report", str(trace)).stdout
    assert "issued by: uffdw_move ← _cffi_f_uffdw_move" in text
    assert "pinned by: uffdw_iouring_pin" in text


def test_export_puts_the_stack_in_the_slice(live, traced, tmp_path):
    trace, _ = traced
    out = tmp_path / "stacks.json"
    proc = uffdtrace("export", "--perfetto", str(trace), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    events = check_trace_events(out)["traceEvents"]
    failed = [e for e in events if e.get("cat") == MOVE_CATEGORY and e["ph"] == "X"
              and e["args"].get("result") not in (None, "ok") and "count" not in e["args"]]
    assert failed
    for e in failed:
        assert e["args"]["issued_by"].startswith("uffdw_move ← "), e["args"]
        assert any("uffdw_move+0x" in line for line in e["args"]["stack"])
    pins = [e for e in events if e["name"] == "pages pinned"]
    assert pins and all(e["args"]["issued_by"].startswith("uffdw_iouring_pin") for e in pins)


@pytest.mark.asyncio
async def test_top_replay_detail_shows_the_issuer(live, traced):
    from tests.tui.screen import screen_text
    from tests.tui.topapp import running
    trace, _ = traced
    async with running(trace) as (app, pilot):
        await pilot.press("tab")
        assert app.focused.id == "failures"
        await pilot.press("enter")
        await pilot.pause()
        screen = screen_text(app)
        assert "Issued by" in screen
        assert "issued by        uffdw_move ← _cffi_f_uffdw_move" in screen, screen
        assert "uffdw_move+0x" in screen


def test_trace_lines_end_with_the_issuer(live):
    proc = uffdtrace("trace", "--stacks", "--", sys.executable, "-m", "uffdtrace", "workload",
                     "-s", "dst_populated", timeout=120)
    assert proc.returncode == 0, proc.stderr
    failed = [ln for ln in proc.stdout.splitlines() if "dst_populated [" in ln]
    assert failed and all(ln.endswith(" by uffdw_move") for ln in failed), proc.stdout
