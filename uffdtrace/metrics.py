"""Prometheus metrics of UFFDIO_MOVE from trace records: what `uffdtrace
serve` exposes live and `uffdtrace report --openmetrics` renders from a
trace file.  Both feed the same records (header, move, repeat, ksm,
livelock, aggregates: docs/trace-format.md) to a MetricsState and render it
with families(), so the two cannot tell different stories.

Where each number comes from:
* moves, bytes, latency and size histograms, TLB flushes, pins, drops: the
  in-kernel aggregates (`aggregates` records), exact whatever was sampled,
  filtered or dropped;
* failures by cause, errno and evidence: the diagnosed `move` records plus
  the `repeat` counts of the runs they started (a repeat whose first
  failure never comes counts under cause `unknown`).

Label sets are bounded by design: `comm` takes the first `comm_limit`
process names seen, later ones are `other`; causes, errnos and evidence
levels are the taxonomy's.  Per-process series exist only with per_pid, for
at most `pid_limit` processes (first come; later ones get a slot when one
frees), and a process that has not moved for `pid_ttl_s` seconds of trace
time leaves them (its counts stay in the per-comm series).  A process the
kernel no longer counts (serve retires the outcome counts of processes that
exited) is folded into its comm's totals.  So is every other piece of state
bounded: labels only for the processes the kernel counts, a minute of
failures to link repeats to, UNLINKED_MAX repeats waiting for theirs.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, InfoMetricFamily, Metric)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_text
from prometheus_client.registry import Collector, CollectorRegistry

from . import records

PREFIX = "uffdtrace"
OTHER_COMM = "other"
UNKNOWN = "unknown"
COMM_LIMIT = 50
PID_LIMIT = 100
PID_TTL_S = 300.0
LINK_HORIZON_NS = 60 * 10 ** 9
# A repeat whose first failure has not arrived waits this long (trace time)
# for it, at most this many at once, before it counts under `unknown`.
UNLINKED_WAIT_S = 10.0
UNLINKED_MAX = 10_000

# In-kernel counters exported one metric each: (counter, metric name
# without _total, unit, help).  The loss counters go to one labelled metric
# (uffdtrace_drops_total{kind}), the sums to the histograms' _sum.
KERNEL_COUNTERS = (
    ("bytes_moved", "moved_bytes", "bytes",
     "Bytes UFFDIO_MOVE really moved (a success's len, a partial move's progress); "
     "counted in the kernel"),
    ("tlb_flushes", "move_tlb_flushes", "",
     "TLB flushes inside moves, counted in the kernel (0 with --no-cost-stats)"),
    ("moves_entered", "moves_entered", "", "Moves that entered UFFDIO_MOVE"),
    ("pins_seen", "pins_seen", "",
     "Long-term pins seen: io_uring buffer registrations (kernel tier: FOLL_LONGTERM GUP)"),
    ("gup_pins", "gup_pins", "", "pin_user_pages* calls seen (kernel tier)"),
    ("gup_unpins", "gup_unpins", "", "unpin_user_page(s) calls seen (kernel tier)"),
    ("events_sent", "events_sent", "", "Move events sent to the collector"),
    ("successes_unsent", "successes_unsent", "",
     "Successful moves counted but not sent: sampled out (--sample-successes) or "
     "--failed-only"),
    ("failures_coalesced", "failures_coalesced", "",
     "Failures counted in a run of identical failures instead of sent one by one"),
    ("failures_overflowed", "failures_overflowed", "",
     "Failures counted per thread and shape while the failure ring buffer was full"),
)

# le bounds of the log2 histograms, as bucket numbers: bucket b counts the
# integers in [2**(b-1), 2**b), so `le` = 2**b - 1 is exact.  A fixed set,
# so that every scrape has the same series.  Latency: 255 ns .. 68.7 s.
# Size: a len of 0 (EINVAL), then 4 KiB - 1 .. 8 GiB - 1.
LATENCY_BUCKETS = tuple(range(8, 37))
SIZE_BUCKETS = (0, *range(12, 34))


def log2_histogram(counts: dict, buckets: Iterable[int], per_unit: int = 1
                   ) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets of a log2 histogram ({bucket: count},
    bucket b: values in [2**(b-1), 2**b); 0: the value 0), in base units
    (`per_unit` values a unit: 10**9 ns a second), ending with +Inf."""
    counts = {int(b): int(n) for b, n in counts.items()}
    out, below = [], 0
    ordered = sorted(counts)
    i = 0
    for b in buckets:
        while i < len(ordered) and ordered[i] <= b:
            below += counts[ordered[i]]
            i += 1
        # divided, not multiplied by 1e-9: 511 / 1e9 prints as 5.11e-07
        out.append((repr((2 ** b - 1) / per_unit), below))
    out.append(("+Inf", sum(counts.values())))
    return out


