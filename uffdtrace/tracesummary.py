"""What a trace says, computed in one streaming pass over its records:
totals, per-process numbers, failure causes, worst latencies, TLB cost,
pinners, KSM merges and drops.  `uffdtrace report` prints the result (text,
or JSON with --json).

Memory is bounded by the number of distinct processes, causes and culprits
in the trace, never by the number of moves.  Totals come from the in-kernel
counters (aggregates records) when the trace has them -- exact even when
moves were sampled, filtered (--failed-only) or dropped -- and from the move
records otherwise; the summary always says which.
"""
from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from . import movepaths, records, stacks
from .culprits import KsmCulprit, PinCulprit, UffdEventCulprit
from .taxonomy import CAUSES
from .tracereader import ReadStatus, iter_records
from .wakes import WakeLinker

WORST_LATENCIES = 10
MAP_FULL_COUNTERS = records.MAP_FULL_COUNTERS
# distinct issuing stacks counted per cause (--stacks); the rest as "other"
MAX_ISSUERS = 64
ISSUER_ROWS = 3


@dataclass
class _Process:
    pid: int
    comm: str | None = None
    comm_is_leader: bool = False
    recorded: Counter = field(default_factory=Counter)   # ok / failed / partial
    bytes_moved: int = 0
    bytes_requested: int = 0
    tlb_flushes: int = 0
    tlb_pages: int = 0
    paths: movepaths.Tally | None = None    # kernel tier: paths and splits (questions 6, 7)


@dataclass
class _Cause:
    code: str
    count: int = 0
    errnos: Counter = field(default_factory=Counter)
    evidence: Counter = field(default_factory=Counter)
    processes: Counter = field(default_factory=Counter)
    example: dict | None = None          # the first move with this cause
    issuers: Counter = field(default_factory=Counter)   # issued_by chain -> failed moves
    trace_texts: tuple[str, str] | None = None   # for a code this version does not know


@dataclass
class _Pinner:
    pid: int
    comm: str
    method: str
    ranges: list = field(default_factory=list)      # [addr, len], the first few
    blocked: Counter = field(default_factory=Counter)   # victim pid -> moves
    victims_comm: dict = field(default_factory=dict)
    registrations: int = 0
    stack: dict | None = None    # --stacks: the first pin's (user, and kernel where seen)


