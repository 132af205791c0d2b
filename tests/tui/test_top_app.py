"""`uffdtrace top` driven by Textual's pilot on replayed traces: what is on
screen is checked against the trace itself, counted here independently."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from uffdtrace.session import Session
from uffdtrace.taxonomy import CAUSES
from uffdtrace.top.sources import LiveSource
from uffdtrace.commands.top import build_app

from .screen import screen_text
from .topapp import records, running, table_column, write_trace

pytestmark = pytest.mark.asyncio

MOVES = [r for r in records() if r["type"] == "move"]
FAILED = [r for r in MOVES if r["ret"] < 0]


def cause(r):
    return r["diagnosis"]["underlying"] or r["diagnosis"]["cause"]


async def type_text(pilot, text):
    for ch in text:
        await pilot.press("space" if ch == " " else ch)


async def test_rows_totals_and_causes_match_the_trace():
    async with running() as (app, pilot):
        screen = screen_text(app)
        per_pid = Counter(r["pid"] for r in MOVES)
        assert sorted(map(int, table_column(app, "processes", 0))) == sorted(per_pid)
        table = app.query_one("#processes")
        rows = {int(cells[0].plain): [c.plain.strip() for c in cells]
                for cells in map(table.get_row_at, range(table.row_count))}
        for pid, n in per_pid.items():
            cells = rows[pid]
            assert cells[4] == f"{n:,}"                                       # MOVES
            assert cells[5] == f"{sum(r['ret'] < 0 for r in MOVES if r['pid'] == pid):,}"
        assert f"moves {len(MOVES):,}" in screen
        assert f"failures {len(FAILED)} ({len(FAILED) / len(MOVES):.1%})" in screen
        assert "dropped 0" in screen
        assert "kernel " + records()[0]["kernel_release"] in screen
        for name, n in Counter(map(cause, FAILED)).items():
            line = next(ln for ln in screen.splitlines() if f"│{name} " in ln)
            assert f" {n} " in line, line
        # the failures list: every failure of the trace, newest first
        assert len(table_column(app, "failures", 0)) == len(FAILED)
        assert table_column(app, "failures", 4)[0] == cause(FAILED[-1])
        for key in ("Quit", "Sort", "Filter", "Pause", "Failures only", "Details", "Help"):
            assert key in screen.splitlines()[-1]


async def test_enter_shows_the_full_diagnosis_of_a_failure():
    pinned = next(r for r in FAILED if cause(r) == "page_pinned")
    async with running() as (app, pilot):
        await pilot.press("tab")
        assert app.focused.id == "failures"
        row = next(f for f in app.snapshot.failures_recent if f.record == pinned)
        app.focused.move_to_item(str(row.seq))
        await pilot.press("enter")
        await pilot.pause()
        screen = screen_text(app)
        culprit = pinned["diagnosis"]["culprit"]
        assert f"Failure #{row.seq}: pid {pinned['pid']}" in screen
        assert "partial: stopped by page_pinned  (EBUSY)" in screen
        assert f"pinned by        pid {culprit['pid']}" in screen
        assert culprit["method"] in screen
        assert CAUSES["page_pinned"].remedy in screen
        assert f"{pinned['diagnosis']['fail_addr']:#x}" in screen
        assert "inferred: read from /proc" in screen
        await pilot.press("escape")
        await pilot.pause()
        assert "Recent failures" in screen_text(app)


async def test_enter_on_a_process_shows_its_latest_failure():
    async with running() as (app, pilot):
        top_pid = int(table_column(app, "processes", 0)[0])
        latest = [r for r in FAILED if r["pid"] == top_pid][-1]
        await pilot.press("enter")
        await pilot.pause()
        screen = screen_text(app)
        assert f"pid {top_pid} (" in screen
        assert f"{latest['dst']:#x}" in screen and cause(latest) in screen


async def test_sorting_by_column_and_reversing():
    async with running() as (app, pilot):
        for _ in range(12):
            if app.sort_order.column == "pid":
                break
            await pilot.press("s")
        assert "sorted by PID ▲" in screen_text(app)
        pids = [int(p) for p in table_column(app, "processes", 0)]
        assert pids == sorted(pids) and len(pids) > 1
        await pilot.press("r")
        assert [int(p) for p in table_column(app, "processes", 0)] == sorted(pids, reverse=True)
        assert "sorted by PID ▼" in screen_text(app)


async def test_clicking_a_column_header_sorts_by_it():
    async with running() as (app, pilot):
        table = app.query_one("#processes")
        x = sum(c.get_render_width(table) for c in list(table.columns.values())[:5]) + 2
        await pilot.click("#processes", offset=(x, 1))      # the FAILS header
        await pilot.pause()
        assert app.sort_order.column == "fails"
        fails = [int(f.replace(",", "")) for f in table_column(app, "processes", 5)]
        assert fails == sorted(fails, reverse=True)


async def test_filter_by_cause_pid_and_comm():
    pinned_pids = {r["pid"] for r in FAILED if cause(r) == "page_pinned"}
    async with running() as (app, pilot):
        await pilot.press("slash")
        await type_text(pilot, "cause:pinned")
        await pilot.press("enter")
        await pilot.pause()
        assert {int(p) for p in table_column(app, "processes", 0)} == pinned_pids
        causes = table_column(app, "failures", 4)
        assert causes and all("page_pinned" in c for c in causes)
        assert len(causes) == sum(cause(r) == "page_pinned" for r in FAILED)
        assert "filter cause:pinned" in screen_text(app)

        await pilot.press("escape")                    # clears the filter
        assert len(table_column(app, "processes", 0)) == len({r["pid"] for r in MOVES})

        other = sorted({r["pid"] for r in MOVES})[-1]
        await pilot.press("slash")
        await type_text(pilot, f"pid:{other}")
        await pilot.press("enter")
        assert table_column(app, "processes", 0) == [str(other)]
        assert set(table_column(app, "failures", 1)) == {str(other)}


async def test_a_bad_filter_is_explained_and_changes_nothing():
    async with running() as (app, pilot):
        await pilot.press("slash")
        await type_text(pilot, "pid:x")
        await pilot.press("enter")
        await pilot.pause()
        assert app.row_filter.empty
        assert app.query_one("#filter").has_focus            # still open to fix it
        await pilot.press("escape")
        assert app.query_one("#processes").has_focus


async def test_failures_only_hides_processes_without_failures(tmp_path):
    ok = next(r for r in MOVES if r["ret"] == 0)
    healthy = {**ok, "pid": 4242, "tid": 4242, "comm": "healthy"}
    recs = records()
    path = write_trace(tmp_path / "t.jsonl", recs[:-1] + [healthy, recs[-1]])
    async with running(path) as (app, pilot):
        assert "4242" in table_column(app, "processes", 0)
        await pilot.press("f")
        assert "4242" not in table_column(app, "processes", 0)
        assert "failures only" in screen_text(app)
        await pilot.press("f")
        assert "4242" in table_column(app, "processes", 0)


async def test_failed_only_option_starts_with_failures_only(tmp_path):
    async with running(failed_only=True) as (app, pilot):
        assert app.failures_only and "failures only" in screen_text(app)


async def test_pause_freezes_the_display_not_the_model():
    async with running() as (app, pilot):
        await pilot.press("p")
        assert "PAUSED" in screen_text(app)
        app.model.feed([{**MOVES[0], "pid": 777, "comm": "late"}])
        app.refresh_view()
        await pilot.pause()
        assert "777" not in table_column(app, "processes", 0)
        await pilot.press("p")
        await pilot.pause()
        assert "777" in table_column(app, "processes", 0)
        assert "PAUSED" not in screen_text(app)


async def test_help_screen():
    async with running() as (app, pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        screen = screen_text(app)
        assert "Keys" in screen and "Evidence levels" in screen and "TLB/PG" in screen
        await pilot.press("escape")
        await pilot.pause()
        assert "Keys" not in screen_text(app)


INJECTIONS = ["[/]", "[@click=app.quit]x", "[link=https://example.com]l[/link]", "[bold]b",
              "a[b]c", "[@click=app.bell]"]


async def test_markup_in_process_names_is_shown_literally(tmp_path):
    recs = records()
    pids = sorted({r["pid"] for r in recs if r["type"] == "move"})
    comm_of = {pid: INJECTIONS[i % len(INJECTIONS)] for i, pid in enumerate(pids)}
    for r in recs:
        if r["type"] in ("move", "pin"):
            r["comm"] = comm_of.get(r["pid"], "[/]")
        culprit = (r.get("diagnosis") or {}).get("culprit")
        if culprit:
            culprit["comm"] = "[@click=app.quit]pin"
    path = write_trace(tmp_path / "evil.jsonl", recs)
    async with running(path) as (app, pilot):
        shown = dict(zip(map(int, table_column(app, "processes", 0)),
                         table_column(app, "processes", 1)))
        assert shown == comm_of
        screen = screen_text(app)
        for comm in comm_of.values():
            assert comm[:15] in screen            # the COMM column is 15 wide
        # clicking every name must not run an action
        for row in range(len(pids)):
            await pilot.click("#processes", offset=(12, 2 + row))
            await pilot.pause()
        assert app.is_running and app.return_code is None
        # the detail view, with the culprit's hostile name
        pinned = next(f for f in app.snapshot.failures_recent if f.cause == "page_pinned")
        await pilot.press("tab")
        app.focused.move_to_item(str(pinned.seq))
        await pilot.press("enter")
        await pilot.pause()
        screen = screen_text(app)
        assert f"({pinned.comm})" in screen and "([@click=app.quit]pin)" in screen
        # a filter typed with markup in it
        await pilot.press("escape", "slash")
        await type_text(pilot, "comm:[/]")
        await pilot.press("enter")
        await pilot.pause()
        assert "filter comm:[/]" in screen_text(app)
        assert set(table_column(app, "processes", 1)) == {"[/]"}
        assert app.is_running and app.return_code is None


async def test_a_bad_trace_shows_the_error_then_what_was_read(tmp_path):
    recs = records()
    cut = 40
    lines = [json.dumps(r) for r in recs]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines[:cut] + ["{oops"] + lines[cut:]) + "\n")
    async with running(path) as (app, pilot):
        screen = screen_text(app)
        assert f"{path}:{cut + 1}: not valid JSON" in screen
        await pilot.press("escape")
        await pilot.pause()
        seen = [r for r in recs[:cut] if r["type"] == "move"]
        assert f"moves {len(seen)}" in screen_text(app)
        await pilot.press("q")
    assert app.return_code == 0


async def test_tracer_failure_shows_an_error_screen(tmp_path, monkeypatch):
    # A real failure of the tracer: no kernel headers bcc could compile
    # against (as root), or tracing is refused (not root).
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    source = LiveSource(Session(), label="live")
    app = build_app(source)
    assert app.feeder is None
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.pause()
        screen = screen_text(app)
        assert "live: could not start:" in screen
        assert ("finds no kernel headers" in screen) or ("needs root" in screen)
        assert "Traceback" not in screen
        await pilot.press("q")
    assert app.return_code == 0
    source.close()


async def test_a_kernel_tier_replay_shows_gup_pins_and_ksm(tmp_path):
    """The kernel tier's culprits (a GUP pin with no range, a KSM folio with
    no ksmd pid) on screen, from a trace the real writer made."""
    from tests.tracegen import kernel_items
    from tests.tracegen import write_trace as write_generated
    path = tmp_path / "kernel.jsonl"
    write_generated(path, kernel_items(), tier="kernel")
    async with running(path) as (app, pilot):
        assert app.model.malformed == 0 and app.model.error is None
        screen = screen_text(app)
        assert "tier kernel" in screen
        await pilot.press("tab")
        row = next(f for f in app.snapshot.failures_recent if f.cause == "page_pinned")
        app.focused.move_to_item(str(row.seq))
        await pilot.press("enter")
        await pilot.pause()
        screen = screen_text(app)
        assert "pin_user_pages_fast(), long-term (FOLL_LONGTERM)" in screen
        assert "GUP hook" in screen and "pinned range" not in screen
        assert "observed: seen in the kernel" in screen
        await pilot.press("escape")
        await pilot.pause()
        row = next(f for f in app.snapshot.failures_recent if f.cause == "page_ksm")
        app.focused.move_to_item(str(row.seq))
        await pilot.press("enter")
        await pilot.pause()
        assert "before tracing started" in screen_text(app)


async def test_the_detail_view_shows_a_stack_literally(tmp_path):
    """--stacks: the issuing stack in the detail view, its symbols (which
    come from the traced program's files: untrusted) shown as written."""
    evil = "[@click=app.quit]uffdw_move"
    recs = records()
    target = next(r for r in recs if r["type"] == "move" and r["ret"] < 0)
    target["stack"] = {"frames": [
        {"space": "user", "sym": "ioctl+0x3b", "module": "/usr/lib/libc.so.6",
         "addr": 0x7f0000001000, "offset": None, "source": "unwind"},
        {"space": "user", "sym": evil + "+0x6e", "module": "/x/[b]evil.so",
         "addr": 0x7f0000002000, "offset": None, "source": "stack pointer"}], "notes": []}
    path = write_trace(tmp_path / "stack.jsonl", recs)
    async with running(path) as (app, pilot):
        row = next(f for f in app.snapshot.failures_recent if f.record["ts_ns"] ==
                   target["ts_ns"] and f.record["pid"] == target["pid"])
        await pilot.press("tab")
        app.focused.move_to_item(str(row.seq))
        await pilot.press("enter")
        await pilot.pause()
        screen = screen_text(app)
        assert "Issued by" in screen
        assert f"issued by        {evil}" in screen, screen
        assert f"u {evil}+0x6e [[b]evil.so] (return address at the stack pointer)" in screen
        assert app.is_running and app.return_code is None