@dataclass
class _Pid:
    """A process with its own series (per_pid): its moves by result (the
    kernel's, kept after the process is retired) and failures by cause."""
    comm: str
    last_active: float
    moves: Counter
    failures: Counter


class CommLabels:
    """comm label values: the first `limit` names seen keep their own,
    later ones are `other` (first come: a counter never moves to another
    series)."""

    def __init__(self, limit: int = COMM_LIMIT):
        self.limit = limit
        self._named: set[str] = set()

    def label(self, comm: str | None) -> str:
        if comm is None:
            return UNKNOWN
        if comm in self._named:
            return comm
        if len(self._named) < self.limit:
            self._named.add(comm)
            return comm
        return OTHER_COMM


class MetricsState:
    """Feed trace records to add(); families() renders.  `comm_of(pid)`
    names a process no record named (live: /proc/PID/comm); a process keeps
    the first name it was seen with, so its counts never change series."""

    def __init__(self, *, comm_limit: int = COMM_LIMIT, per_pid: bool = False,
                 pid_limit: int = PID_LIMIT, pid_ttl_s: float = PID_TTL_S,
                 comm_of: Callable[[int], str | None] | None = None):
        self.lock = threading.Lock()
        self.comms = CommLabels(comm_limit)
        self.per_pid, self.pid_limit, self.pid_ttl_s = per_pid, pid_limit, pid_ttl_s
        self.comm_of = comm_of
        self.header: dict | None = None
        self.finished: str | None = None
        # a repeat comes within coalesce_ms (at most 10 s) of its run's first
        # failure: older failures are let go, so that threads cannot pile up
        self.linker = records.RepeatLinker(max_age_ns=LINK_HORIZON_NS)
        # (tid, first_ts_ns) -> (repeat, when it came): see _repeat
        self._unlinked: dict[tuple[int, int], tuple[dict, float]] = {}
        # (comm, cause, errno, evidence, partial) -> failures
        self.failures: Counter = Counter()
        self.ksm_pages = self.livelocks = 0
        self.ongoing_livelocks: set[int] = set()
        self.counters: dict[str, int] = {}
        self.histograms: dict[str, dict] = {}
        self.elapsed_s: float | None = None
        self._pid_comm: dict[int, str] = {}        # pids the kernel counts: their label
        self.outcomes: dict[int, Counter] = {}    # pid -> (result, partial) -> count
        self._retired: Counter = Counter()         # (comm, result, partial) of retired pids
        # retired before any record named them (their records are behind a
        # backlog): pid -> (final counts, when), waiting for a name
        self._unnamed_retired: dict[int, tuple[Counter, float]] = {}
        self.pids: OrderedDict[int, _Pid] = OrderedDict()   # least recently active first

    # --- feeding ------------------------------------------------------------
    def add(self, record: dict):
        handler = self._HANDLERS.get(record["type"])
        if handler is not None:
            with self.lock:
                handler(self, record)

    def add_all(self, items: Iterable[dict]):
        for record in items:
            self.add(record)

    def _header(self, r: dict):
        self.header = r

    def _comm(self, pid: int, comm: str | None = None) -> str:
        """The label of process `pid`: the first name it was seen with.
        One not named yet is `unknown` for now but is not labelled so: the
        kernel counts a move before its record arrives, and a process gone
        by then has no /proc/PID/comm to read (move_counts() waits)."""
        label = self._pid_comm.get(pid)
        if label is None:
            if comm is None and self.comm_of is not None:
                comm = self.comm_of(pid)
            if comm is None:
                return UNKNOWN
            label = self._pid_comm[pid] = self.comms.label(comm)
            if pid in self.pids:
                self.pids[pid].comm = label
            waiting = self._unnamed_retired.pop(pid, None)
            if waiting is not None:
                self._fold(label, waiting[0])
        return label

    def _move(self, m: dict):
        comm = self._comm(m["pid"], m["comm"])
        if m["ret"] == 0:
            return          # successes are counted from the in-kernel aggregates
        # the linker keeps each failing thread's latest failure a minute:
        # only what a repeat's labels need, not the whole record
        d = m["diagnosis"] or {}
        m = {"tid": m["tid"], "pid": m["pid"], "ts_ns": m["ts_ns"], "ret": m["ret"],
             "errno": m["errno"], "move": m["move"], "comm": m["comm"],
             "diagnosis": {"cause": d.get("cause"), "underlying": d.get("underlying"),
                           "evidence": d.get("evidence")}}
        self.linker.move(m)
        self._failure(m["pid"], comm, m, 1)
        late = self._unlinked.pop((m["tid"], m["ts_ns"]), None)
        if late is not None:
            self._failure(m["pid"], comm, m, late[0]["count"])

    def _failure(self, pid: int, comm: str, m: dict | None, n: int):
        if m is None:       # a repeat whose first failure was not recorded
            key = (comm, UNKNOWN, UNKNOWN, UNKNOWN, "false")
        else:
            d = m["diagnosis"] or {}
            key = (comm, records.effective_cause(d), m["errno"] or UNKNOWN,
                   d.get("evidence") or UNKNOWN,
                   "true" if records.outcome(m) == records.PARTIAL else "false")
        self.failures[key] += n
        entry = self._touch(pid, comm) if self.per_pid else None
        if entry is not None:
            entry.failures[key[1]] += n

    def _repeat(self, r: dict):
        m = self.linker.of(r)
        if m is None and len(self._unlinked) < UNLINKED_MAX:
            # A run's first failure that met a full ring buffer is counted in
            # the kernel's overflow map and sent when its period is over:
            # after the run's own repeat, which then waits for it.
            self._unlinked[(r["tid"], r["first_ts_ns"])] = (r, self.elapsed_s or 0.0)
            return
        # named by the failure it repeats: the process may be long gone
        # (a run of a thread that exited is sent seconds later)
        comm = self._comm(r["pid"], m["comm"] if m is not None else None)
        self._failure(r["pid"], comm, m, r["count"])

    def _give_up_waiting(self, everything: bool = False):
        """Repeats whose first failure never came count under `unknown`, so
        do retired processes nothing named."""
        oldest = (self.elapsed_s or 0.0) - UNLINKED_WAIT_S
        for pid, (counts, came) in list(self._unnamed_retired.items()):
            if everything or came < oldest:
                del self._unnamed_retired[pid]
                self._fold(UNKNOWN, counts)
        for key, (r, came) in list(self._unlinked.items()):
            if everything or came < oldest:
                del self._unlinked[key]
                self._failure(r["pid"], self._comm(r["pid"]), None, r["count"])

    def _ksm(self, r: dict):
        self.ksm_pages += 1

    def _livelock(self, r: dict):
        if r["state"] == "ongoing":
            self.livelocks += 1
            self.ongoing_livelocks.add(r["tid"])
        else:
            self.ongoing_livelocks.discard(r["tid"])

    def _aggregates(self, r: dict):
        self.elapsed_s = float(r["elapsed_s"])
        self.counters = dict(r["counters"])
        self.histograms = r["histograms"]
        now: dict[int, Counter] = {}
        for row in r["outcomes"]:
            result = row["errno"] or "ok"
            now.setdefault(row["pid"], Counter())[(result, bool(row["partial"]))] += row["count"]
        for pid, counts in now.items():
            comm = self._comm(pid)
            entry = self._touch(pid, comm) \
                if self.per_pid and counts != self.outcomes.get(pid) else None
            if entry is not None:
                entry.moves = Counter()
                for (result, _), n in counts.items():
                    entry.moves[result] += n
        for pid in set(self.outcomes) - set(now):
            self._retire(pid)
        self.outcomes = now
        # labels only for the processes the kernel counts (and the retired
        # that wait for one): a record of one long gone names it again
        self._pid_comm = {pid: c for pid, c in self._pid_comm.items() if pid in now}
        self._give_up_waiting()
        if self.per_pid:
            self._age_out()

    def _retire(self, pid: int):
        """The kernel no longer counts `pid` (it exited and serve took its
        counts out of the kernel's map): keep them under its comm, once a
        record names it (UNLINKED_WAIT_S at most, then `unknown`)."""
        comm = self._pid_comm.pop(pid, None)
        if comm is None:
            self._unnamed_retired[pid] = (self.outcomes[pid], self.elapsed_s or 0.0)
        else:
            self._fold(comm, self.outcomes[pid])

    def _fold(self, comm: str, counts: Counter):
        for (result, partial), n in counts.items():
            self._retired[(comm, result, partial)] += n

    def _footer(self, r: dict):
        self._finish(r["reason"])

    def finish(self, reason: str):
        """No more records (a trace without a footer)."""
        with self.lock:
            self._finish(reason)

    def _finish(self, reason: str):
        """A process never named counts as `unknown`, so does a repeat whose
        first failure never came."""
        if self.finished is None:
            self.finished = reason
        self._give_up_waiting(everything=True)

    def _touch(self, pid: int, comm: str) -> _Pid | None:
        """The process's per-pid entry, now active; None when pid_limit
        processes have one: a newcomer waits for one to age out rather
        than take a slot (which would reset that one's counters)."""
        entry = self.pids.get(pid)
        if entry is None:
            if len(self.pids) >= self.pid_limit:
                return None
            entry = self.pids[pid] = _Pid(comm, 0.0, Counter(), Counter())
        entry.last_active = self.elapsed_s or 0.0
        self.pids.move_to_end(pid)
        return entry

    def _age_out(self):
        while self.pids:
            pid, entry = next(iter(self.pids.items()))
            if entry.last_active >= self.elapsed_s - self.pid_ttl_s:
                break
            del self.pids[pid]

    _HANDLERS = {"header": _header, "move": _move, "repeat": _repeat, "ksm": _ksm,
                 "livelock": _livelock, "aggregates": _aggregates, "footer": _footer}

    # --- reading --------------------------------------------------------------
    def move_counts(self) -> Counter:
        """(comm, result, partial) -> moves: the kernel's counts, retired
        processes included."""
        out = Counter(self._retired)
        for pid, counts in self.outcomes.items():
            comm = self._pid_comm.get(pid, UNKNOWN if self.finished else None)
            if comm is None:
                continue        # not named yet: counted once named, retired or finished
            for (result, partial), n in counts.items():
                out[(comm, result, partial)] += n
        return out

    def tracked_pids(self) -> int:
        """Processes the state holds a label or counts for (bounded: see
        the module)."""
        return len(self._pid_comm.keys() | self.outcomes.keys() | self._unnamed_retired.keys())


