"""SVG snapshots of top's main views (pytest-textual-snapshot).  Replayed at
full speed from a committed trace: every number on screen comes from the
trace, none from the clock, so the pictures are deterministic.

After an intended change of the display: review, then
    .venv/bin/python -m pytest tests/tui/test_top_snapshots.py --snapshot-update
"""
from __future__ import annotations

import pytest

from .topapp import SIZE, replay_app, settle


@pytest.fixture
def top_app():
    apps = []

    def make(**kw):
        apps.append(replay_app(**kw))
        return apps[-1]

    yield make
    for app in apps:
        if app.feeder is not None:
            app.feeder.join()


def test_main_view(snap_compare, top_app):
    assert snap_compare(top_app(), terminal_size=SIZE, run_before=settle)


def test_detail_view(snap_compare, top_app):
    async def open_pinned_failure(pilot):
        await settle(pilot)
        await pilot.press("tab")
        row = next(f for f in pilot.app.snapshot.failures_recent if f.cause == "page_pinned")
        pilot.app.focused.move_to_item(str(row.seq))
        await pilot.press("enter")

    assert snap_compare(top_app(), terminal_size=SIZE, run_before=open_pinned_failure)


def test_help_view(snap_compare, top_app):
    async def open_help(pilot):
        await settle(pilot)
        await pilot.press("question_mark")

    assert snap_compare(top_app(), terminal_size=SIZE, run_before=open_help)


def test_filtered_failures_only_small_terminal(snap_compare, top_app):
    async def filter_einval(pilot):
        await settle(pilot)
        await pilot.press("f", "slash", *"cause:invalid", "enter", "s")

    assert snap_compare(top_app(), terminal_size=(80, 24), run_before=filter_einval)
