"""What a trace record means, for every consumer: the one reading of a
move record's outcome, bytes moved and cause, of a pin record's method, and
of a header's page size.  report (tracesummary.py), export
(chrometrace.py), top (model/view/detail) and `trace` lines all ask here,
so a new record shape (a kernel-tier culprit, say) is interpreted once.

Records are the dicts of the trace format (docs/trace-format.md), as the
reader yields them or as TracedMove.to_json() builds them live.
"""
from __future__ import annotations

from .culprits import Culprit, culprit_from_json
from .events import pin_method_name
from .native import lib

OK, PARTIAL, FAILED = "ok", "partial", "failed"
DEFAULT_PAGE_SIZE = 4096   # only for traces whose header predates page_size


def outcome(move: dict) -> str:
    """ok, partial (EAGAIN after moving some bytes) or failed."""
    if move["ret"] == 0:
        return OK
    return PARTIAL if move["errno"] == "EAGAIN" and move["move"] > 0 else FAILED


def bytes_moved(move: dict) -> int:
    """Bytes this move really moved: all of a success (`move` is len, or was
    left unwritten), the progress of a partial move, none of a failure."""
    if move["ret"] == 0:
        return move["move"] if move["move"] > 0 else move["len"]
    return max(move["move"], 0) if move["errno"] == "EAGAIN" else 0


def effective_cause(diagnosis: dict | None) -> str:
    """The cause to act on: a partial move's underlying cause."""
    d = diagnosis or {}
    return d.get("underlying") or d.get("cause") or "unknown"


def culprit(diagnosis: dict | None) -> Culprit | None:
    """The typed culprit a diagnosis names (None: none)."""
    return culprit_from_json((diagnosis or {}).get("culprit"))


def _pin_method(pin: dict) -> int:
    # pin records before the kernel tier had no `method`: all were io_uring
    # registrations (the only pins the tracepoint tier sees)
    return pin.get("method", lib().UT_PIN_IO_URING_REGISTER)


def pin_label(pin: dict) -> str:
    """How a pin record's pages were pinned, from its `method`."""
    return pin_method_name(_pin_method(pin))


def pin_registered_by_io_uring(pin: dict) -> bool:
    """A pin record of io_uring_register(2) fixed buffers (its fd and index
    are the ring's), not of a GUP hook."""
    return _pin_method(pin) == lib().UT_PIN_IO_URING_REGISTER


PURGE_AT = 1024


class LatestFailure:
    """Which failure a repeat repeats: its thread's latest failure, when that
    is the run's first (same ts_ns; a run's repeat comes before the thread's
    next failure).  A repeat whose first failure was lost (ring buffer full)
    links to nothing: its failures still count, with no cause.  `limit`
    bounds the threads remembered (a live collector): past it all are
    forgotten at once, and a repeat of a forgotten run links to nothing.
    `max_age_ns` instead forgets failures that much older than the newest
    (a repeat comes within coalesce_ms of its run's first failure)."""

    def __init__(self, limit: int | None = None, max_age_ns: int | None = None):
        self.limit, self.max_age_ns = limit, max_age_ns
        self._latest: dict[int, tuple[int, object]] = {}   # tid -> (ts_ns, failure)
        self._purge_at = PURGE_AT

    def remember(self, tid: int, ts_ns: int, failure):
        if self.limit is not None and len(self._latest) >= self.limit \
                and tid not in self._latest:
            self._latest.clear()
        self._latest[tid] = (ts_ns, failure)
        if self.max_age_ns is not None and len(self._latest) >= self._purge_at:
            # purged when it doubles: amortized O(1) a failure
            oldest = ts_ns - self.max_age_ns
            self._latest = {t: f for t, f in self._latest.items() if f[0] >= oldest}
            self._purge_at = max(PURGE_AT, 2 * len(self._latest))

    def __len__(self) -> int:
        return len(self._latest)

    def forget(self, tid: int):
        """The thread is gone: nothing will repeat its failure."""
        self._latest.pop(tid, None)

    def of(self, tid: int, first_ts_ns: int):
        got = self._latest.get(tid)
        return got[1] if got is not None and got[0] == first_ts_ns else None


class RepeatLinker:
    """LatestFailure over a trace's records: feed every move record to
    move(), in file order; of(repeat record) is the move record it repeats.
    max_age_ns: see LatestFailure (a reader that runs for days: `serve`)."""

    def __init__(self, max_age_ns: int | None = None):
        self._latest = LatestFailure(max_age_ns=max_age_ns)

    def move(self, m: dict):
        if m["ret"] != 0:
            self._latest.remember(m["tid"], m["ts_ns"], m)

    def of(self, repeat: dict) -> dict | None:
        return self._latest.of(repeat["tid"], repeat["first_ts_ns"])


def repeat_span_ns(repeat: dict) -> int:
    """From the run's first failure to the entry of its last."""
    return repeat["last_ts_ns"] - repeat["first_ts_ns"]


# The in-kernel counters of moves lost to a full ring buffer (UT_STAT_*):
# failures and pins, the failures a lost repeat record counted, successes.
DROP_COUNTERS = ("ringbuf_drops", "repeat_drops", "success_drops")


# In-kernel counts of what a full map kept from being recorded (UT_STAT_*_FULL).
MAP_FULL_COUNTERS = ("outcomes_full", "follow_full", "saved_args_full")
# Every in-kernel counter of something lost or left out (report's DROPS, the
# exporter's uffdtrace_drops_total): ring buffers full, unreadable move
# arguments, full maps (runs_full: failures then sent one by one instead),
# hook runs the kernel skipped (recursion_misses: the move, pin or step each
# would have seen is not recorded; a skipped move entry or exit is missing
# from the in-kernel totals too).
LOSS_COUNTERS = ("ringbuf_drops", "success_drops", "repeat_drops", "runs_full",
                 "arg_read_fails", "inflight_full", "wake_drops", "recursion_misses",
                 *MAP_FULL_COUNTERS)


def drops(counters: dict) -> int:
    """Moves and pins lost to full ring buffers (counters from a live
    session or an aggregates record; older traces lack some)."""
    return sum(int(counters.get(k, 0)) for k in DROP_COUNTERS)


def events_lost(counters: dict) -> int:
    """What may be missing from the records: drops(), and the hook runs the
    kernel skipped (each may have been a move or a pin)."""
    return drops(counters) + int(counters.get("recursion_misses", 0))


def page_size(header: dict | None) -> int:
    """The traced machine's page size (older headers lack it)."""
    return (header or {}).get("page_size") or DEFAULT_PAGE_SIZE