def _counter(name: str, doc: str, labels: list[str] | None = None, unit: str = ""
             ) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels, unit=unit)


def families(state: MetricsState) -> list[Metric]:
    """Every metric the records say, in a fixed order: the one rendering of
    `serve` and `report --openmetrics`."""
    with state.lock:
        return [*_info(state), *_moves(state), *_failures(state), *_kernel(state),
                *_histograms(state), *_events(state), *_per_pid(state)]


def _info(state: MetricsState) -> list[Metric]:
    h = state.header
    if h is None:
        return []
    info = InfoMetricFamily(f"{PREFIX}_tracer", "What is traced, and how",
                            value={"tier": h["tier"], "kernel": h["kernel_release"],
                                   "version": h["uffdtrace_version"],
                                   "success_sample": str(h.get("success_sample", 1)),
                                   "failed_only": str(bool(h["filters"]["failed_only"])).lower(),
                                   "coalesce_ms": str(h.get("coalesce_ms", 0))})
    out = [info]
    if state.elapsed_s is not None:
        elapsed = GaugeMetricFamily(f"{PREFIX}_traced_seconds",
                                    "Seconds traced, at the latest in-kernel snapshot",
                                    value=state.elapsed_s, unit="seconds")
        out.append(elapsed)
    return out


def _moves(state: MetricsState) -> list[Metric]:
    moves = _counter("moves", "UFFDIO_MOVE calls by result (ok or the errno), counted in the "
                     "kernel: exact whatever was sampled or dropped", ["comm", "result"])
    partial = _counter("partial_moves", "Moves that failed (EAGAIN) after moving some bytes, "
                       "counted in the kernel", ["comm"])
    by_result, by_partial = Counter(), Counter()
    for (comm, result, is_partial), n in state.move_counts().items():
        by_result[(comm, result)] += n
        if is_partial:
            by_partial[comm] += n
    for (comm, result), n in sorted(by_result.items()):
        moves.add_metric([comm, result], n)
    for comm, n in sorted(by_partial.items()):
        partial.add_metric([comm], n)
    return [moves, partial]


