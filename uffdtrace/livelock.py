"""Livelocks, flagged while they happen: a thread that keeps failing the
same move, without a success in between, for LIVELOCK_MIN_S or more.

"The same move" is the same request (src, dst, len, mode) failing with the
same errno for the same cause: what a GC retrying one move sees.  The
kernel coalesces identical failures into runs (bpf/uffdtrace_event.h,
struct ut_repeat_event), but its "identical" also compares page facts
(pfn, folio flags, the failing step) that can change under a retry loop
without changing the request or its cause: a run it closes as `different`
or by `time` is therefore no end of the chain by itself; the thread's next
failure decides.  A success, a different failure, or a run closed because
its thread is gone (`end`) ends the chain.

The detector is fed what a Session delivers, in order, and hands back a
Livelock when a chain first passes the threshold ("ongoing") and when it
ends ("ended"), with the cause its first failure was diagnosed with, the
culprit that diagnosis names and the other threads seen failing on the same
source page meanwhile (the "other parties").  With runs of coalesce_ms, a
livelock is seen at most coalesce_ms after it passes the threshold.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .events import SuccessBatch
from .native import lib
from .session import TracedMove, TracedRepeat

LIVELOCK_MIN_S = 1.0
# other threads remembered per source page, and pages remembered
MAX_PARTIES = 8
MAX_PAGES = 4096
MAX_CHAINS = 4096     # threads followed at once; past it, those not flagged are let go


@dataclass
class _Chain:
    first: TracedMove           # the chain's first failure
    last_ns: int
    failures: int
    flagged: bool = False


@dataclass(frozen=True)
class Livelock:
    state: str                  # "ongoing" (passed the threshold) or "ended"
    first: TracedMove
    last_ts_ns: int
    failures: int
    parties: tuple[tuple[int, int, str], ...] = field(default=())   # (pid, tid, comm)

    @property
    def seconds(self) -> float:
        return (self.last_ts_ns - self.first.event.ts_ns) / 1e9

    def to_json(self) -> dict:
        e, d = self.first.event, self.first.diagnosis
        src_state = e.src_state
        return {"type": "livelock", "state": self.state, "pid": e.pid, "tid": e.tid,
                "comm": e.comm, "first_ts_ns": e.ts_ns, "last_ts_ns": self.last_ts_ns,
                "failures": self.failures, "errno": e.errno,
                "cause": d.effective_cause, "evidence": d.evidence,
                "culprit": d.culprit.to_json() if d.culprit is not None else None,
                "src": e.src, "dst": e.dst, "len": e.len, "fail_addr": d.fail_addr,
                "src_pfn": src_state.pfn if src_state is not None else None,
                "other_parties": [{"pid": p, "tid": t, "comm": c} for p, t, c in self.parties]}


def _src_page(m: TracedMove) -> int | None:
    """The physical page a failure stopped on, as the kernel read it at exit."""
    s = m.event.src_state
    return s.pfn if s is not None and s.pfn else None


def _same_move(a: TracedMove, b: TracedMove) -> bool:
    """`b` retries the request `a` made and fails the same way (see the
    module's docstring)."""
    ea, eb = a.event, b.event
    return (ea.src, ea.dst, ea.len, ea.mode, ea.ret) == (eb.src, eb.dst, eb.len, eb.mode, eb.ret) \
        and a.diagnosis.effective_cause == b.diagnosis.effective_cause


class LivelockDetector:
    def __init__(self, min_s: float = LIVELOCK_MIN_S):
        self.min_ns = int(min_s * 1e9)
        self._chains: dict[int, _Chain] = {}
        # src page -> other threads that failed on it: {tid: (pid, tid, comm)}
        self._page_parties: dict[int, dict[int, tuple[int, int, str]]] = {}
        self._over = (lib().UT_RUN_CLOSED_SUCCESS, lib().UT_RUN_CLOSED_END)

    def feed(self, items: list) -> list[Livelock]:
        out: list[Livelock] = []
        for item in items:
            if isinstance(item, TracedMove):
                self._move(item, out)
            elif isinstance(item, TracedRepeat):
                self._repeat(item, out)
            elif isinstance(item, SuccessBatch):
                self._successes(item, out)
        return out

    def _successes(self, batch: SuccessBatch, out: list):
        """A success ends its thread's chain, if it came after the chain began."""
        if not self._chains:
            return      # the usual case: nothing failing, nothing to end
        for tid, ts_ns in batch.last_ts_by_tid().items():
            chain = self._chains.get(tid)
            if chain is not None and ts_ns > chain.first.event.ts_ns:
                self._end(tid, out)

    def finish(self) -> list[Livelock]:
        """Chains still flagged when tracing ends: ended with it."""
        out = [self._ended(c) for c in self._chains.values() if c.flagged]
        self._chains.clear()
        return out

    def _move(self, m: TracedMove, out: list):
        tid = m.event.tid
        chain = self._chains.get(tid)
        if not m.event.failed:
            if chain is not None:
                self._end(tid, out)
            return
        self._note_party(m)
        if chain is not None and _same_move(chain.first, m):
            chain.failures += 1
            chain.last_ns = max(chain.last_ns, m.event.ts_ns)
            self._check(chain, out)
            return
        if chain is not None:
            self._end(tid, out)
        if len(self._chains) >= MAX_CHAINS:
            # threads that failed and went away (a tracer left running):
            # forget the chains not flagged, which are no livelock yet
            self._chains = {t: c for t, c in self._chains.items() if c.flagged}
        self._chains[tid] = _Chain(m, m.event.ts_ns, 1)

    def _repeat(self, r: TracedRepeat, out: list):
        tid = r.repeat.tid
        chain = self._chains.get(tid)
        if chain is None or r.of is None:
            return      # its first failure was lost: nothing to attribute it to
        chain.failures += r.repeat.count
        chain.last_ns = max(chain.last_ns, r.repeat.last_ts_ns)
        self._check(chain, out)
        if r.repeat.closed_by in self._over:
            # the thread succeeded (no success event comes with --failed-only)
            # or is gone: the chain cannot go on
            self._end(tid, out)

    def _check(self, chain: _Chain, out: list):
        if not chain.flagged and chain.last_ns - chain.first.event.ts_ns >= self.min_ns:
            chain.flagged = True
            out.append(Livelock("ongoing", chain.first, chain.last_ns, chain.failures,
                                self._parties(chain.first)))

    def _end(self, tid: int, out: list):
        chain = self._chains.pop(tid)
        if chain.flagged:
            out.append(self._ended(chain))

    def _ended(self, chain: _Chain) -> Livelock:
        return Livelock("ended", chain.first, chain.last_ns, chain.failures,
                        self._parties(chain.first))

    def _note_party(self, m: TracedMove):
        page = _src_page(m)
        if page is None:
            return
        if page not in self._page_parties and len(self._page_parties) >= MAX_PAGES:
            self._page_parties.clear()
        parties = self._page_parties.setdefault(page, {})
        if m.event.tid in parties or len(parties) < MAX_PARTIES:
            parties[m.event.tid] = (m.event.pid, m.event.tid, m.event.comm)

    def _parties(self, m: TracedMove) -> tuple[tuple[int, int, str], ...]:
        """Other threads that failed on the page this failure stopped on."""
        page = _src_page(m)
        parties = self._page_parties.get(page, {}) if page is not None else {}
        return tuple(p for tid, p in sorted(parties.items()) if tid != m.event.tid)

