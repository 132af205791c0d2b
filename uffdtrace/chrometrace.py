"""Trace file -> Chrome Trace Event Format JSON, which the Perfetto UI
(ui.perfetto.dev) and chrome://tracing load.

* each move: a complete ("X") slice on its thread's track;
* each failure: an instant ("i") event on that thread at the moment the
  call returned, its diagnosis (cause, evidence, explanation, remedy from
  the taxonomy, culprit) in args;
* long-term pins (io_uring registrations, GUP pins) and KSM merges: instant
  events on the track of the process responsible;
* counters ("C") per process: moves/s (ok, failed), bytes/s, TLB flushes/s
  in COUNTER_BIN_NS bins;
* process and thread names as metadata ("M");
* timestamps in microseconds relative to the trace start (small numbers keep
  Perfetto's double->ns conversion exact); addresses as hex strings (JSON
  readers hold numbers as doubles: 64-bit addresses would lose digits).

Streamed: one pass, memory bounded by the number of threads and of open
counter bins, not by the number of moves.
"""
from __future__ import annotations

import json
from typing import IO

import orjson

from . import movepaths, records, stacks
from .culprits import PinCulprit
from .taxonomy import CAUSES, cause_label
from .tracereader import ReadStatus, iter_records
from .wakes import WakeLinker

COUNTER_BIN_NS = 100_000_000   # 100 ms
# Moves are written in the order they return; a bin is final once moves
# returning this much later have been seen.
COUNTER_LAG_BINS = 10
MOVE_CATEGORY = "uffd_move"
FAILURE_CATEGORY = "uffd_move_failure"


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:#x}"


