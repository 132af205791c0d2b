"""Running `uffdtrace top` inside tests: the real app on a replayed trace."""
from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path

from uffdtrace.commands.top import build_app
from uffdtrace.top.sources import ReplaySource

DATA = Path(__file__).resolve().parent / "data"
MIXED = DATA / "mixed.jsonl"
SIZE = (130, 40)


def records(path=MIXED) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def write_trace(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def replay_app(path=MIXED, **kw):
    """The app `uffdtrace top --replay PATH --speed 0` builds."""
    return build_app(ReplaySource(str(path), 0.0), **kw)


async def settle(pilot):
    """Wait until the replay is fully read, then refresh the display once."""
    app = pilot.app
    for _ in range(500):
        if app.model.finished or app.model.error:
            break
        await pilot.pause(0.02)
    assert app.model.finished or app.model.error, "replay did not finish"
    app.refresh_view()
    await pilot.pause()


@asynccontextmanager
async def running(path=MIXED, size=SIZE, **kw):
    app = replay_app(path, **kw)
    try:
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            yield app, pilot
    finally:
        if app.feeder is not None:
            app.feeder.join()


def table_column(app, table_id: str, column: int) -> list[str]:
    table = app.query_one(f"#{table_id}")
    return [table.get_row_at(i)[column].plain for i in range(table.row_count)]
