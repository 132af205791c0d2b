"""Widgets of `uffdtrace top`.  Every string from a trace (comm, paths,
causes, notes) reaches the screen as a rich Text, never as markup."""
from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable, Static

from ..textsafe import printable
from .model import Snapshot


class ListTable(DataTable):
    """A DataTable showing a list of items in order, cheaply enough for
    thousands of rows refreshed 4 times a second.

    Rows are positional slots reused as the list changes order, so a new
    order costs no DataTable.sort and no row is re-added; only the cells in
    view that changed are updated (rows scrolled into view catch up at
    once).  Rows are only added or removed when the list grows or shrinks.
    The cursor stays on its item (by key) once the user has moved it; until
    then it stays on the first row: the busiest or the newest, like top.
    """

    BINDINGS = [Binding("enter", "select_cursor", "Details")]   # shown in the footer
    VIEW_MARGIN = 2       # rows beyond the viewport kept current too
    REBUILD_ABOVE = 16    # DataTable.remove_row is O(rows): shrink more by refilling

    def __init__(self, columns: list[tuple[str, str, int, bool]],
                 cells: Callable[[object], tuple[str, ...]], **kw):
        """columns: (key, label, width, right_aligned); cells(item) -> texts."""
        super().__init__(cursor_type="row", zebra_stripes=False, **kw)
        self._columns = columns
        self._col_keys = [c[0] for c in columns]
        self._format = cells
        self._items: list[tuple[str, object]] = []     # (item key, item), in order
        self._shown: list[tuple[str, ...]] = []        # per row: the texts on screen
        self.cell_updates = 0          # for bench/tui_load.py

    def on_mount(self):
        for key, label, width, right in self._columns:
            self.add_column(Text(label, justify="right" if right else "left"),
                            width=width, key=key)

    def _cell(self, column: int, text: str) -> Text:
        return Text(text, justify="right" if self._columns[column][3] else "left",
                    no_wrap=True)

    def item_key(self, row: int) -> str | None:
        return self._items[row][0] if 0 <= row < len(self._items) else None

    @property
    def cursor_item(self) -> str | None:
        return self.item_key(self.cursor_row)

    def move_to_item(self, key: str) -> bool:
        for row, (k, _) in enumerate(self._items):
            if k == key:
                self.move_cursor(row=row, animate=False)
                return True
        return False

    def sync(self, items: list[tuple[str, object]]):
        """Show exactly `items` (key, item), in this order."""
        follow = self.cursor_item if self.has_focus and self.cursor_row > 0 else None
        self._items = items
        if self.row_count - len(items) > self.REBUILD_ABOVE:
            self.clear()
            self._shown = []
        while self.row_count > len(items):
            self.remove_row(str(self.row_count - 1))
            self._shown.pop()
        for row in range(self.row_count, len(items)):
            texts = self._format(items[row][1])
            self.add_row(*(self._cell(i, t) for i, t in enumerate(texts)), key=str(row))
            self._shown.append(texts)
            self.cell_updates += len(texts)
        if follow is not None and self.cursor_item != follow:
            self.move_to_item(follow)
        self._update_in_view()

    def _update_in_view(self):
        first = max(int(self.scroll_y) - self.VIEW_MARGIN, 0)
        last = min(int(self.scroll_y) + self.size.height + self.VIEW_MARGIN, len(self._items))
        for row in range(first, last):
            texts = self._format(self._items[row][1])
            old = self._shown[row]
            if texts == old:
                continue
            for i, (a, b) in enumerate(zip(old, texts)):
                if a != b:
                    self.update_cell(str(row), self._col_keys[i], self._cell(i, b))
                    self.cell_updates += 1
            self._shown[row] = texts

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if round(old_value) != round(new_value):
            self._update_in_view()

    def _on_resize(self, event) -> None:
        super()._on_resize(event)
        self._update_in_view()


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
        prefix = {"exact": "", "at least": ">=", "estimated": "~"}[snap.mib_quality]
        field("MiB/s", prefix + f"{snap.mib_per_s:,.2f}")
    field("moves", f"{snap.moves:,}")
    rate = snap.failure_rate
    field("failures", f"{snap.failures:,}" + (f" ({rate:.1%})" if rate is not None else ""),
          "bold red" if snap.failures else "bold")
    field("dropped", f"{snap.drops:,}", "bold white on red" if snap.drops else "bold green")
    if snap.malformed:
        field("malformed records", f"{snap.malformed:,}", "bold white on red")
    if snap.livelocks:
        lv = snap.livelocks[0]
        t.append(" LIVELOCK ", style="bold white on red")
        more = f" (+{len(snap.livelocks) - 1} more)" if len(snap.livelocks) > 1 else ""
        # Text.append: the comm is shown literally, never parsed as markup
        t.append(f" {printable(lv['comm'])} {lv['pid']}/{lv['tid']}: {lv['cause']} "
                 f"×{lv['failures']:,} in {(lv['last_ts_ns'] - lv['first_ts_ns']) / 1e9:.1f} s"
                 f"{more}   ", style="bold red")
    if not snap.kernel_totals:
        t.append("(totals from events only)  ", style="dim")
    if snap.mib_quality == "estimated":
        t.append("(MiB/s, P50/P99, TLB/PG: estimates from sampled successes)  ", style="dim")
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
