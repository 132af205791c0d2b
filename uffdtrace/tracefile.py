"""Writing trace files: JSON Lines, one record per line, flushed as it goes
so a killed recorder leaves every complete line readable.

Records: header, move, pin, aggregates (periodic), footer.  The trace-file
issue documents and versions the schema; this is version 1.
"""
from __future__ import annotations

import json
import os
import time

from . import __version__
from .errors import UserError
from .session import Session

FORMAT = "uffdtrace-trace"
FORMAT_VERSION = 1


def header_record(session: Session, filters: dict) -> dict:
    return {
        "type": "header", "format": FORMAT, "version": FORMAT_VERSION,
        "uffdtrace_version": __version__, "kernel_release": os.uname().release,
        "tier": session.tier, "probes": session.probes, "filters": filters,
        "start_wall": session.started_wall, "start_ktime_ns": session.started_ktime_ns,
    }


def item_record(item) -> dict:
    """A Session item (TracedMove or PinEvent) as its trace record."""
    record = item.to_json()
    return record if record.get("type") == "move" else {"type": "pin", **record}


def aggregates_record(session: Session, elapsed_s: float) -> dict:
    """The in-kernel totals: exact even when events were dropped or not sent."""
    return {"type": "aggregates", "elapsed_s": round(elapsed_s, 3),
            "counters": session.counters(), "outcomes": session.outcomes(),
            "histograms": {k: {str(b): n for b, n in v.items()}
                           for k, v in session.histograms().items()}}


class TraceWriter:
    def __init__(self, path: str):
        try:
            self._f = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror}") from None
        self.path = path
        self.moves = 0
        self.pins = 0

    def write(self, record: dict):
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self):
        self._f.flush()

    def header(self, session: Session, filters: dict):
        self.write(header_record(session, filters))
        self.flush()

    def items(self, items: list):
        for item in items:
            record = item_record(item)
            if record["type"] == "move":
                self.moves += 1
            else:
                self.pins += 1
            self.write(record)
        if items:
            self.flush()

    def aggregates(self, session: Session, elapsed_s: float):
        self.write(aggregates_record(session, elapsed_s))
        self.flush()

    def footer(self, session: Session, reason: str, command_status: int | None):
        self.write({"type": "footer", "reason": reason, "command_status": command_status,
                    "moves": self.moves, "pins": self.pins,
                    "drops": session.counters()["ringbuf_drops"], "end_wall": time.time()})
        self.flush()

    def close(self):
        self._f.close()
