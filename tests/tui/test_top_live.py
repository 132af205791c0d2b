"""top on live tracing (bcc, this kernel): the demo source, in-process, so
the screen can be checked in detail against what the workload does."""
from __future__ import annotations


import pytest

from uffdtrace.commands.top import build_app
from uffdtrace.session import Session
from uffdtrace.taxonomy import CAUSES
from uffdtrace.top.sources import LiveSource, demo_command

from .screen import screen_text
from .topapp import SIZE, table_column

pytestmark = pytest.mark.asyncio

# What the mixed workload makes fail, diagnosed at the tracepoint tier (or better).
DEMO_CAUSES = {"page_pinned", "dst_populated", "src_hole", "page_shared",
               "invalid_misaligned", "invalid_cross_mm"}



async def test_demo_rows_causes_and_a_pinned_failure_explained(live):
    command = demo_command(200)
    source = LiveSource(Session(follow=True), command=command, label="demo",
                        aggregate_every=0.5)
    app = build_app(source, interval=0.5)
    assert app.model.error is None, app.model.error
    try:
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(120):
                await pilot.pause(0.5)
                snap = app.snapshot
                if snap and DEMO_CAUSES <= {c for c, _ in snap.causes}:
                    break
            assert app.model.error is None, app.model.error
            seen = {c for c, _ in app.snapshot.causes}
            assert DEMO_CAUSES <= seen, seen

            screen = screen_text(app)
            assert "demo" in screen and "dropped " in screen
            workload = app.snapshot.processes[0]            # busiest first
            assert table_column(app, "processes", 0)[0] == str(workload.pid)
            assert workload.moves > 0 and workload.failures > 0
            assert app.snapshot.kernel_totals              # aggregates from the live session

            pinned = next(f for f in reversed(app.snapshot.failures_recent)
                          if f.cause == "page_pinned")
            await pilot.press("tab")
            app.focused.move_to_item(str(pinned.seq))
            await pilot.press("enter")
            await pilot.pause()
            detail = screen_text(app)
            assert f"pinned by        pid {pinned.pid}" in detail     # the workload pinned it
            assert "io_uring" in detail
            assert CAUSES["page_pinned"].remedy in detail
            await pilot.press("q")
    finally:
        if app.feeder is not None:
            app.feeder.join()
        source.close()
    assert app.model.finished == "stopped"


async def test_a_failing_command_is_shown_with_its_reason(live):
    command = ["sh", "-c", "echo 'workload: cannot start' >&2; exit 3"]
    source = LiveSource(Session(follow=True), command=command, label="demo")
    app = build_app(source)
    try:
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(100):
                await pilot.pause(0.1)
                if app.model.error:
                    break
            app.refresh_view()
            await pilot.pause()
            screen = screen_text(app)
            assert "uffdtrace top: error" in screen
            assert "exited with status 3: workload: cannot start" in screen
            await pilot.press("q")
    finally:
        if app.feeder is not None:
            app.feeder.join()
        source.close()
