"""The aggregation model behind `uffdtrace top`: fed trace records (the
trace-file format: header, move, pin, aggregates, footer) by a worker
thread, read as immutable snapshots by the UI.  No Textual here.

Totals and rates prefer the in-kernel counters (aggregates records: exact
even when events are dropped, not sent (--failed-only) or sampled); causes,
bytes, latency percentiles and TLB flushes need the individual events.
"""
from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from .. import records
from ..wakes import WakeLinker, wake_sent
from .stats import LatencyHistogram, RateMeter, log2_bucket

MIB = 1 << 20
SPARKLINE_SECONDS = 60
RECENT_FAILURES = 500
# moves whose woken threads are kept for the detail view
WAKING_MOVES = 1000


@dataclass(frozen=True)
class FailureRow:
    seq: int            # unique, increasing: the row key
    t: float            # trace seconds
    pid: int
    comm: str
    errno: str | None
    cause: str
    partial: bool
    evidence: str
    record: dict        # the whole move record, for the detail view
    repeats: int = 0    # a repeat row: this many more failures like `record`


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    comm: str
    moves_per_s: float
    mib_per_s: float | None     # None: successes are not seen (--failed-only)
    moves: int
    failures: int
    causes: tuple[tuple[str, int], ...]   # most frequent first
    p50_us: float | None
    p99_us: float | None
    tlb_per_page: float | None
    last_failure: FailureRow | None = field(default=None, compare=False)
    livelocked: bool = False    # a thread of it is in an ongoing livelock


@dataclass(frozen=True)
class Snapshot:
    source: str
    t0_ns: int | None           # the trace's time zero (monotonic ns)
    page_size: int              # the traced machine's
    tier: str | None
    kernel: str | None
    elapsed_s: float
    moves_per_s: float
    mib_per_s: float | None     # None: unknown (successes not sent, --failed-only)
    mib_quality: str            # "exact", "at least" (events dropped), "estimated" (sampled)
    moves: int
    failures: int
    kernel_totals: bool         # moves/failures/rates from in-kernel counters
    drops: int
    malformed: int
    pins: int
    processes: tuple[ProcessRow, ...]
    causes: tuple[tuple[str, int], ...]
    latency_log2: tuple[tuple[int, int], ...]   # (bucket b: [2**(b-1), 2**b) ns, count)
    sparkline: tuple[float, ...]                # moves/s, one per complete second
    failures_recent: tuple[FailureRow, ...]     # oldest first
    finished: str | None
    error: str | None
    livelocks: tuple[dict, ...] = ()            # ongoing livelock records, oldest first

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.moves if self.moves else None


class _Proc:
    __slots__ = ("pid", "comm", "moves", "bytes", "pages", "tlb", "failures", "causes",
                 "latency", "kernel_moves", "kernel_failures", "last_failure", "_pct")

    def __init__(self, pid: int, comm: str):
        self.pid, self.comm = pid, comm
        self.moves, self.bytes = RateMeter(), RateMeter()
        self.pages = self.tlb = self.failures = 0
        self.causes: Counter = Counter()
        self.latency = LatencyHistogram()
        self.kernel_moves: RateMeter | None = None
        self.kernel_failures = 0
        self.last_failure: FailureRow | None = None
        self._pct = (-1, None, None)    # (histogram version, p50, p99)

    def percentiles(self) -> tuple[float | None, float | None]:
        if self._pct[0] != self.latency.version:
            p50, p99 = self.latency.percentile(0.5), self.latency.percentile(0.99)
            self._pct = (self.latency.version, p50, p99)
        return self._pct[1], self._pct[2]


class TraceClock:
    """Seconds since the trace started, for any record: from the header's
    start time (or the first event's), or an aggregates record's own."""

    def __init__(self):
        self.t0_ns: int | None = None

    def time(self, record: dict) -> float | None:
        kind = record.get("type")
        if kind == "header":
            if record.get("start_ktime_ns") is not None:
                self.t0_ns = int(record["start_ktime_ns"])
            return None
        if kind == "aggregates":
            return float(record["elapsed_s"])
        # a repeat: when its run's last failure entered
        stamp = {"move": "ts_ns", "pin": "ts_ns", "repeat": "last_ts_ns"}.get(kind)
        if stamp is not None:
            if self.t0_ns is None:
                self.t0_ns = int(record[stamp])
            return (int(record[stamp]) - self.t0_ns) / 1e9
        return None


