"""Widgets of `uffdtrace top`.  Every string from a trace (comm, paths,
causes, notes) reaches the screen as a rich Text, never as markup."""
from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.widget import Widget
from textual.widgets import DataTable, Static

from .model import Snapshot


class _KeyCell(Text):
    """A row's first cell, carrying its row key so the table can be put in
    any order with DataTable.sort (whose key function sees only cells)."""

    def __init__(self, text: str, row_key: str, **kw):
        super().__init__(text, **kw)
        self.row_key = row_key


class KeyedTable(DataTable):
    """A DataTable kept in sync with a list of rows: only changed cells are
    updated, rows come and go by key, and the cursor stays on its row."""

    BINDINGS = [Binding("enter", "select_cursor", "Details")]   # shown in the footer

    def __init__(self, columns: list[tuple[str, str, int, bool]], **kw):
        """columns: (key, label, width, right_aligned)."""
        super().__init__(cursor_type="row", zebra_stripes=False, **kw)
        self._columns = columns
        self._cells: dict[str, tuple[str, ...]] = {}
        self._order: list[str] = []
        self.cell_updates = 0          # for bench/tui_load.py

    def on_mount(self):
        for key, label, width, right in self._columns:
            self.add_column(Text(label, justify="right" if right else "left"),
                            width=width, key=key)

    def _cell(self, index: int, text: str, row_key: str) -> Text:
        justify = "right" if self._columns[index][3] else "left"
        if index == 0:
            return _KeyCell(text, row_key, justify=justify, no_wrap=True)
        return Text(text, justify=justify, no_wrap=True)

    @property
    def cursor_key(self) -> str | None:
        if not self.row_count:
            return None
        row = min(self.cursor_row, self.row_count - 1)
        return self.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value

    def sync(self, rows: list[tuple[str, tuple[str, ...]]]):
        """Show exactly `rows` (key, cell texts), in this order.

        A cursor the user moved stays on its row; one left on the first row
        (or in a table not in use) stays on the first row: the newest or
        busiest, like top."""
        cursor = self.cursor_key if self.has_focus and self.cursor_row > 0 else None
        wanted = dict(rows)
        for key in [k for k in self._cells if k not in wanted]:
            self.remove_row(key)
            del self._cells[key]
        col_keys = [c[0] for c in self._columns]
        for key, cells in rows:
            old = self._cells.get(key)
            if old is None:
                self.add_row(*(self._cell(i, c, key) for i, c in enumerate(cells)), key=key)
                self.cell_updates += len(cells)
            elif old != cells:
                for i, (a, b) in enumerate(zip(old, cells)):
                    if a != b:
                        self.update_cell(key, col_keys[i], self._cell(i, b, key))
                        self.cell_updates += 1
            self._cells[key] = cells
        order = [k for k, _ in rows]
        if order != self._order:
            position = {k: i for i, k in enumerate(order)}
            self.sort(col_keys[0], key=lambda cell: position[cell.row_key])
            self._order = order
            if cursor in position:
                self.move_cursor(row=position[cursor], animate=False)


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def header_text(snap: Snapshot, *, paused: bool, failures_only: bool, filter_text: str) -> Text:
    t = Text(no_wrap=False, overflow="fold")

    def field(label: str, value: str, style: str = "bold"):
        if label:
            t.append(f"{label} ", style="dim")
        t.append(value, style=style)
        t.append("   ")

    t.append("uffdtrace top", style="bold reverse")
    t.append("  ")
    field("", snap.source)
    field("tier", snap.tier or "?")
    field("kernel", snap.kernel or "?")
    field("elapsed", _duration(snap.elapsed_s))
    if paused:
        t.append(" PAUSED ", style="bold black on yellow")
        t.append("  ")
    if snap.error:
        t.append(" ERROR ", style="bold white on red")
    elif snap.finished:
        t.append(f" ended: {snap.finished} ", style="bold black on cyan")
    t.append("\n")
    field("moves/s", f"{snap.moves_per_s:,.0f}")
    if snap.mib_per_s is None:
        field("MiB/s", "n/a (failed-only)")
    else:
        field("MiB/s", ("" if snap.mib_exact else ">=") + f"{snap.mib_per_s:,.2f}")
    field("moves", f"{snap.moves:,}")
    rate = snap.failure_rate
    field("failures", f"{snap.failures:,}" + (f" ({rate:.1%})" if rate is not None else ""),
          "bold red" if snap.failures else "bold")
    field("dropped", f"{snap.drops:,}", "bold white on red" if snap.drops else "bold green")
    if snap.malformed:
        field("malformed records", f"{snap.malformed:,}", "bold white on red")
    if not snap.kernel_totals:
        t.append("(totals from events only)  ", style="dim")
    if failures_only:
        t.append(" failures only ", style="bold black on magenta")
        t.append("  ")
    if filter_text:
        field("filter", filter_text, "bold magenta")
    return t


CAUSE_LABEL = 27


def causes_text(causes: tuple[tuple[str, int], ...], width: int) -> Text:
    """One line per cause; `width` is the panel's: the bar gets what is left."""
    t = Text(no_wrap=True, overflow="ellipsis")
    if not causes:
        t.append("no failures yet", style="dim")
        return t
    top = causes[0][1]
    total = sum(n for _, n in causes)
    label = max(min(CAUSE_LABEL, width - 16), 8)
    bar = max(width - label - 15, 1)
    for i, (cause, n) in enumerate(causes):
        if i:
            t.append("\n")
        t.append(f"{cause:<{label}.{label}} ", style="bold")
        t.append(f"{n:>8,} {n / total:>4.0%} ")
        t.append("█" * max(1, round(bar * n / top)), style="red")
    return t


def _ns(v: int) -> str:
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v}ns"


def latency_text(latency_log2: tuple[tuple[int, int], ...], width: int) -> Text:
    """A log2 histogram (bcc's buckets), one line per bucket from its lower
    bound; `width` is the panel's."""
    t = Text(no_wrap=True, overflow="ellipsis")
    if not latency_log2:
        t.append("no moves yet", style="dim")
        return t
    top = max(n for _, n in latency_log2)
    bar = max(width - 18, 1)
    lo, hi = latency_log2[0][0], latency_log2[-1][0]
    counts = dict(latency_log2)
    for b in range(lo, hi + 1):
        n = counts.get(b, 0)
        if b > lo:
            t.append("\n")
        low = 0 if b == 0 else 1 << (b - 1)
        t.append(f"{'>=' + _ns(low):>9}", style="dim")      # up to the next line's
        t.append(f"{n:>8,} ")
        t.append("█" * round(bar * n / top), style="cyan")
    return t


class SizedPanel(Widget):
    """Text drawn to the panel's current width (bars fill what is left), so
    it is built at render time: right after any resize or layout change."""

    def __init__(self, build: Callable[[object, int], Text], **kw):
        super().__init__(**kw)
        self._build, self._data = build, None

    def show(self, data):
        if data != self._data:
            self._data = data
            self.refresh()

    def render(self) -> Text:
        return self._build(self._data, self.content_size.width) if self._data is not None \
            else Text()


class Panel(Static):
    """A Static showing a Text built by code (never markup), repainted only
    when the text changed (an update also costs a layout pass)."""

    _shown: Text | None = None

    def show(self, text: Text):
        if text != self._shown:
            self._shown = text
            self.update(text)