def _failures(state: MetricsState) -> list[Metric]:
    failures = _counter("move_failures", "Failed moves by diagnosed cause (a partial move's "
                        "underlying cause), errno and evidence level: every failure record "
                        "and repeat count", ["comm", "cause", "errno", "evidence", "partial"])
    for key, n in sorted(state.failures.items()):
        failures.add_metric(list(key), n)
    return [failures]


def _kernel(state: MetricsState) -> list[Metric]:
    c = state.counters
    out = []
    for counter, name, unit, doc in KERNEL_COUNTERS:
        if counter in c:
            out.append(_counter(name, doc, unit=unit))
            out[-1].add_metric([], c[counter])
    drops = _counter("drops", "What the tracer lost or left out, by the kernel counter that "
                     "counted it: ring buffers full, unreadable move arguments, full maps, "
                     "hook runs the kernel skipped (recursion_misses)",
                     ["kind"])
    for kind in records.LOSS_COUNTERS:
        if kind in c:
            drops.add_metric([kind], c[kind])
    return out + [drops]


def _histograms(state: MetricsState) -> list[Metric]:
    if not state.histograms:
        return []
    c = state.counters
    latency_sum = c["latency_ns"] / 1e9 if "latency_ns" in c else None
    latency = HistogramMetricFamily(
        f"{PREFIX}_move_latency_seconds", "Latency of every move, from the kernel's log2 "
        "histogram", buckets=log2_histogram(state.histograms.get("latency_log2", {}),
                                            LATENCY_BUCKETS, 10 ** 9),
        sum_value=latency_sum, unit="seconds")
    size = HistogramMetricFamily(
        f"{PREFIX}_move_size_bytes", "Requested len of every move, from the kernel's log2 "
        "histogram", buckets=log2_histogram(state.histograms.get("size_log2", {}),
                                            SIZE_BUCKETS),
        sum_value=c.get("bytes_requested"), unit="bytes")
    return [latency, size]


