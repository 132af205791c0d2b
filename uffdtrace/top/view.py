"""What the tables show, independent of Textual: columns, cell text,
sorting and the filter language (`pid:N`, `comm:TEXT`, `cause:TEXT`, or a
bare word matching any of them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import records
from ..textsafe import printable
from .model import FailureRow, ProcessRow

NONE = "-"


def _num(v: float | None, fmt: str) -> str:
    return NONE if v is None else format(v, fmt)


def _causes_text(row: ProcessRow) -> str:
    text = " ".join(f"{cause}:{n}" for cause, n in row.causes) or NONE
    return "LIVELOCK " + text if row.livelocked else text


def comm_text(comm: str) -> str:
    """A process name as shown: control characters made visible, never empty."""
    return printable(comm) if comm else "?"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    text: Callable[[ProcessRow], str]
    order: Callable[[ProcessRow], object]
    descending: bool          # the natural direction: biggest first for numbers
    right: bool = True        # right-aligned (numbers)


def _or_minus(v):
    return -1.0 if v is None else v


PROCESS_COLUMNS = [
    Column("pid", "PID", 7, lambda r: str(r.pid), lambda r: r.pid, False),
    Column("comm", "COMM", 15, lambda r: comm_text(r.comm), lambda r: r.comm.lower(), False,
           right=False),
    Column("moves_s", "MOVES/s", 8, lambda r: f"{r.moves_per_s:,.0f}",
           lambda r: r.moves_per_s, True),
    Column("mib_s", "MiB/s", 7, lambda r: _num(r.mib_per_s, ",.2f"),
           lambda r: _or_minus(r.mib_per_s), True),
    Column("moves", "MOVES", 8, lambda r: f"{r.moves:,}", lambda r: r.moves, True),
    Column("fails", "FAILS", 6, lambda r: f"{r.failures:,}", lambda r: r.failures, True),
    Column("causes", "FAILURES BY CAUSE", 24, _causes_text,
           lambda r: r.causes[0][0] if r.causes else "~", False, right=False),
    Column("p50", "P50 µs", 6, lambda r: _num(r.p50_us, ",.1f"), lambda r: _or_minus(r.p50_us),
           True),
    Column("p99", "P99 µs", 6, lambda r: _num(r.p99_us, ",.1f"), lambda r: _or_minus(r.p99_us),
           True),
    Column("tlb", "TLB/PG", 6, lambda r: _num(r.tlb_per_page, ".2f"),
           lambda r: _or_minus(r.tlb_per_page), True),
]
COLUMN_BY_KEY = {c.key: c for c in PROCESS_COLUMNS}
DEFAULT_SORT = "moves_s"


@dataclass(frozen=True)
class Sort:
    column: str = DEFAULT_SORT
    descending: bool = True

    def next(self) -> Sort:
        keys = [c.key for c in PROCESS_COLUMNS]
        key = keys[(keys.index(self.column) + 1) % len(keys)]
        return Sort(key, COLUMN_BY_KEY[key].descending)

    def by(self, key: str) -> Sort:
        """Sort by `key`; choosing the current column again reverses it."""
        if key == self.column:
            return self.reversed()
        return Sort(key, COLUMN_BY_KEY[key].descending)

    def reversed(self) -> Sort:
        return Sort(self.column, not self.descending)

    def apply(self, rows) -> list[ProcessRow]:
        order = COLUMN_BY_KEY[self.column].order
        rows = sorted(rows, key=lambda r: r.pid)          # ties: by pid, always
        return sorted(rows, key=order, reverse=self.descending)

    def describe(self) -> str:
        return f"{COLUMN_BY_KEY[self.column].label} {'▼' if self.descending else '▲'}"


def process_cells(row: ProcessRow) -> tuple[str, ...]:
    return tuple(c.text(row) for c in PROCESS_COLUMNS)


FAILURE_COLUMNS = [("time", "TIME s", 8), ("pid", "PID", 7), ("comm", "COMM", 15),
                   ("errno", "ERRNO", 6), ("cause", "CAUSE", 26), ("evidence", "EVIDENCE", 8),
                   ("addr", "FAILING ADDR", 14), ("len", "LEN", 9), ("moved", "MOVED", 9)]


def failure_cells(row: FailureRow) -> tuple[str, ...]:
    r = row.record
    fail_addr = (r.get("diagnosis") or {}).get("fail_addr")
    moved = records.bytes_moved(r)
    return (f"{row.t:.3f}", str(row.pid), comm_text(row.comm), row.errno or NONE,
            row.cause + (" (partial)" if row.partial else "")
            + (f" ×{row.repeats:,}" if row.repeats else ""), row.evidence,
            f"{fail_addr:#x}" if isinstance(fail_addr, int) else NONE,
            f"{int(r.get('len') or 0):,}", f"{moved:,}")


@dataclass(frozen=True)
class RowFilter:
    """Which processes and failures to show.  Every given part must match."""
    pid: int | None = None
    comm: str | None = None
    cause: str | None = None
    word: str | None = None       # a bare word: pid, comm or cause

    @classmethod
    def parse(cls, text: str) -> RowFilter:
        """`pid:123 comm:java cause:pinned`, or bare words; ValueError if bad."""
        parts: dict = {}
        for token in text.split():
            name, sep, value = token.partition(":")
            if not sep:
                parts["word"] = token.lower()
                continue
            name = name.lower()
            if not value:
                raise ValueError(f"{name}: needs a value")
            if name == "pid":
                if not value.isdigit():
                    raise ValueError("pid: takes a number")
                parts["pid"] = int(value)
            elif name in ("comm", "cause"):
                parts[name] = value.lower()
            else:
                raise ValueError(f"unknown filter {name}: (use pid:, comm: or cause:)")
        return cls(**parts)

    @property
    def empty(self) -> bool:
        return self == RowFilter()

    def _match(self, pid: int, comm: str, causes) -> bool:
        if self.pid is not None and pid != self.pid:
            return False
        if self.comm is not None and self.comm not in comm.lower():
            return False
        if self.cause is not None and not any(self.cause in c for c in causes):
            return False
        if self.word is not None:
            w = self.word
            return (w.isdigit() and int(w) == pid) or w in comm.lower() or \
                any(w in c for c in causes)
        return True

    def process(self, row: ProcessRow) -> bool:
        return self._match(row.pid, row.comm, [c for c, _ in row.causes])

    def failure(self, row: FailureRow) -> bool:
        return self._match(row.pid, row.comm, [row.cause])

    def describe(self) -> str:
        parts = [f"pid:{self.pid}" if self.pid is not None else None,
                 f"comm:{self.comm}" if self.comm is not None else None,
                 f"cause:{self.cause}" if self.cause is not None else None, self.word]
        return " ".join(p for p in parts if p)