class TraceSummary:
    """Feed records with add(); read the result with to_json()."""

    def __init__(self, path: str, pid: int | None = None):
        self.path = path
        self.pid = pid
        self.header: dict | None = None
        self.footer: dict | None = None
        self.status: ReadStatus | None = None
        self.processes: dict[int, _Process] = {}
        self.causes: dict[str, _Cause] = {}
        self.pinners: dict[int, _Pinner] = {}
        self.ksm: dict[int | None, dict] = {}
        # (moving pid, event, raiser pid, raiser tid) -> what that unread event blocked
        self.unread_events: dict[tuple, dict] = {}
        self.worst: list = []            # min-heap of (latency_ns, -seq, summary)
        self.last_aggregates: dict | None = None
        self.after_aggregates: dict[int, Counter] = {}   # pid -> outcomes since the snapshot
        self.moves = 0                   # move records (of the selected process)
        self.all_moves = 0               # move records of every process
        self.all_repeats = 0             # repeat records of every process
        self.tlb = Counter()
        self._seq = 0
        self.linker = records.RepeatLinker()
        self.repeated = 0                # failures counted by repeat records (selected process)
        self.unlinked_repeated = 0       # ... of which the first failure was not recorded
        self.wakes = WakeLinker()        # Q9: who each move or UFFDIO_WAKE woke

    # --- feeding ----------------------------------------------------------------
    def add(self, record: dict):
        kind = record["type"]
        if kind == "move":
            self.all_moves += 1
            self.linker.move(record)
            self.wakes.move(record)
            if self.pid is None or record["pid"] == self.pid:
                self._move(record)
        elif kind == "repeat":
            self.all_repeats += 1
            if self.pid is None or record["pid"] == self.pid:
                self._repeat(record)
        elif kind == "pin":
            self._pin(record)
        elif kind == "wake":
            if self.pid is None or record["pid"] == self.pid:
                self.wakes.wake(record)
        elif kind == "aggregates":
            self.last_aggregates = record
            self.after_aggregates = {}
        elif kind == "header":
            self.header = record
        elif kind == "footer":
            self.footer = record

    def _process(self, pid: int) -> _Process:
        proc = self.processes.get(pid)
        if proc is None:
            proc = self.processes[pid] = _Process(pid)
        return proc

    @property
    def success_sample(self) -> int:
        """1 in this many successful moves has a record (1: all of them)."""
        return (self.header or {}).get("success_sample", 1)

    def _repeat(self, r: dict):
        """`count` more failures exactly like the move record they repeat."""
        self.repeated += r["count"]
        m = self.linker.of(r)
        if m is None:
            self.unlinked_repeated += r["count"]
            self._process(r["pid"]).recorded[records.FAILED] += r["count"]
            return
        # Identical in request and result (so in bytes moved), not in TLB
        # flushes or lock waits, which the kernel does not compare.
        self._tally(m, r["count"], tlb=False, late=False)
        blocked = self._unread_event(m)
        if blocked is not None:
            blocked["last_ns"] = max(blocked["last_ns"], r["last_ts_ns"])

    def _move(self, m: dict):
        self.moves += 1
        self._seq += 1
        proc = self._process(m["pid"])
        if proc.comm is None or (not proc.comm_is_leader and m["tid"] == m["pid"]):
            proc.comm, proc.comm_is_leader = m["comm"], m["tid"] == m["pid"]
        outcome = records.outcome(m)
        # A sampled success stands for success_sample of them (the kernel
        # picks them at random): sums over records weight it so, and say
        # they are estimates (_estimate_note).
        self._tally(m, self.success_sample if outcome == records.OK else 1, recorded=1)
        if len(self.worst) < WORST_LATENCIES or m["latency_ns"] > self.worst[0][0]:
            entry = (m["latency_ns"], -self._seq, self._move_summary(m))
            if len(self.worst) < WORST_LATENCIES:
                heapq.heappush(self.worst, entry)
            else:
                heapq.heapreplace(self.worst, entry)

    def _tally(self, m: dict, w: int, recorded: int | None = None, tlb: bool = True,
               late: bool = True):
        """Count move record `m` as `w` moves (a sampled success, or the
        failures a repeat counts); `recorded`: how many records stand for
        them (a repeat: as many as it counts); tlb: add its TLB counts w
        times.  late: add them to the moves after the last aggregates
        snapshot -- not a repeat's, which is written when its run closes,
        mostly after the snapshot that counted its failures."""
        proc = self._process(m["pid"])
        outcome = records.outcome(m)
        recorded = w if recorded is None else recorded
        proc.recorded[outcome] += recorded
        if late:
            self.after_aggregates.setdefault(m["pid"], Counter())[outcome] += recorded
        moved = records.bytes_moved(m) * w
        proc.bytes_moved += moved
        paths = movepaths.paths(m, self.page_size)
        if paths is not None:
            if proc.paths is None:
                proc.paths = movepaths.Tally()
            proc.paths.add(paths, w)
        proc.bytes_requested += m["len"] * w
        if tlb:
            proc.tlb_flushes += m["tlb_flushes"] * w
            proc.tlb_pages += m["tlb_pages"] * w
            self.tlb["flushes"] += m["tlb_flushes"] * w
            self.tlb["full_flushes"] += m["tlb_full_flushes"] * w
            self.tlb["remote_ipis"] += m["tlb_remote_ipis"] * w
            self.tlb["pages_flushed"] += m["tlb_pages"] * w
            self.tlb["bytes_moved"] += moved
        if outcome != records.OK:
            self._failure(m, w)

    def _failure(self, m: dict, n: int = 1):
        d = m["diagnosis"]
        code = records.effective_cause(d)
        cause = self.causes.get(code)
        if cause is None:
            cause = self.causes[code] = _Cause(code)
            cause.example = self._move_summary(m, notes=True)
            if code not in CAUSES:
                cause.trace_texts = (d["explanation"], d["remedy"])
        cause.count += n
        cause.errnos[m["errno"]] += n
        cause.evidence[d["evidence"]] += n
        cause.processes[m["pid"]] += n
        if m.get("stack") is not None:
            chain = stacks.issued_by(m["stack"]) or stacks.UNKNOWN_ISSUER
            if chain not in cause.issuers and len(cause.issuers) >= MAX_ISSUERS:
                chain = stacks.OTHER_ISSUERS
            cause.issuers[chain] += n
        culprit = records.culprit(d)
        if isinstance(culprit, PinCulprit):
            pinner = self._pinner(culprit.pid, culprit.comm, culprit.method)
            pinner.blocked[m["pid"]] += n
            pinner.victims_comm.setdefault(m["pid"], m["comm"])
            if culprit.range is not None:
                self._add_range(pinner, culprit.range)
        elif isinstance(culprit, UffdEventCulprit):
            blocked = self.unread_events.setdefault(self._unread_key(m, culprit), {
                "moves": 0, "first_ns": m["ts_ns"], "last_ns": m["ts_ns"]})
            blocked["moves"] += n
            blocked["last_ns"] = max(blocked["last_ns"], m["ts_ns"])
        elif isinstance(culprit, KsmCulprit):
            merges = self.ksm.setdefault(culprit.ksmd_pid, {"blocked": Counter(),
                                                            "first_merge_ns": None})
            merges["blocked"][m["pid"]] += n
            ts = culprit.merged_ts_ns
            if ts is not None and (merges["first_merge_ns"] is None
                                   or ts < merges["first_merge_ns"]):
                merges["first_merge_ns"] = ts

    @staticmethod
    def _unread_key(m: dict, culprit: UffdEventCulprit) -> tuple:
        return (m["pid"], culprit.event, culprit.pid, culprit.tid, culprit.comm)

    def _unread_event(self, m: dict) -> dict | None:
        """What the unread uffd event that failed move `m` blocked, if one did."""
        culprit = records.culprit(m["diagnosis"])
        if not isinstance(culprit, UffdEventCulprit):
            return None
        return self.unread_events.get(self._unread_key(m, culprit))

    def _pinner(self, pid: int, comm: str, method: str) -> _Pinner:
        pinner = self.pinners.get(pid)
        if pinner is None:
            pinner = self.pinners[pid] = _Pinner(pid, comm, method)
        return pinner

    @staticmethod
    def _add_range(pinner: _Pinner, rng):
        rng = list(rng)
        if rng not in pinner.ranges and len(pinner.ranges) < 8:
            pinner.ranges.append(rng)

    def _pin(self, p: dict):
        if p["released"] or (self.pid is not None and p["pid"] != self.pid):
            return
        pinner = self._pinner(p["pid"], p["comm"], records.pin_label(p))
        pinner.registrations += 1
        if pinner.stack is None:
            pinner.stack = p.get("stack")
        self._add_range(pinner, [p["addr"], p["len"]])

    def _rel_s(self, ts_ns: int) -> float:
        return round((ts_ns - self.header["start_ktime_ns"]) / 1e9, 6)

    def _move_summary(self, m: dict, notes: bool = False) -> dict:
        d = m["diagnosis"]
        out = {"pid": m["pid"], "tid": m["tid"], "comm": m["comm"], "t_s": self._rel_s(m["ts_ns"]),
               "latency_us": round(m["latency_ns"] / 1000, 3), "dst": m["dst"], "src": m["src"],
               "len": m["len"], "errno": m["errno"], "move": m["move"],
               "cause": records.effective_cause(d), "evidence": d["evidence"],
               "tlb_flushes": m["tlb_flushes"]}
        if notes:
            out.update(fail_addr=d["fail_addr"], culprit=d["culprit"], notes=d["notes"])
        return out

    # --- results ----------------------------------------------------------------
    @property
    def page_size(self) -> int:
        return records.page_size(self.header)

    def _counted(self) -> tuple[dict[int, Counter], dict[int, int] | None, str]:
        """Per-process outcome counts, bytes (if the kernel counted them), source."""
        agg = self.last_aggregates
        if agg is None:
            counts = {pid: Counter(p.recorded) for pid, p in self.processes.items()}
            return counts, None, "move records"
        counts: dict[int, Counter] = {}
        kernel_bytes: dict[int, int] | None = {}
        for row in agg["outcomes"]:
            if self.pid is not None and row["pid"] != self.pid:
                continue
            outcome = "ok" if row["errno"] is None else ("partial" if row["partial"] else "failed")
            counts.setdefault(row["pid"], Counter())[outcome] += row["count"]
            if kernel_bytes is not None and "bytes" in row:
                kernel_bytes[row["pid"]] = kernel_bytes.get(row["pid"], 0) + row["bytes"]
            else:
                kernel_bytes = None
        for pid, since in self.after_aggregates.items():
            counts.setdefault(pid, Counter()).update(since)
            if kernel_bytes is not None:
                kernel_bytes = None   # records after the snapshot carry no kernel byte count
        return counts, kernel_bytes, "in-kernel counters"

    def _records_incomplete(self) -> str | None:
        """Why move records do not hold every move, or None."""
        reasons = []
        sample = self.header.get("success_sample", 1)
        if sample > 1:
            reasons.append(f"1 in {sample} successful moves recorded")
        if self.header["filters"]["failed_only"]:
            reasons.append("--failed-only: successes not recorded")
        d = self._drops()
        drops = records.drops(d)
        if drops:
            reasons.append(f"{drops} moves dropped")
        if d.get("recursion_misses"):
            reasons.append(f"{d['recursion_misses']} hook runs skipped (see DROPS)")
        return "; ".join(reasons) or None

    def _estimate_note(self) -> str | None:
        """What figures summed over move records stand on, when that is not
        every move: None when it is."""
        if self.success_sample > 1:
            return (f"estimated from {self.moves} recorded moves: successes were sampled 1 in "
                    f"{self.success_sample}, each recorded one counted {self.success_sample} "
                    "times")
        return None

    def _kernel_accounting(self) -> str | None:
        """The kernel counts every move entering and every move ending: when
        the two differ, some were still in flight at the snapshot or were not
        counted (a full map: see drops)."""
        agg = self.last_aggregates
        if agg is None or "moves_entered" not in agg["counters"]:
            return None
        entered = agg["counters"]["moves_entered"]
        # a move the full outcome map could not count still ended
        ended = sum(row["count"] for row in agg["outcomes"]) + \
            agg["counters"].get("outcomes_full", 0)
        if entered == ended:
            return None
        return (f"the kernel saw {entered} moves enter and {ended} end: "
                f"{entered - ended} still in flight at the last snapshot, or not counted "
                "(see DROPS)")

    def _totals(self, counts, kernel_bytes, source) -> dict:
        total = Counter()
        for c in counts.values():
            total.update(c)
        moves = sum(total.values())
        failed = total["failed"] + total["partial"]
        incomplete = self._records_incomplete()
        notes = []
        if source == "in-kernel counters" and self.after_aggregates:
            late = sum(sum(c.values()) for c in self.after_aggregates.values())
            notes.append(f"{late} moves recorded after the last in-kernel snapshot added from "
                         "their records (the trace has no final snapshot)")
        if source == "move records":
            notes.append("the trace has no aggregates record")
            if incomplete:
                notes.append(f"counts are of recorded moves only ({incomplete})")
        bytes_moved = sum(kernel_bytes.values()) if kernel_bytes is not None else \
            sum(p.bytes_moved for p in self.processes.values())
        bytes_source = "in-kernel counters" if kernel_bytes is not None else "move records"
        if kernel_bytes is None and self._estimate_note():
            bytes_source += " (estimated)"
        elif kernel_bytes is None and incomplete:
            notes.append(f"bytes moved are from recorded moves only ({incomplete})")
        mismatch = self._kernel_accounting()
        if mismatch:
            notes.append(mismatch)
        recorded = sum(p.recorded[records.FAILED] + p.recorded[records.PARTIAL]
                       for pid, p in self.processes.items() if pid in counts)
        if source == "in-kernel counters" and recorded != failed:
            notes.append(f"the kernel counted {failed} failures, the trace accounts for "
                         f"{recorded} (as move records and repeat counts): "
                         f"{failed - recorded:+d} (see DROPS)")
        if self.unlinked_repeated:
            notes.append(f"{self.unlinked_repeated} repeated failures whose first failure was "
                         "not recorded: counted, cause unknown")
        return {"source": source, "moves": moves, "ok": total["ok"], "failed": failed,
                "partial": total["partial"],
                "failure_rate": round(failed / moves, 4) if moves else None,
                "bytes_moved": bytes_moved, "bytes_source": bytes_source,
                "move_records": self.moves, "failures_recorded": recorded,
                "repeated_failures": self.repeated, "notes": notes}

    def _process_rows(self, counts, kernel_bytes) -> list[dict]:
        rows = []
        for pid in set(counts) | set(self.processes):
            c = counts.get(pid, Counter())
            p = self.processes.get(pid) or _Process(pid)
            moved = kernel_bytes[pid] if kernel_bytes is not None and pid in kernel_bytes \
                else p.bytes_moved
            pages = p.bytes_moved / self.page_size
            rows.append({"pid": pid, "comm": p.comm, "moves": sum(c.values()), "ok": c["ok"],
                         "failed": c["failed"] + c["partial"], "partial": c["partial"],
                         "bytes_moved": moved, "tlb_flushes": p.tlb_flushes,
                         "tlb_flushes_per_moved_page":
                             round(p.tlb_flushes / pages, 4) if pages else None})
        return sorted(rows, key=lambda r: (-r["moves"], r["pid"]))

    def _comm(self, pid: int) -> str | None:
        p = self.processes.get(pid)
        return p.comm if p else None

    def _cause_rows(self) -> list[dict]:
        failures = sum(c.count for c in self.causes.values())
        rows = []
        for c in sorted(self.causes.values(), key=lambda c: (-c.count, c.code)):
            known = CAUSES.get(c.code)
            explanation, remedy = (known.explanation, known.remedy) if known else c.trace_texts
            rows.append({
                "cause": c.code, "count": c.count,
                "share": round(c.count / failures, 4) if failures else None,
                "errno": dict(c.errnos.most_common()),
                "evidence": dict(c.evidence.most_common()),
                "explanation": explanation, "remedy": remedy, "known": known is not None,
                "processes": [{"pid": pid, "comm": self._comm(pid), "moves": n}
                              for pid, n in c.processes.most_common(5)],
                "more_processes": max(len(c.processes) - 5, 0),
                "example": c.example,
                # --stacks: the stacks that issued these failures, most first
                "issuers": [{"stack": chain, "moves": n}
                            for chain, n in c.issuers.most_common(ISSUER_ROWS)],
                "more_issuers": max(len(c.issuers) - ISSUER_ROWS, 0)})
        return rows

    def _pinner_rows(self) -> list[dict]:
        rows = []
        for p in sorted(self.pinners.values(),
                        key=lambda p: (-sum(p.blocked.values()), p.pid)):
            if self.pid is not None and p.pid != self.pid and self.pid not in p.blocked:
                continue
            rows.append({"pid": p.pid, "comm": p.comm, "method": p.method,
                         "registrations": p.registrations, "ranges": p.ranges,
                         "pinned_by": stacks.issued_by(p.stack),
                         "kernel_path": stacks.kernel_path(p.stack),
                         "blocked_moves": sum(p.blocked.values()),
                         "blocked": [{"pid": v, "comm": p.victims_comm.get(v), "moves": n,
                                      "same_process": v == p.pid}
                                     for v, n in p.blocked.most_common(10)]})
        return rows

    def _ksm_rows(self) -> list[dict]:
        return [{"ksmd_pid": ksmd, "blocked_moves": sum(m["blocked"].values()),
                 "first_merge_s": self._rel_s(m["first_merge_ns"])
                 if m["first_merge_ns"] is not None else None,
                 "blocked": [{"pid": v, "comm": self._comm(v), "moves": n}
                             for v, n in m["blocked"].most_common(10)]}
                for ksmd, m in self.ksm.items()]

    def _unread_event_rows(self) -> list[dict]:
        """Q8: each unread non-cooperative event that kept mmap_changing up,
        who raised it, whose moves it failed, and for how long at least
        (from the first failure that met it to the last)."""
        rows = []
        for (pid, event, raiser_pid, raiser_tid, raiser_comm), b in sorted(
                self.unread_events.items(), key=lambda kv: (-kv[1]["moves"], kv[0][:4])):
            rows.append({"event": event, "raised_by": {"pid": raiser_pid, "tid": raiser_tid,
                                                       "comm": raiser_comm},
                         "pid": pid, "comm": self._comm(pid), "blocked_moves": b["moves"],
                         "first_s": self._rel_s(b["first_ns"]),
                         # one failure met it: how long it stayed unread is unknown
                         "unread_at_least_ms": round((b["last_ns"] - b["first_ns"]) / 1e6, 3)
                         if b["last_ns"] > b["first_ns"] else None})
        return rows

    def _move_paths(self) -> dict:
        """Questions 6 and 7 per process: the path each moved page took and
        the huge-page coverage the moves' folio splits lost (splits: kernel
        tier only; split_bytes None where they are not seen)."""
        rows = [{"pid": pid, "comm": p.comm, **p.paths.result().to_json(),
                 "split_bytes": None if p.paths.read_at_exit
                 else p.paths.split_pages * self.page_size,
                 "summary": movepaths.describe(p.paths.result())}
                for pid, p in sorted(self.processes.items()) if p.paths is not None]
        seen = bool(rows) or self.header.get("tier") == "kernel"
        return {"seen": seen, "note": None if seen else movepaths.NOT_SEEN,
                "estimate": self._estimate_note(), "processes": rows}

    def _woken_threads(self) -> dict:
        """Q9: the faulting threads each move or UFFDIO_WAKE woke (or left
        asleep), how long they had waited, with the wait's evidence."""
        self.wakes.finish()
        return self.wakes.summary(self._rel_s)

    def _drops(self) -> dict:
        counters = self.last_aggregates["counters"] if self.last_aggregates else {}
        out = {k: counters[k] for k in records.LOSS_COUNTERS if k in counters}
        if self.footer is not None:
            out["footer_drops"] = self.footer["drops"]
        return out

    def _trace_info(self) -> dict:
        h, f, s = self.header, self.footer, self.status
        warnings = []
        if f is not None and self.pid is None:
            if f["moves"] != self.all_moves:
                warnings.append(f"the footer counts {f['moves']} move records, the file holds "
                                f"{self.all_moves}: lines were lost or added")
            if f.get("repeats", 0) != self.all_repeats:
                warnings.append(f"the footer counts {f.get('repeats', 0)} repeat records, the "
                                f"file holds {self.all_repeats}: lines were lost or added")
        end = f["end_wall"] if f is not None else None
        return {"path": self.path, "format_version": h["version"],
                "uffdtrace_version": h["uffdtrace_version"],
                "kernel_release": h["kernel_release"], "tier": h["tier"],
                "probes": len(h["probes"]), "start_wall": h["start_wall"],
                "duration_s": round(end - h["start_wall"], 3) if end is not None else
                (self.last_aggregates["elapsed_s"] if self.last_aggregates else None),
                "filters": h["filters"], "success_sample": h.get("success_sample", 1),
                "stacks": h.get("stacks", False),
                "page_size": self.page_size, "page_size_known": "page_size" in h,
                "complete": f is not None, "end_reason": f["reason"] if f else None,
                "command_status": f["command_status"] if f else None,
                "truncated": s.truncated if s else None,
                "records": s.records if s else None, "warnings": warnings}

    def to_json(self) -> dict:
        counts, kernel_bytes, source = self._counted()
        pages = self.tlb["bytes_moved"] / self.page_size
        return {
            "trace": self._trace_info(),
            "selected_pid": self.pid,
            "totals": self._totals(counts, kernel_bytes, source),
            "processes": self._process_rows(counts, kernel_bytes),
            "causes": self._cause_rows(),
            "worst_latencies": [e[2] for e in sorted(self.worst, reverse=True)],
            "worst_latencies_note": self._worst_note(),
            "tlb": {"estimate": self._estimate_note(),
                    "flushes": self.tlb["flushes"], "full_flushes": self.tlb["full_flushes"],
                    "remote_ipis": self.tlb["remote_ipis"],
                    "pages_flushed": self.tlb["pages_flushed"],
                    "pages_moved": round(pages, 2),
                    "flushes_per_moved_page": round(self.tlb["flushes"] / pages, 4)
                    if pages else None},
            "pinners": self._pinner_rows(),
            "ksm": self._ksm_rows(),
            "unread_events": self._unread_event_rows(),
            "move_paths": self._move_paths(),
            "woken_threads": self._woken_threads(),
            "drops": self._drops(),
            "latency_histogram": self._histogram("latency_log2"),
        }

    def _worst_note(self) -> str | None:
        incomplete = self._records_incomplete()
        if incomplete is None:
            return None
        return (f"the worst of {self.moves} recorded moves ({incomplete}): an unrecorded move "
                "may have been slower; the in-kernel histogram counts every move")

    def _histogram(self, name: str) -> list[dict] | None:
        """The in-kernel log2 histogram (every traced process): counts of
        values below `below` (and at least half of it)."""
        if self.last_aggregates is None:
            return None
        hist = self.last_aggregates["histograms"].get(name, {})
        return [{"below": 2 ** int(b), "count": n}
                for b, n in sorted(hist.items(), key=lambda kv: int(kv[0]))]


def summarize(path: str, pid: int | None = None) -> dict:
    """Stream the trace at `path` once and summarize it (TraceFormatError on bad input)."""
    summary = TraceSummary(path, pid)
    summary.status = ReadStatus()
    for record in iter_records(path, summary.status):
        summary.add(record)
    return summary.to_json()
