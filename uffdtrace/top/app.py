"""The `uffdtrace top` Textual application.

The worker thread (sources.Feeder) feeds the model; this app only takes a
snapshot every `interval` seconds (at most 4 Hz) and updates what changed.
"""
from __future__ import annotations

import asyncio
import signal

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Sparkline, Static

from ..taxonomy import EVIDENCE_MEANING
from .detail import describe_failure
from .model import FailureRow, ProcessRow, Snapshot, TopModel
from .sources import Feeder
from .view import (FAILURE_COLUMNS, PROCESS_COLUMNS, RowFilter, Sort, comm_text,
                   failure_cells, process_cells)
from .widgets import (ListTable, Panel, SizedPanel, causes_text, header_text,
                      latency_text)

QUIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
MIN_INTERVAL = 0.25        # the display refreshes at most 4 times a second
FAILURES_SHOWN = 200       # rows in the recent-failures table
# Rows in the process table, the top ones by the current sort (filter to
# find others).  Only rows in view are formatted at a refresh, but every
# process is sorted and filtered each time: this bounds the table.
PROCESSES_SHOWN = 5000

HELP = """\
uffdtrace top: live UFFDIO_MOVE activity, failures and their causes.

Keys
  s / r        sort the process table by the next column / reverse the order
               (or click a column header; clicking it again reverses)
  /            filter: pid:1234  comm:java  cause:pinned, or a bare word that
               matches any of them; Escape clears the filter
  f            failures only: show only processes that had a failure
  p or space   pause / resume the display (tracing goes on: nothing is lost)
  tab          move between the process table and the failures list
  Enter        the full diagnosis of the selected failure (on a process: its
               latest failure)
  ?            this help          q            quit

Header
  moves/s, failures and their rate come from in-kernel counters when the
  source has them (exact even if events are dropped); `dropped` counts events
  the ring buffer could not take.  MiB/s counts bytes of the moves seen as
  events: >= when some were dropped, ~ when successes are sampled (each
  stands for N), n/a with --failed-only.

Process table
  MOVES/s, MiB/s   over the last second (or --interval, if longer)
  MOVES, FAILS     since the start
  FAILURES BY CAUSE   diagnosed causes (a partial move counts under the cause
                      that stopped it)
  P50/P99 µs       latency percentiles from a histogram (within ~12%)
  TLB/PG           TLB flushes per moved page

Evidence levels of a diagnosis
""" + "\n".join(f"  {level:<9} {meaning}" for level, meaning in EVIDENCE_MEANING.items())


class TextScreen(ModalScreen):
    """A full-screen page of code-built Text: help, details, errors."""

    BINDINGS = [Binding("escape", "dismiss", "Back"),
                Binding("q", "app.quit", "Quit")]
    DEFAULT_CSS = """
    TextScreen { align: center middle; }
    TextScreen > VerticalScroll { width: 100%; height: 100%; border: thick $accent;
                                  padding: 0 1; background: $surface; }
    """

    def __init__(self, title: str, body, **kw):
        super().__init__(**kw)
        self._title, self._body = title, body

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll()
        scroll.border_title = Text(self._title)
        scroll.border_subtitle = Text("Escape: back   q: quit")
        with scroll:
            yield Static(self._body)
        yield Footer()


class ErrorScreen(TextScreen):
    DEFAULT_CSS = """
    ErrorScreen > VerticalScroll { border: thick $error; }
    """


def detail_text(row: FailureRow, snap: Snapshot) -> Group:
    """Titled sections of label/value lines; long values wrap in their column."""
    parts = []
    sections = describe_failure(row.record, row.t, snap.t0_ns, snap.page_size, row.repeats)
    width = max(len(label) for _, lines in sections for label, _ in lines)
    for title, lines in sections:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold cyan", no_wrap=True, min_width=width)
        grid.add_column(ratio=1)
        for label, value in lines:
            grid.add_row(Text(label), Text(value))
        parts += [Text(title, style="bold underline"), Padding(grid, (0, 0, 1, 2))]
    return Group(*parts)


