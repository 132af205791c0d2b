"""Writing trace files: JSON Lines, one record per line, flushed as it goes
so a recorder killed even with SIGKILL leaves every complete line readable.

Records: header, move, successes (many successful moves in one record: see
successes.py), pin, ksm, repeat, livelock, aggregates (periodic), footer -- format
version 2, documented in docs/trace-format.md, schema in
uffdtrace/trace_schema.json.  Every record passes through the one
KernelValueScrubber on its way out (uffdtrace/scrub.py).
"""
from __future__ import annotations

import os
import time

from . import __version__, successes
from .culprits import KsmCulprit
from .errors import UserError
from .events import PinEvent, SuccessBatch
from .wakes import WakeEvent
from .scrub import KernelValueScrubber
from .livelock import Livelock
from .session import TracedRepeat
from .traceschema import FORMAT, FORMAT_VERSION


MAX_COMMAND_ARGS = 256
# KSM-merged pages remembered so that each gets one ksm record; past this
# many (a tracer left running for days) they are forgotten, and a page may
# get a second record.
MAX_KSM_SEEN = 65536
MAX_COMMAND_ARG_CHARS = 4096


def _bounded_command(command: list[str]) -> list[str]:
    """COMMAND as recorded in the header: long enough to recognize, short
    enough that the header always fits the reader's line limit."""
    out = [a if len(a) <= MAX_COMMAND_ARG_CHARS else
           a[:MAX_COMMAND_ARG_CHARS] + f"...[{len(a) - MAX_COMMAND_ARG_CHARS} more characters]"
           for a in command[:MAX_COMMAND_ARGS]]
    if len(command) > MAX_COMMAND_ARGS:
        out.append(f"...[{len(command) - MAX_COMMAND_ARGS} more arguments]")
    return out


def monotonic_ns() -> int:
    """The clock of every ts_ns in a trace (bpf_ktime_get_ns)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class TraceRecords:
    """The records of a trace, built from what a Session delivers.  Where
    they go is the subclass's write() and flush(): TraceWriter puts them in
    a file, `top` hands them to its model (so both see the same records)."""

    def __init__(self):
        self.moves = self.pins = self.ksm = self.repeats = self.repeated_failures = 0
        self.wakes = 0
        self.livelocks = 0
        self._ksm_seen: set[tuple] = set()

    def write(self, record: dict):
        raise NotImplementedError

    def flush(self):
        pass

    def header(self, *, tier: str, probes: list[str], filters: dict, start_wall: float,
               start_ktime_ns: int, success_sample: int | None = None,
               coalesce_ms: int | None = None, stacks: bool | None = None):
        record = {
            "type": "header", "format": FORMAT, "version": FORMAT_VERSION,
            "uffdtrace_version": __version__, "kernel_release": os.uname().release,
            "tier": tier, "probes": probes,
            "filters": {**filters, "command": _bounded_command(filters["command"])},
            "start_wall": start_wall, "start_ktime_ns": start_ktime_ns,
            "page_size": os.sysconf("SC_PAGE_SIZE"),
        }
        if success_sample is not None:
            record["success_sample"] = success_sample
        if coalesce_ms is not None:
            record["coalesce_ms"] = coalesce_ms
        if stacks is not None:
            record["stacks"] = stacks
        self.write(record)
        self.flush()

    def items(self, items: list):
        """Moves (TracedMove, or SuccessBatch: successes in bulk), pins
        (PinEvent), repeat counts (TracedRepeat) and livelocks (Livelock),
        as the session and run loop deliver them."""
        for item in items:
            if isinstance(item, SuccessBatch):
                for record in successes.records(item):
                    self.write(record)
                self.moves += item.count
                continue
            if isinstance(item, PinEvent):
                self.write({"type": "pin", **item.to_json()})
                self.pins += 1
                continue
            if isinstance(item, WakeEvent):
                self.write({"type": "wake", **item.to_json()})
                self.wakes += 1
                continue
            if isinstance(item, TracedRepeat):
                self.write(item.to_json())
                self.repeats += 1
                self.repeated_failures += item.repeat.count
                continue
            if isinstance(item, Livelock):
                self.write(item.to_json())
                self.livelocks += 1
                continue
            ksm = self._ksm_attribution(item)
            if ksm is not None:
                self.write(ksm)
                self.ksm += 1
            self.write(item.to_json())
            self.moves += 1
        if items:
            self.flush()

    def _ksm_attribution(self, move) -> dict | None:
        """A ksm record the first time a merged page explains a failure."""
        d = move.diagnosis
        if d.effective_cause != "page_ksm" or not isinstance(d.culprit, KsmCulprit):
            return None
        page = move.enrichment.src_page if move.enrichment else None
        pfn = page.pfn if page is not None else None
        addr = d.fail_addr if d.fail_addr is not None else move.event.src
        merge = d.culprit
        key = (move.event.pid, addr, pfn, merge.merged_ts_ns)
        if key in self._ksm_seen:
            return None
        if len(self._ksm_seen) >= MAX_KSM_SEEN:
            self._ksm_seen.clear()
        self._ksm_seen.add(key)
        return {"type": "ksm", "pid": move.event.pid, "addr": addr, "pfn": pfn,
                "merged_ts_ns": merge.merged_ts_ns, "ksmd_pid": merge.ksmd_pid,
                "evidence": "observed" if merge.seen_merging else "inferred"}

    def aggregates(self, *, elapsed_s: float, counters: dict, outcomes: list,
                   histograms: dict):
        """A snapshot of the in-kernel aggregates (cumulative since the start)."""
        self.write({"type": "aggregates", "elapsed_s": round(elapsed_s, 3),
                    "ts_ns": monotonic_ns(), "counters": counters, "outcomes": outcomes,
                    "histograms": {k: {str(b): n for b, n in v.items()}
                                   for k, v in histograms.items()}})
        self.flush()

    def footer(self, *, reason: str, command_status: int | None, drops: int):
        self.write({"type": "footer", "reason": reason, "command_status": command_status,
                    "moves": self.moves, "pins": self.pins, "ksm": self.ksm,
                    "repeats": self.repeats, "repeated_failures": self.repeated_failures,
                    "livelocks": self.livelocks, "wakes": self.wakes,
                    "drops": drops,
                    "end_wall": time.time()})
        self.flush()


class TraceWriter(TraceRecords):
    def __init__(self, path: str, scrubber: KernelValueScrubber | None = None):
        super().__init__()
        try:
            self._f = open(path, "wb")
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror}") from None
        self.path = path
        self.scrubber = scrubber or KernelValueScrubber()

    def write(self, record: dict):
        self._f.write(self.scrubber.serialize(record))

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()