class ChromeTraceExporter:
    def __init__(self, out: IO[str]):
        self.out = out
        self.t0 = 0
        self._first_event = True
        self._named_processes: set[int] = set()
        self._named_threads: set[tuple[int, int]] = set()
        self._bins: dict[tuple[int, int], list] = {}    # (pid, bin) -> [ok, failed, bytes, tlb]
        self._last_bin: dict[int, int] = {}             # pid -> last bin emitted
        self._max_bin = -1
        self.stats = {"moves": 0, "failures": 0, "pins": 0, "ksm_merges": 0,
                      "repeat_runs": 0, "repeated_failures": 0,
                      "counter_events": 0, "events_before_start": 0, "late_counter_moves": 0,
                      "fault_waits": 0}
        self.linker = records.RepeatLinker()
        self.wakes = WakeLinker(max_rows=0, on_row=self._fault_wait)
        self.header: dict | None = None
        self.footer: dict | None = None

    # --- output -----------------------------------------------------------------
    def _emit(self, event: dict):
        # orjson: a few times faster than json.dumps, which matters at 3+ events per move
        self.out.write(("" if self._first_event else ",\n") + orjson.dumps(event).decode())
        self._first_event = False

    def _us(self, ts_ns: int) -> float:
        """Microseconds since the trace start (ns precision)."""
        delta = ts_ns - self.t0
        if delta < 0:   # never from `uffdtrace record`, which takes t0 before attaching
            self.stats["events_before_start"] += 1
            delta = 0
        return round(delta / 1000, 3)

    def _name_thread(self, pid: int, tid: int, comm: str):
        if pid not in self._named_processes:
            self._named_processes.add(pid)
            self._emit({"name": "process_name", "ph": "M", "pid": pid, "tid": pid,
                        "args": {"name": comm}})
        if (pid, tid) not in self._named_threads:
            self._named_threads.add((pid, tid))
            self._emit({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                        "args": {"name": comm}})

    # --- records ----------------------------------------------------------------
    def begin(self, header: dict):
        self.header = header
        self.t0 = header["start_ktime_ns"]
        # displayTimeUnit first: older tokenizers only honour it near the start.
        self.out.write('{"displayTimeUnit":"ms","traceEvents":[\n')

    def add(self, record: dict):
        kind = record["type"]
        if kind == "move":
            self._move(record)
        elif kind == "pin":
            self._pin(record)
        elif kind == "ksm":
            self._ksm(record)
        elif kind == "repeat":
            self._repeat(record)
        elif kind == "wake":
            self.wakes.wake(record)
        elif kind == "footer":
            self.footer = record

    def _move(self, m: dict):
        self.stats["moves"] += 1
        self.linker.move(m)
        self.wakes.move(m)
        pid, tid = m["pid"], m["tid"]
        self._name_thread(pid, tid, m["comm"])
        d = m["diagnosis"]
        failed = records.outcome(m) != records.OK
        moved = records.bytes_moved(m)
        cause = records.effective_cause(d)
        self._emit({
            "name": f"UFFDIO_MOVE {m['errno']}" if failed else "UFFDIO_MOVE",
            "cat": MOVE_CATEGORY, "ph": "X", "pid": pid, "tid": tid,
            "ts": self._us(m["ts_ns"]), "dur": round(m["latency_ns"] / 1000, 3),
            "args": {"dst": _hex(m["dst"]), "src": _hex(m["src"]), "len": m["len"],
                     "mode": m["mode"], "result": m["errno"] or "ok", "moved": moved,
                     "cause": cause, "evidence": d["evidence"],
                     "tlb_flushes": m["tlb_flushes"], "tlb_pages": m["tlb_pages"],
                     "mmap_lock_wait_ns": m["mmap_lock_wait_ns"],
                     "lock_wait_ns": m["lock_wait_ns"], "retries": m["retries"],
                     **self._paths(m),
                     **stacks.args(m.get("stack"))}})
        end_ns = m["ts_ns"] + m["latency_ns"]
        if failed:
            self._failure(m, d, cause, end_ns)
        self._count(pid, end_ns, failed, moved, m["tlb_flushes"])

    def _paths(self, m: dict) -> dict:
        """The path per moved page and the folio splits, as args: splits
        only where they are seen (the kernel tier), never a 0 that means
        "not seen"."""
        paths = movepaths.paths(m, records.page_size(self.header))
        if paths is None:
            return {}
        if paths.read_at_exit:
            return {"paths": movepaths.describe(paths)}
        return {"paths": movepaths.describe(paths), "thp_splits": paths.thp_splits,
                "split_pages": paths.split_pages}

    def _repeat(self, r: dict):
        """A run's repeats: one slice from its first failure's end to its last
        failure's entry (where that one ends is not recorded: a slice past it
        could overlap the thread's next move), counted in the counter track
        at its end.  Failures counted while the ring buffer was full
        (closed_by overflow) were not in a row: the thread's other failures
        fall between them, so their run is an instant at its end, not a
        slice that would overlap theirs."""
        n = r["count"]
        self.stats["repeat_runs"] += 1
        self.stats["repeated_failures"] += n
        m = self.linker.of(r)
        start_ns = m["ts_ns"] + m["latency_ns"] if m is not None else r["first_ts_ns"]
        end_ns = max(r["last_ts_ns"], start_ns)
        args = {"count": n, "closed_by": r["closed_by"],
                "latency_total_ns": r["latency_total_ns"], "latency_max_ns": r["latency_max_ns"]}
        moved = 0
        if m is not None:
            d = m["diagnosis"]
            moved = records.bytes_moved(m)
            args.update(result=m["errno"], cause=records.effective_cause(d),
                        evidence=d["evidence"], dst=_hex(m["dst"]), src=_hex(m["src"]),
                        len=m["len"], moved_each=moved)
        # where the first failure's slice ends, rounded as it was drawn
        start_us = self._us(m["ts_ns"]) + round(m["latency_ns"] / 1000, 3) if m is not None \
            else self._us(start_ns)
        name = f"UFFDIO_MOVE {m['errno'] if m else 'failure'} ×{n}"
        if r["closed_by"] == "overflow":
            self._emit({"name": name, "cat": MOVE_CATEGORY, "ph": "i", "s": "t",
                        "pid": r["pid"], "tid": r["tid"], "ts": self._us(end_ns), "args": args})
        else:
            self._emit({"name": name, "cat": MOVE_CATEGORY, "ph": "X", "pid": r["pid"],
                        "tid": r["tid"], "ts": start_us,
                        "dur": max(round(self._us(end_ns) - start_us, 3), 0), "args": args})
        self._count(r["pid"], end_ns, True, moved * n, 0, n)

    def _failure(self, m: dict, d: dict, cause: str, end_ns: int):
        self.stats["failures"] += 1
        known = CAUSES.get(cause)
        culprit = records.culprit(d)
        culprit_args = culprit.to_json() if culprit is not None else None
        if isinstance(culprit, PinCulprit) and culprit.range is not None:
            culprit_args["range"] = [_hex(culprit.range[0]), culprit.range[1]]
        self._emit({
            "name": cause_label(d["cause"], d["underlying"]),
            "cat": FAILURE_CATEGORY, "ph": "i", "s": "t", "pid": m["pid"], "tid": m["tid"],
            "ts": self._us(end_ns),
            "args": {"cause": d["cause"], "underlying": d["underlying"],
                     "evidence": d["evidence"], "errno": m["errno"], "moved": max(m["move"], 0),
                     "fail_addr": _hex(d["fail_addr"]),
                     "explanation": known.explanation if known else d["explanation"],
                     "remedy": known.remedy if known else d["remedy"],
                     "culprit": culprit_args, "notes": d["notes"]}})

    def _pin(self, p: dict):
        self.stats["pins"] += 1
        self._name_thread(p["pid"], p["tid"], p["comm"])
        name = "pages unpinned" if p["released"] else "pages pinned"
        args = {"method": records.pin_label(p), "addr": _hex(p["addr"]), "len": p["len"]}
        if records.pin_registered_by_io_uring(p):
            args.update(io_uring_fd=p["fd"], index=p["index"])
        args.update(stacks.args(p.get("stack")))
        self._emit({"name": name, "cat": "pin", "ph": "i", "s": "t", "pid": p["pid"],
                    "tid": p["tid"], "ts": self._us(p["ts_ns"]), "args": args})

    def _fault_wait(self, r: dict):
        """A thread asleep in a uffd page fault until the move or UFFDIO_WAKE
        that woke it (or left it asleep) began: a slice on its own track.
        A wait the tracer only bounds starts when it was first seen."""
        self.stats["fault_waits"] += 1
        self._name_thread(r["pid"], r["tid"], r["comm"])
        bound = r["wait_evidence"] != "exact"
        dw = r.get("after_dontwake_move")
        self._emit({
            "name": "uffd fault wait" + (" (at least)" if bound else ""),
            "cat": "fault_wait", "ph": "X", "pid": r["pid"], "tid": r["tid"],
            "ts": self._us(r["ts_ns"] - r["waited_ns"]), "dur": round(r["waited_ns"] / 1000, 3),
            "args": {"addr": _hex(r["addr"]), "outcome": r["outcome"],
                     "by": "UFFDIO_WAKE" if r["by"] == "wake" else "UFFDIO_MOVE",
                     "waker": {"pid": r["by_pid"], "tid": r["by_tid"], "comm": r["by_comm"]},
                     "wait_evidence": r["wait_evidence"], "queue": r["queue"],
                     "after_dontwake_move_ts_us": self._us(dw["ts_ns"]) if dw else None}})

    def _ksm(self, k: dict):
        if k["merged_ts_ns"] is None or k["ksmd_pid"] is None:
            return   # merged before tracing: no moment to show
        self.stats["ksm_merges"] += 1
        self._name_thread(k["ksmd_pid"], k["ksmd_pid"], "ksmd")
        self._emit({"name": "KSM merge", "cat": "ksm", "ph": "i", "s": "t",
                    "pid": k["ksmd_pid"], "tid": k["ksmd_pid"], "ts": self._us(k["merged_ts_ns"]),
                    "args": {"page_of_pid": k["pid"], "addr": _hex(k["addr"]), "page": k["pfn"],
                             "evidence": k["evidence"]}})

    # --- counters ---------------------------------------------------------------
    def _count(self, pid: int, end_ns: int, failed: bool, moved: int, tlb: int, n: int = 1):
        b = max(end_ns - self.t0, 0) // COUNTER_BIN_NS
        if b <= self._last_bin.get(pid, -1):
            self.stats["late_counter_moves"] += n   # its bin was already written
            return
        counts = self._bins.get((pid, b))
        if counts is None:
            counts = self._bins[(pid, b)] = [0, 0, 0, 0]
        counts[1 if failed else 0] += n
        counts[2] += moved
        counts[3] += tlb
        if b > self._max_bin:
            self._max_bin = b
            self._flush_bins(b - COUNTER_LAG_BINS)

    def _flush_bins(self, upto: int):
        for key in sorted(k for k in self._bins if k[1] <= upto):
            pid, b = key
            last = self._last_bin.get(pid, -1)
            if last >= 0 and b > last + 1:
                self._counter_events(pid, last + 1, [0, 0, 0, 0])   # back to zero in the gap
            self._counter_events(pid, b, self._bins.pop(key))
            self._last_bin[pid] = b

    def _counter_events(self, pid: int, b: int, counts: list):
        ts = round(b * COUNTER_BIN_NS / 1000, 3)
        per_s = 1e9 / COUNTER_BIN_NS
        for name, args in (("moves/s", {"ok": counts[0] * per_s, "failed": counts[1] * per_s}),
                           ("bytes/s", {"bytes/s": counts[2] * per_s}),
                           ("TLB flushes/s", {"flushes/s": counts[3] * per_s})):
            self._emit({"name": name, "cat": "counters", "ph": "C", "pid": pid, "ts": ts,
                        "args": args})
            self.stats["counter_events"] += 1

    def finish(self, status: ReadStatus | None = None):
        self.wakes.finish()
        self._flush_bins(self._max_bin)
        for pid, last in sorted(self._last_bin.items()):
            self._counter_events(pid, last + 1, [0, 0, 0, 0])
        h, f = self.header, self.footer
        other = {"source": "uffdtrace", "uffdtrace_version": h["uffdtrace_version"],
                 "trace_format_version": h["version"], "kernel_release": h["kernel_release"],
                 "tier": h["tier"], "start_wall": h["start_wall"],
                 "start_ktime_ns": h["start_ktime_ns"], "counter_bin_ms": COUNTER_BIN_NS / 1e6,
                 "complete": f is not None, "end_reason": f["reason"] if f else None,
                 "drops": f["drops"] if f else None,
                 "truncated": status.truncated if status else None, **self.stats}
        self.out.write("\n],\n\"otherData\":" + json.dumps(other) + "}\n")


def export(path: str, out: IO[str]) -> dict:
    """Stream the trace at `path` into `out`; the export's statistics."""
    status = ReadStatus()
    exporter = ChromeTraceExporter(out)
    for record in iter_records(path, status):
        if record["type"] == "header":
            exporter.begin(record)
        else:
            exporter.add(record)
    exporter.finish(status)
    return exporter.stats