def _events(state: MetricsState) -> list[Metric]:
    ksm = _counter("ksm_pages", "KSM-merged pages that made a move fail (each page once)")
    ksm.add_metric([], state.ksm_pages)
    livelocks = _counter("livelocks", "Threads found failing the same move for 1 s or more "
                         "without a success")
    livelocks.add_metric([], state.livelocks)
    ongoing = GaugeMetricFamily(f"{PREFIX}_livelocks_ongoing", "Livelocks going on now",
                                value=len(state.ongoing_livelocks))
    return [ksm, livelocks, ongoing]


def _per_pid(state: MetricsState) -> list[Metric]:
    if not state.per_pid:
        return []
    moves = _counter("process_moves", "Moves of each recently active process (--per-pid), "
                     "counted in the kernel", ["pid", "comm", "result"])
    failures = _counter("process_move_failures", "Failed moves of each recently active "
                        "process (--per-pid) by diagnosed cause", ["pid", "comm", "cause"])
    for pid, entry in state.pids.items():
        for result, n in sorted(entry.moves.items()):
            moves.add_metric([str(pid), entry.comm, result], n)
        for cause, n in sorted(entry.failures.items()):
            failures.add_metric([str(pid), entry.comm, cause], n)
    return [moves, failures]


class StateCollector(Collector):
    """A MetricsState for a prometheus_client registry."""

    def __init__(self, state: MetricsState):
        self.state = state

    def collect(self):
        return families(self.state)


def registry_of(state: MetricsState, *more: Collector) -> CollectorRegistry:
    """A registry with the state's metrics, then `more` (serve: up, self-cost)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state))
    for collector in more:
        registry.register(collector)
    return registry


def render_openmetrics(registry: CollectorRegistry) -> str:
    """The OpenMetrics text exposition (what Prometheus asks serve for)."""
    return openmetrics_text(registry).decode()
