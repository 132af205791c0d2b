"""Question 9: which faulting threads a move (or a UFFDIO_WAKE) woke, how
long they had waited, and whether a DONTWAKE move left them to a later
UFFDIO_WAKE.

A thread that reads a missing page registered with a userfaultfd sleeps in
handle_userfault() until the monitor fills the page.  At the entry of each
UFFDIO_MOVE and UFFDIO_WAKE the BPF program reads who sleeps on that uffd at
an address of the range it wakes (bpf/ut_uffdstate.h) and sends a
struct ut_wake_event (bpf/uffdtrace_event.h, read here through cffi).  A
move wakes the waiters of [dst, dst + bytes moved) unless it asked
UFFDIO_MOVE_MODE_DONTWAKE: whether each was really woken is decided here,
with the move's own record (same thread, same ts_ns).

Each wait carries its evidence: `exact` (the kernel tier stamped the
thread's entry into handle_userfault()) or `at_least` (the tracepoint tier,
which hooks no page fault: first seen asleep there by an earlier walk, or
by this one).  A bound is never shown as an exact value.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

from .native import ffi, lib
from .walkstate import codes

# since -> the evidence of the wait it gives
WAIT_EVIDENCE = {"fault_entry": "exact", "first_seen": "at_least"}
# woken rows a linker keeps (the counts cover every waiter)
MAX_ROWS = 1000
# wake records of moves waiting for their move record, and DONTWAKE
# waiters waiting for their UFFDIO_WAKE
MAX_PENDING = 4096


@dataclass(frozen=True)
class Waiter:
    """A thread asleep in handle_userfault() at an address the ioctl wakes."""

    pid: int
    tid: int
    comm: str           # untrusted: escape before markup
    addr: int           # the page it faulted on
    since_ns: int       # bpf_ktime_get_ns(): see `since`
    since: str          # fault_entry (exact) | first_seen (a lower bound)
    queue: str          # pending (the monitor had not read the fault) | read

    @property
    def evidence(self) -> str:
        return WAIT_EVIDENCE.get(self.since, "unknown")

    def to_json(self) -> dict:
        return {"pid": self.pid, "tid": self.tid, "comm": self.comm, "addr": self.addr,
                "since_ns": self.since_ns, "since": self.since, "queue": self.queue}


@dataclass(frozen=True)
class WakeEvent:
    """Who a UFFDIO_MOVE or UFFDIO_WAKE found asleep in its range at entry."""

    pid: int            # the waker
    tid: int
    comm: str
    fd: int
    ts_ns: int          # a move's: its move record's ts_ns
    cause: str          # move | wake
    start: int
    len: int
    dontwake: bool
    raced: bool         # a queue changed while walked: waiters may be missing
    more: bool          # more waiters in range than described
    waiting: int        # threads asleep on the uffd (walked)
    in_range: int
    waiters: tuple[Waiter, ...]

    @classmethod
    def from_bytes(cls, raw: bytes) -> WakeEvent:
        F, L = ffi(), lib()
        buf = F.from_buffer(bytearray(raw[:F.sizeof("struct ut_wake_event")]))
        c = F.cast("struct ut_wake_event *", buf)
        shown = min(c.in_range, L.UT_WAKE_WAITERS_MAX)
        waiters = tuple(Waiter(w.pid, w.tid, _text(F, w.comm), w.addr, w.since_ns,
                               _name("UT_WAIT_", w.since), _name("UT_WQ_", w.queue))
                        for w in (c.waiters[i] for i in range(shown)))
        return cls(c.pid, c.tid, _text(F, c.comm), c.fd, c.ts_ns, _name("UT_WAKE_BY_", c.cause),
                   c.start, c.len, bool(c.flags & L.UT_WK_DONTWAKE),
                   bool(c.flags & L.UT_WK_RACED), bool(c.flags & L.UT_WK_MORE),
                   c.waiting, c.in_range, waiters)

    def to_json(self) -> dict:
        out = dict(vars(self))
        out["waiters"] = [w.to_json() for w in self.waiters]
        return out


def _text(F, chars) -> str:
    return F.string(chars).decode("utf-8", "replace")


@lru_cache(maxsize=None)
def _codes(prefix: str) -> dict[int, str]:
    return {v: n.lower() for v, n in codes(prefix).items()}


def _name(prefix: str, value: int) -> str:
    return _codes(prefix).get(value, f"{prefix.lower()}{value}")


def decode_wake(raw: bytes) -> WakeEvent | None:
    if len(raw) < ffi().sizeof("struct ut_wake_event"):
        return None
    return WakeEvent.from_bytes(raw)


# --- linking records: who was woken, by what, after how long -------------------

def wake_sent(move: dict) -> bool:
    """Was a wake record sent at this move record's entry?"""
    return bool(move.get("flags", 0) & lib().UT_F_WAKE_SENT)


def waited(waiter: dict, until_ns: int) -> dict:
    """The wait of a waiter record until `until_ns` (the waking call's
    entry), with its evidence."""
    return {"waited_ns": max(0, until_ns - waiter["since_ns"]),
            "wait_evidence": WAIT_EVIDENCE.get(waiter["since"], "unknown")}


def move_woke(wake: dict, move: dict | None, waiter: dict) -> str:
    """What a move did to one waiter of its wake record: woken, dontwake
    (left asleep: a UFFDIO_WAKE must follow), not_moved (its page was not
    moved: nothing woke it), or unknown (the move's record is missing)."""
    if wake["dontwake"]:
        return "dontwake"
    if move is None:
        return "unknown"
    moved = move["len"] if move["ret"] == 0 else max(move["move"], 0)
    return "woken" if waiter["addr"] - wake["start"] < moved else "not_moved"