class TopModel:
    def __init__(self, source: str = "", *, rate_window: float = 1.0):
        self.lock = threading.Lock()
        self.source = source
        self.rate_window = rate_window
        self.tier = self.kernel = None
        self.failed_only = False
        self.success_sample = 1   # 1 in N successful moves is sent as an event
        self.page_size = records.page_size(None)
        self.clock = TraceClock()
        self.now = 0.0
        self._procs: dict[int, _Proc] = {}
        self._moves, self._bytes = RateMeter(), RateMeter()
        self._failures = 0
        self._causes: Counter = Counter()
        self._latency_ev: Counter = Counter()
        self._timeline_ev: Counter = Counter()
        self._recent: deque[FailureRow] = deque(maxlen=RECENT_FAILURES)
        self._seq = 0
        self._linker = records.RepeatLinker()
        self._livelocks: dict[int, dict] = {}    # tid -> its ongoing livelock record
        # Q9: moves that found faulting threads asleep in their range, by
        # (tid, ts_ns): their records collect who they (or the UFFDIO_WAKE
        # after a DONTWAKE one) woke, for the detail view
        self._wakes = WakeLinker(max_rows=0, on_row=self._woken)
        self._waking: OrderedDict[tuple[int, int], dict | None] = OrderedDict()
        self.pins = 0
        # in-kernel totals, from aggregates records
        self._kernel_t: float | None = None
        self._kernel_moves = RateMeter()
        self._kernel_failures = 0
        self._latency_kernel: dict[int, int] | None = None
        self._timeline_kernel: Counter = Counter()
        self.drops = 0
        self.malformed = 0
        self.finished: str | None = None
        self.error: str | None = None

    # -- feeding (worker thread) ------------------------------------------
    def feed(self, records: list[dict]):
        with self.lock:
            for record in records:
                try:
                    handler = self._HANDLERS.get(record.get("type"))
                    if handler is not None:
                        handler(self, record)
                except (KeyError, TypeError, ValueError, AttributeError):
                    # A record from a file is untrusted input: count it, go on.
                    self.malformed += 1

    def finish(self, reason: str):
        with self.lock:
            self.finished = reason

    def fail(self, reason: str):
        with self.lock:
            self.error = reason

    def _proc(self, pid: int, comm: str | None) -> _Proc:
        p = self._procs.get(pid)
        if p is None:
            p = self._procs[pid] = _Proc(pid, comm or "")
        elif comm and comm != p.comm:      # exec or prctl(PR_SET_NAME): newest wins
            p.comm = comm
        return p

    def _header(self, r: dict):
        self.tier = r.get("tier")
        self.kernel = r.get("kernel_release")
        self.failed_only = bool((r.get("filters") or {}).get("failed_only"))
        self.success_sample = max(int(r.get("success_sample") or 1), 1)
        self.page_size = records.page_size(r)
        self.clock.time(r)

    def _move(self, r: dict):
        pid, ret = int(r["pid"]), int(r["ret"])
        p = self._proc(pid, r.get("comm"))
        t = self.clock.time(r)
        if t > self.now:
            self.now = t
        key = (int(r["tid"]), int(r["ts_ns"]))
        if key in self._waking or wake_sent(r):
            # before the linker decides (it calls _woken at once): the
            # record collects its woken threads; a success gets a row of
            # its own to open them from
            r = self._waking[key] = {**r, "woken_threads": []}
            self._trim_waking()
            if ret == 0:
                self._row(p, t, r, "woke_threads", "observed")
        self._wakes.move(r)
        # A sampled success stands for success_sample of them (chosen at
        # random in the kernel): its bytes, latency and TLB flushes are
        # counted that many times -- estimates (Snapshot.mib_quality says so).
        w = self.success_sample if ret == 0 else 1
        moved = records.bytes_moved(r) * w
        if ret != 0:
            self._linker.move(r)
            self._failure(p, t, r)
        p.moves.add(t)
        self._moves.add(t)
        if moved:
            p.bytes.add(t, moved)
            self._bytes.add(t, moved)
            p.pages += -(-moved // self.page_size)
        p.tlb += int(r.get("tlb_flushes") or 0) * w
        latency = int(r.get("latency_ns") or 0)
        p.latency.add(latency, w)
        self._latency_ev[log2_bucket(latency)] += w
        self._timeline_ev[int(t)] += 1

    def _failure(self, p: _Proc, t: float, r: dict, n: int = 1):
        """Move record `r` failed (n > 1: a repeat row, n failures like it)."""
        d = r.get("diagnosis") or {}
        cause = records.effective_cause(d)
        p.failures += n
        p.causes[cause] += n
        self._failures += n
        self._causes[cause] += n
        p.last_failure = self._row(p, t, r, cause, d.get("evidence") or "?", n)

    def _row(self, p: _Proc, t: float, r: dict, cause: str, evidence: str,
             n: int = 1) -> FailureRow:
        self._seq += 1
        row = FailureRow(self._seq, t, p.pid, p.comm, r.get("errno"), cause,
                         records.outcome(r) == records.PARTIAL, evidence, r,
                         repeats=n if n > 1 else 0)
        self._recent.append(row)
        return row

    def _wake(self, r: dict):
        if r["cause"] == "move":
            # its move record may have come first (another ring buffer)
            self._waking.setdefault((int(r["tid"]), int(r["ts_ns"])), None)
            self._trim_waking()
        self._wakes.wake(r)

    def _trim_waking(self):
        while len(self._waking) > WAKING_MOVES:
            self._waking.popitem(last=False)

    def _woken(self, row: dict):
        """A faulting thread a move woke or left asleep (or a UFFDIO_WAKE
        woke after a DONTWAKE move): onto that move's record."""
        dw = row.get("after_dontwake_move")
        key = (dw["tid"], dw["ts_ns"]) if dw else (row["by_tid"], row["ts_ns"])
        record = self._waking.get(key)
        if record is not None:
            record["woken_threads"].append(row)

    def _repeat(self, r: dict):
        """`count` more failures like the move record it repeats, coalesced
        in the kernel: counted as failures and moves, shown as one row."""
        n = int(r["count"])
        p = self._proc(int(r["pid"]), None)
        t = self.clock.time(r)
        self.now = max(self.now, t)
        m = self._linker.of(r)
        if m is None:       # its first failure was not recorded: no cause
            m = {"pid": r["pid"], "tid": r["tid"], "ret": -1, "errno": None, "move": 0,
                 "len": 0, "diagnosis": None}
        self._failure(p, t, m, n)
        p.moves.add(t, n)
        self._moves.add(t, n)
        # the run's mean latency stands for each of its failures: the total
        # is exact, the spread is not known
        mean = int(r["latency_total_ns"]) // n
        p.latency.add(mean, n)
        self._latency_ev[log2_bucket(mean)] += n
        self._timeline_ev[int(t)] += n

    def _livelock(self, r: dict):
        if r["state"] == "ongoing":
            self._livelocks[int(r["tid"])] = r
        else:
            self._livelocks.pop(int(r["tid"]), None)

    def _pin(self, r: dict):
        self.pins += 1
        t = self.clock.time(r)
        if t > self.now:
            self.now = t

    def _aggregates(self, r: dict):
        t = self.clock.time(r)
        self.now = max(self.now, t)
        counters = r.get("counters") or {}
        if "ringbuf_drops" in counters:
            self.drops = records.events_lost(counters)
        per_pid: dict[int, list[int]] = {}
        for o in r.get("outcomes") or ():
            counts = per_pid.setdefault(int(o["pid"]), [0, 0])
            counts[0] += int(o["count"])
            if o.get("errno"):
                counts[1] += int(o["count"])
        total = sum(c[0] for c in per_pid.values())
        if total > self._kernel_moves.total:
            # The increase happened over (previous aggregates or start, t]:
            # counted in the second that interval ends in.
            self._timeline_kernel[max(math.ceil(t) - 1, 0)] += total - self._kernel_moves.total
        self._kernel_moves.set(t, total)
        self._kernel_failures = sum(c[1] for c in per_pid.values())
        self._kernel_t = t
        for pid, (moves, failures) in per_pid.items():
            p = self._proc(pid, None)
            if p.kernel_moves is None:
                p.kernel_moves = RateMeter()
            p.kernel_moves.set(t, moves)    # unchanged too: a window needs its start
            p.kernel_failures = failures
        hist = (r.get("histograms") or {}).get("latency_log2")
        if hist is not None:
            self._latency_kernel = {int(b): int(n) for b, n in hist.items()}

    def _footer(self, r: dict):
        if r.get("drops") is not None:
            self.drops = max(self.drops, int(r["drops"]))

    _HANDLERS = {"header": _header, "move": _move, "pin": _pin, "repeat": _repeat,
                 "wake": _wake,
                 "livelock": _livelock,
                 "aggregates": _aggregates, "footer": _footer}

    # -- reading (UI thread) ----------------------------------------------
    def snapshot(self) -> Snapshot:
        with self.lock:
            return self._snapshot()

    def _snapshot(self) -> Snapshot:
        kernel = self._kernel_t is not None
        window, now = self.rate_window, self.now
        bytes_known = not self.failed_only
        procs = tuple(self._process_row(p, kernel, bytes_known) for p in self._procs.values())
        if kernel:
            moves_per_s = self._kernel_moves.rate(self._kernel_t, window, since=0.0)
            # Events are counted as they arrive, the kernel's totals once a
            # tick: whichever is ahead is the more recent.
            moves = max(self._kernel_moves.total, self._moves.total)
            failures = max(self._kernel_failures, self._failures)
            timeline, latency = self._timeline_kernel, self._latency_kernel
        else:
            moves_per_s = self._moves.rate(now, window, since=0.0)
            moves, failures = self._moves.total, self._failures
            timeline, latency = self._timeline_ev, None
        latency = latency if latency is not None else self._latency_ev
        end = int(now)     # the current second is not complete: not shown
        sparkline = tuple(float(timeline.get(s, 0))
                          for s in range(max(end - SPARKLINE_SECONDS, 0), end))
        return Snapshot(
            source=self.source, t0_ns=self.clock.t0_ns, page_size=self.page_size,
            tier=self.tier, kernel=self.kernel,
            elapsed_s=now,
            moves_per_s=moves_per_s,
            mib_per_s=self._bytes.rate(now, window, since=0.0) / MIB if bytes_known else None,
            mib_quality=self._mib_quality(), moves=moves, failures=failures, kernel_totals=kernel,
            drops=self.drops, malformed=self.malformed, pins=self.pins, processes=procs,
            causes=tuple(self._causes.most_common()),
            latency_log2=tuple(sorted((b, n) for b, n in latency.items() if n)),
            sparkline=sparkline, failures_recent=tuple(self._recent),
            finished=self.finished, error=self.error,
            livelocks=tuple(sorted(self._livelocks.values(), key=lambda r: r["first_ts_ns"])))

    def _mib_quality(self) -> str:
        if self.drops:
            return "at least"
        return "estimated" if self.success_sample > 1 else "exact"

    def _process_row(self, p: _Proc, kernel: bool, bytes_known: bool) -> ProcessRow:
        window, now = self.rate_window, self.now
        if kernel and p.kernel_moves is not None:
            moves_per_s = p.kernel_moves.rate(self._kernel_t, window, since=0.0)
            moves, failures = max(p.kernel_moves.total, p.moves.total), \
                max(p.kernel_failures, p.failures)
        else:
            moves_per_s = p.moves.rate(now, window, since=0.0)
            moves, failures = p.moves.total, p.failures
        p50, p99 = p.percentiles()
        return ProcessRow(
            pid=p.pid, comm=p.comm, moves_per_s=moves_per_s,
            mib_per_s=p.bytes.rate(now, window, since=0.0) / MIB if bytes_known else None,
            moves=moves, failures=failures, causes=tuple(p.causes.most_common()),
            p50_us=p50 / 1000 if p50 is not None else None,
            p99_us=p99 / 1000 if p99 is not None else None,
            tlb_per_page=p.tlb / p.pages if p.pages else None,
            last_failure=p.last_failure,
            livelocked=any(int(r["pid"]) == p.pid for r in self._livelocks.values()))
