"""Failing moves that change nothing, repeatable at any rate: the storms of
`workload -s failure-storm / mixed-storm / retry-loop` and of the bench's
failure-recording section (one setup, one loop: native/uffdw.c
uffdw_move_cycle).

Each kind is one 4 KiB move that fails the same way every time:
  dst_populated  onto a destination populated before it was registered: EEXIST
  src_pinned     of a source page an io_uring fixed buffer pins: EBUSY
  src_hole       of a source page never touched: ENOENT
"""
from __future__ import annotations

from collections import Counter
from contextlib import ExitStack

from ..native import PAGE_SIZE, IoUringPin, LoopStats, Mapping, Uffd, lib

ERRNO = {"dst_populated": "EEXIST", "src_pinned": "EBUSY", "src_hole": "ENOENT"}


class FailureCycle:
    """The moves of `kinds`, set up once, then issued in turn (call i is
    kinds[i % len(kinds)]) as often as asked."""

    def __init__(self, kinds: list[str], uffd: Uffd | None = None):
        unknown = set(kinds) - set(ERRNO)
        if not kinds or unknown:
            raise ValueError(f"failure kinds must be among {sorted(ERRNO)}: {kinds}")
        self.kinds = list(kinds)
        self._stack = ExitStack()
        self._uffd = uffd
        self._moves: list[tuple[int, int, int]] = []
        self.setup: list[dict] = []     # what each kind moves, for the workload's JSON

    def __enter__(self) -> FailureCycle:
        try:
            if self._uffd is None:
                self._uffd = self._stack.enter_context(Uffd())
            for kind in self.kinds:
                self._add(kind)
        except BaseException:
            self._stack.close()
            raise
        return self

    def _add(self, kind: str):
        src = self._stack.enter_context(Mapping(PAGE_SIZE))
        dst = self._stack.enter_context(Mapping(PAGE_SIZE))
        for m in (src, dst):
            m.madvise(lib().MADV_NOHUGEPAGE)
        if kind != "src_hole":
            src.fill()
        if kind == "dst_populated":
            dst.fill()          # populated before it is registered: every move is EEXIST
        self._uffd.register(dst)
        if kind == "src_pinned":
            self._stack.enter_context(IoUringPin(src.addr, PAGE_SIZE))
        self._moves.append((dst.addr, src.addr, PAGE_SIZE))
        self.setup.append({"failure": kind, "src": src.addr, "dst": dst.addr,
                           "pinned_src": kind == "src_pinned"})

    def run(self, count: int, rate: int = 0) -> LoopStats:
        """`count` moves at `rate` calls/s (0: flat out), in C."""
        return self._uffd.move_cycle(self._moves, count, rate=rate)

    def expected_errors(self, count: int) -> dict[str, int]:
        """Failures by errno that `count` moves make."""
        n = len(self.kinds)
        return dict(+Counter({ERRNO[k]: count // n + (i < count % n)
                              for i, k in enumerate(self.kinds)}))

    def flat_out_count(self, seconds: float) -> int:
        """How many calls take about `seconds` untraced."""
        s = self.run(20_000, 0)
        return max(20_000, int(s.calls / s.ns * 1e9 * seconds))

    def __exit__(self, *exc):
        self._stack.close()