class WakeLinker:
    """Feed it the trace's move and wake records in order; rows() are the
    faulting threads each move or UFFDIO_WAKE woke (or left asleep).

    A move's wake record comes before its move record (sent at the move's
    entry): it waits in `pending` for it.  A DONTWAKE move's waiters wait in
    `asleep` for the UFFDIO_WAKE that wakes them."""

    def __init__(self, max_rows: int = MAX_ROWS, on_row=None):
        # moves whose wake record has not come yet (the two are drained from
        # different ring buffers, so either can come first)
        self.moved: OrderedDict[tuple, dict] = OrderedDict()
        self.max_rows = max_rows
        self.on_row = on_row            # called with each row as it is decided
        self.rows_: list[dict] = []
        self.counts = {"woken_by_move": 0, "woken_by_wake": 0, "left_by_dontwake": 0,
                       "not_moved": 0, "unknown": 0}
        self.rows_dropped = 0
        self.raced = 0                  # wake records whose walk raced
        self.undescribed = 0            # waiters counted beyond the 4 described
        self.pending: OrderedDict[tuple, dict] = OrderedDict()   # (tid, ts_ns) -> wake
        self.asleep: OrderedDict[tuple, dict] = OrderedDict()    # (tid, addr) -> row

    def wake(self, w: dict):
        self.raced += w["raced"]
        self.undescribed += max(0, w["in_range"] - len(w["waiters"]))
        if w["cause"] == "move" and not w["dontwake"]:
            m = self.moved.pop((w["tid"], w["ts_ns"]), None)
            if m is not None:
                self._moved(w, m)
            else:
                _bounded_put(self.pending, (w["tid"], w["ts_ns"]), w)
            return
        for waiter in w["waiters"]:
            if w["cause"] == "move":      # DONTWAKE: asleep until a UFFDIO_WAKE
                row = self._row(w, waiter, "dontwake")
                _bounded_put(self.asleep, (waiter["tid"], waiter["addr"]), row)
                continue
            earlier = self.asleep.pop((waiter["tid"], waiter["addr"]), None)
            row = self._row(w, waiter, "woken")
            if earlier is not None:
                row["after_dontwake_move"] = {"ts_ns": earlier["ts_ns"],
                                              "tid": earlier["by_tid"],
                                              "comm": earlier["by_comm"]}
            self._add(row)

    def move(self, m: dict):
        key = (m["tid"], m["ts_ns"])
        w = self.pending.pop(key, None)
        if w is not None:
            self._moved(w, m)
        elif wake_sent(m) and not m["mode"] & lib().UFFDT_MOVE_MODE_DONTWAKE:
            _bounded_put(self.moved, key, m)

    def finish(self):
        """Moves whose record never came, and DONTWAKE waiters no UFFDIO_WAKE
        was seen for."""
        while self.pending:
            self._moved(self.pending.popitem(last=False)[1], None)
        while self.asleep:
            self._add(self.asleep.popitem(last=False)[1])

    def _moved(self, w: dict, m: dict | None):
        for waiter in w["waiters"]:
            self._add(self._row(w, waiter, move_woke(w, m, waiter)))

    @staticmethod
    def _row(w: dict, waiter: dict, outcome: str) -> dict:
        return {"tid": waiter["tid"], "pid": waiter["pid"], "comm": waiter["comm"],
                "addr": waiter["addr"], "queue": waiter["queue"],
                **waited(waiter, w["ts_ns"]), "by": w["cause"], "outcome": outcome,
                "ts_ns": w["ts_ns"], "by_tid": w["tid"], "by_pid": w["pid"],
                "by_comm": w["comm"]}

    def _add(self, row: dict):
        key = {"woken": f"woken_by_{row['by']}", "dontwake": "left_by_dontwake"}.get(
            row["outcome"], row["outcome"])
        self.counts[key] += 1
        if self.on_row is not None:
            self.on_row(row)
        if len(self.rows_) < self.max_rows:
            self.rows_.append(row)
        else:
            self.rows_dropped += 1

    def rows(self) -> list[dict]:
        return sorted(self.rows_, key=lambda r: (r["ts_ns"], r["tid"]))

    def summary(self, rel_s) -> dict:
        """What `report` shows (after finish()); rel_s: a ts_ns -> seconds
        since the trace began."""
        def row(r: dict) -> dict:
            out = {k: r[k] for k in ("tid", "pid", "comm", "addr", "queue", "wait_evidence",
                                     "by", "outcome", "by_tid", "by_pid", "by_comm")}
            out["waited_ms"] = round(r["waited_ns"] / 1e6, 3)
            out["at_s"] = rel_s(r["ts_ns"])
            dw = r.get("after_dontwake_move")
            out["after_dontwake_move"] = None if dw is None else \
                {"at_s": rel_s(dw["ts_ns"]), "tid": dw["tid"], "comm": dw["comm"]}
            return out
        return {"counts": dict(self.counts), "raced": self.raced,
                "undescribed": self.undescribed, "rows_dropped": self.rows_dropped,
                "rows": [row(r) for r in self.rows()]}


def _bounded_put(d: OrderedDict, key, value):
    d[key] = value
    if len(d) > MAX_PENDING:
        d.popitem(last=False)