class TopApp(App):
    TITLE = "uffdtrace top"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { overflow: hidden; }
    #header { height: auto; padding: 0 1; background: $boost; }
    #processes { height: 1fr; min-height: 4; border: round $primary; }
    #middle { height: 1fr; min-height: 4; max-height: 11; }
    #causes { width: 3fr; border: round $primary; }
    #latency { width: 2fr; border: round $primary; }
    #rate { width: 2fr; border: round $primary; }
    #rate Sparkline { height: 1fr; }
    SizedPanel { text-wrap: nowrap; text-overflow: ellipsis; }
    #failures { height: 1fr; min-height: 4; border: round $primary; }
    #filter { dock: bottom; display: none; }
    #filter.visible { display: block; }
    DataTable:focus { border: round $accent; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("s", "sort_next", "Sort"),
        Binding("r", "sort_reverse", "Reverse"),
        Binding("slash", "filter", "Filter"),
        Binding("f", "failures_only", "Failures only"),
        Binding("p", "pause", "Pause"),
        Binding("space", "pause", "Pause", show=False),
        Binding("enter", "details", "Details", show=False),   # the tables show theirs
        Binding("question_mark", "help", "Help"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    table_class = ListTable    # bench/tui_load.py compares another strategy

    def __init__(self, model: TopModel, feeder: Feeder | None = None, *,
                 interval: float = 1.0, failures_only: bool = False,
                 row_filter: RowFilter | None = None, sort: Sort | None = None):
        super().__init__()
        self.model, self.feeder = model, feeder
        self.interval = max(interval, MIN_INTERVAL)
        self.failures_only = failures_only
        self.row_filter = row_filter or RowFilter()
        self.sort_order = sort or Sort()
        self.paused = False
        self.snapshot: Snapshot | None = None
        self._error_shown = False
        self._process_title = ""

    # -- layout -----------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Panel(id="header")
        yield self.table_class([(c.key, c.label, c.width, c.right) for c in PROCESS_COLUMNS],
                               process_cells, id="processes")
        with Horizontal(id="middle"):
            yield SizedPanel(causes_text, id="causes")
            yield SizedPanel(latency_text, id="latency")
            with Vertical(id="rate"):
                yield Sparkline([], id="sparkline")
        yield self.table_class([(k, label, w, k in ("time", "pid", "len", "moved"))
                                for k, label, w in FAILURE_COLUMNS], failure_cells,
                               id="failures")
        yield Input(placeholder="pid:1234  comm:NAME  cause:TEXT  (Enter applies, "
                    "Escape cancels)", id="filter")
        yield Footer()

    def on_mount(self):
        q = self.query_one
        self._header, self._causes, self._latency = q("#header"), q("#causes"), q("#latency")
        self._rate, self._sparkline = q("#rate"), q("#sparkline")
        self._processes, self._failures = q("#processes"), q("#failures")
        self._causes.border_title = Text("Failure causes")
        self._latency.border_title = Text("Latency (all moves)")
        self._rate.border_title = Text("moves/s")
        self._failures.border_title = Text("Recent failures (Enter: details)")
        self._processes.focus()
        if self.feeder is not None:
            self.feeder.start()
        self.refresh_view()
        self._timer = self.set_interval(self.interval, self.refresh_view)
        # kill or a closed terminal: leave like q does (terminal restored,
        # the demo workload stopped, BPF programs detached).
        loop = asyncio.get_running_loop()
        for sig in QUIT_SIGNALS:
            loop.add_signal_handler(sig, self.exit)

    def on_unmount(self):
        loop = asyncio.get_running_loop()
        for sig in QUIT_SIGNALS:
            loop.remove_signal_handler(sig)
        self._timer.stop()
        if self.feeder is not None:
            self.feeder.stop()     # joined by the caller, once the terminal is restored

    # -- refresh ----------------------------------------------------------
    def refresh_view(self):
        """Take a snapshot of the model and show what changed."""
        if self.paused and self.snapshot is not None:
            self._show_header()
            self._show_error(self.model.error)      # not even a pause hides it
            return
        self.snapshot = snap = self.model.snapshot()
        self._show_header()
        self._show_processes()
        self._causes.show(snap.causes)
        self._latency.show(snap.latency_log2)
        data = list(snap.sparkline) or [0.0]
        if data != self._sparkline.data:
            self._sparkline.data = data
            self._rate.border_title = Text(
                f"moves/s, last {len(snap.sparkline)} s (max {max(data):,.0f})")
        self._show_failures()
        self._show_error(snap.error)

    def _show_error(self, error: str | None):
        if error and not self._error_shown:
            self._error_shown = True
            body = Text(error + "\n\n", style="bold")
            body.append("Escape shows what was collected before the error; q quits.",
                        style="dim")
            self.push_screen(ErrorScreen("uffdtrace top: error", body))

    def _show_header(self):
        self._header.show(header_text(
            self.snapshot, paused=self.paused, failures_only=self.failures_only,
            filter_text=self.row_filter.describe()))

    def visible_processes(self) -> tuple[list[ProcessRow], int]:
        """The rows to show, sorted, at most PROCESSES_SHOWN; and how many matched."""
        rows = [r for r in self.snapshot.processes
                if self.row_filter.process(r) and (r.failures or not self.failures_only)]
        return self.sort_order.apply(rows)[:PROCESSES_SHOWN], len(rows)

    def visible_failures(self) -> list[FailureRow]:
        rows = [r for r in reversed(self.snapshot.failures_recent) if self.row_filter.failure(r)]
        return rows[:FAILURES_SHOWN]

    def _show_processes(self):
        table = self._processes
        rows, matched = self.visible_processes()
        table.sync([(str(r.pid), r) for r in rows])
        total = len(self.snapshot.processes)
        if len(rows) < matched:
            shown = f"top {len(rows)} of {matched:,}" + (" matching" if matched != total else "")
        else:
            shown = f"{matched:,}" + (f" of {total:,}" if matched != total else "")
        title = f"Processes ({shown})  sorted by {self.sort_order.describe()}"
        if title != self._process_title:
            self._process_title = title
            table.border_title = Text(title)

    def _show_failures(self):
        self._failures.sync([(str(r.seq), r) for r in self.visible_failures()])

    # -- actions ----------------------------------------------------------
    def _changed_view(self):
        if self.snapshot is not None:
            self._show_header()
            self._show_processes()
            self._show_failures()

    def action_sort_next(self):
        self.sort_order = self.sort_order.next()
        self._changed_view()

    def action_sort_reverse(self):
        self.sort_order = self.sort_order.reversed()
        self._changed_view()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected):
        if event.data_table.id == "processes":
            self.sort_order = self.sort_order.by(event.column_key.value)
            self._changed_view()

    def action_failures_only(self):
        self.failures_only = not self.failures_only
        self._changed_view()

    def action_pause(self):
        self.paused = not self.paused
        self.refresh_view()

    def action_filter(self):
        box = self.query_one("#filter", Input)
        box.add_class("visible")
        box.value = self.row_filter.describe()
        box.focus()

    def on_input_submitted(self, event: Input.Submitted):
        try:
            self.row_filter = RowFilter.parse(event.value)
        except ValueError as exc:
            self.notify(f"filter: {exc}", severity="error", markup=False)
            return
        self._close_filter()
        self._changed_view()

    def _close_filter(self):
        box = self.query_one("#filter", Input)
        box.remove_class("visible")
        self._processes.focus()

    def action_clear_filter(self):
        if self.query_one("#filter", Input).has_focus:
            self._close_filter()
            return
        if not self.row_filter.empty:
            self.row_filter = RowFilter()
            self._changed_view()

    def action_help(self):
        self.push_screen(TextScreen("Help", Text(HELP)))

    def on_data_table_row_selected(self, event: DataTable.RowSelected):
        key = event.data_table.item_key(event.cursor_row)
        if key is not None:
            self._details_of(event.data_table.id, key)

    def action_details(self):
        table = self.focused if isinstance(self.focused, ListTable) else self._failures
        key = table.cursor_item
        if key is None:
            self.notify("no failure selected", severity="warning", markup=False)
            return
        self._details_of(table.id, key)

    def _details_of(self, table_id: str, key: str):
        snap = self.snapshot
        if table_id == "failures":
            row = next((f for f in snap.failures_recent if str(f.seq) == key), None)
        else:
            proc = next((p for p in snap.processes if str(p.pid) == key), None)
            row = proc.last_failure if proc else None
            if row is None:
                self.notify(f"pid {key} has had no failure", markup=False)
                return
        if row is None:
            self.notify("that failure is no longer in the recent list", markup=False)
            return
        title = f"Failure #{row.seq}: pid {row.pid} ({comm_text(row.comm)}), {row.cause}"
        self.push_screen(TextScreen(title, detail_text(row, snap)))
