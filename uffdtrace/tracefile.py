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
        self.write({
            "type": "header", "format": FORMAT, "version": FORMAT_VERSION,
            "uffdtrace_version": __version__, "kernel_release": os.uname().release,
            "tier": session.tier, "probes": session.probes, "filters": filters,
            # 1: every successful move has a record; N > 1: 1 in N at random
            # (flag UT_F_SAMPLED); every failure always; aggregates count all.
            "success_sample": session.config.success_sample,
            "start_wall": session.started_wall, "start_ktime_ns": session.started_ktime_ns,
        })
        self.flush()

    def items(self, items: list):
        for item in items:
            record = item.to_json()
            if record.get("type") == "move":
                self.moves += 1
            else:
                record = {"type": "pin", **record}
                self.pins += 1
            self.write(record)
        if items:
            self.flush()

    def aggregates(self, session: Session, elapsed_s: float):
        self.write({"type": "aggregates", "elapsed_s": round(elapsed_s, 3),
                    "counters": session.counters(), "outcomes": session.outcomes(),
                    "histograms": {k: {str(b): n for b, n in v.items()}
                                   for k, v in session.histograms().items()}})
        self.flush()

    def footer(self, session: Session, reason: str, command_status: int | None):
        self.write({"type": "footer", "reason": reason, "command_status": command_status,
                    "moves": self.moves, "pins": self.pins,
                    "drops": session.drops(session.counters()), "end_wall": time.time()})
        self.flush()

    def close(self):
        self._f.close()
