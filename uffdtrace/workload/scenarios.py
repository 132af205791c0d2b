"""Failure scenarios: each makes the kernel produce one UFFDIO_MOVE outcome.

A scenario is one *round*: it builds its mappings, performs its moves and
records them.  Everything it creates is entered on the round's ExitStack, so
it is released (unmapped, unpinned, child reaped) even when interrupted.
"""
from __future__ import annotations

import ctypes
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError
from ..native import (PAGE_SIZE, ForkHolder, IoUringPin, Mapping, MoveCall,
                      PendingEvent, Uffd, event_feature, hpage_size, lib)
from ..pagestate import read_page_states
from .ksm import KsmTuning

KSM_MERGE_TIMEOUT_S = 30.0
# Failures that --rewrite answers by changing pages (page-state errnos; an
# EINVAL is about the VMAs, which it leaves alone).
REWRITTEN_AFTER = ("EEXIST", "ENOENT", "EBUSY", "EAGAIN")


@dataclass(frozen=True)
class PlannedMove:
    """A move a round is about to issue (what a before_move hook is given)."""

    scenario: str
    dst: int
    src: int
    len: int
    mode: int
    pid: int            # the process whose memory moves (owns the userfaultfd)
    cross_mm: bool      # issued from another process (a forked child)

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "dst": self.dst, "src": self.src, "len": self.len,
                "mode": self.mode, "pid": self.pid, "cross_mm": self.cross_mm}


@dataclass
class Round:
    """What one scenario round may use, and what it produced."""

    uffd: Uffd
    pages: int
    stack: ExitStack
    scenario: str
    calls: list[tuple[str, MoveCall]] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    # What went wrong in the round beyond any one call's result (e.g. a page
    # not moved exactly once): reported as the workload's problems.
    problems: list[str] = field(default_factory=list)
    # After each failed move, change its pages the way a compacting GC moves
    # on: the destination unpopulated, the source rewritten.  A tracer that
    # reads page state after the call then sees none of why it failed.
    rewrite: bool = False
    # Called right before each move is issued, with its PlannedMove (e.g. to
    # hold the workload there while `uffdtrace check` looks at the range).
    before_move: Callable[[PlannedMove], None] | None = None
    _pairs: list[Mapping] = field(default_factory=list)

    def mapping(self, length: int, **kw) -> Mapping:
        return self.stack.enter_context(Mapping(length, **kw))

    def pair(self, pages: int, *, fill_src: bool = True, populate_dst: tuple[int, ...] = (),
             register_dst: bool = True, align: int = PAGE_SIZE,
             advice: int | None = None) -> tuple[Mapping, Mapping]:
        """src and dst of `pages` pages; dst pages in populate_dst are written
        *before* dst is registered (writing a registered, missing page would
        raise a userfault nobody serves)."""
        src = self.mapping(pages * PAGE_SIZE, align=align)
        dst = self.mapping(pages * PAGE_SIZE, align=align)
        if advice is not None:
            src.madvise(advice)
            dst.madvise(advice)
        if fill_src:
            src.fill()
        for index in populate_dst:
            dst.fill(offset=index * PAGE_SIZE, length=PAGE_SIZE)
        if register_dst:
            self.uffd.register(dst)
        self._pairs.append((src, dst))
        return src, dst

    def record(self, call: MoveCall) -> MoveCall:
        self.calls.append((self.scenario, call))
        if self.rewrite and call.errno in REWRITTEN_AFTER:
            self._rewrite(call)
        return call

    def _rewrite(self, call: MoveCall):
        """Only this call's pages of a pair() (private, writable memory):
        the round's later calls still meet what they expect."""
        for src, dst in self._pairs:
            if src.holds(call.src, call.len) and dst.holds(call.dst, call.len):
                dst.madvise(lib().MADV_DONTNEED, offset=call.dst - dst.addr, length=call.len)
                src.fill(offset=call.src - src.addr, length=call.len)
                return

    def planned(self, dst: int, src: int, length: int, mode: int = 0,
                cross_mm: bool = False):
        if self.before_move is not None:
            self.before_move(PlannedMove(self.scenario, dst, src, length, mode, os.getpid(),
                                         cross_mm))

    def move(self, dst: int, src: int, length: int, mode: int = 0) -> MoveCall:
        self.planned(dst, src, length, mode)
        return self.record(self.uffd.move(dst, src, length, mode))

    def move_pages_one_by_one(self, src: Mapping, dst: Mapping, pages: int):
        for i in range(pages):
            self.move(dst.page(i), src.page(i), PAGE_SIZE)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    run: Callable[[Round], None]
    default_pages: int = 1
    min_pages: int = 1
    # What every call of the scenario must return: None = success.
    expect_errno: str | None = None
    expect_partial: bool = False
    needs_root: bool = False
    # Another errno a kernel may answer instead, as right as expect_errno
    # (each scenario that has one says when).
    alt_errno: str | None = None


# --- the scenarios --------------------------------------------------------------

def _ok(r: Round):
    src, dst = r.pair(r.pages)
    r.move_pages_one_by_one(src, dst, r.pages)


def _thp(r: Round):
    huge = hpage_size()
    length = r.pages * huge
    src = r.mapping(length, align=huge)
    dst = r.mapping(length, align=huge)
    for m in (src, dst):
        m.madvise(lib().MADV_HUGEPAGE)
    src.fill()
    r.uffd.register(dst)
    heads = [src.addr + i * huge for i in range(r.pages)]
    r.facts["src_thp"] = all(s.has("thp") for s in read_page_states(os.getpid(), heads))
    for i in range(r.pages):
        r.move(dst.addr + i * huge, src.addr + i * huge, huge)
    dst_heads = [dst.addr + i * huge for i in range(r.pages)]
    r.facts["dst_thp_after"] = all(s.has("thp")
                                   for s in read_page_states(os.getpid(), dst_heads))


def _dst_populated(r: Round):
    src, dst = r.pair(r.pages, populate_dst=tuple(range(r.pages)))
    r.move_pages_one_by_one(src, dst, r.pages)


def _partial(r: Round):
    # One dst page in the middle is already populated: the move stops there.
    stop = r.pages // 2
    src, dst = r.pair(r.pages, populate_dst=(stop,))
    r.facts["populated_dst"] = dst.page(stop)
    r.move(dst.addr, src.addr, r.pages * PAGE_SIZE)


def _src_hole(r: Round):
    src, dst = r.pair(r.pages, fill_src=False)
    r.move(dst.addr, src.addr, r.pages * PAGE_SIZE)


def _src_hole_allowed(r: Round):
    src, dst = r.pair(r.pages, fill_src=False)
    r.move(dst.addr, src.addr, r.pages * PAGE_SIZE, lib().UFFDT_MOVE_MODE_ALLOW_SRC_HOLES)


def _pinned(r: Round):
    # The second half of src is an io_uring fixed buffer (FOLL_LONGTERM pin):
    # the first half moves, then the kernel refuses the pinned page.
    start = r.pages // 2
    src, dst = r.pair(r.pages, advice=lib().MADV_NOHUGEPAGE)
    pin = r.stack.enter_context(
        IoUringPin(src.page(start), (r.pages - start) * PAGE_SIZE))
    r.facts["pinned"] = {"addr": pin.addr, "len": pin.length, "pid": os.getpid(),
                         "method": "io_uring fixed buffer"}
    r.move(dst.addr, src.addr, r.pages * PAGE_SIZE)


def ksm_merged(src: Mapping, pages: int) -> bool:
    """All `pages` of identical content mapped to one KSM page.  kpageflags
    alone is not enough: 6.12 flags pages KSM while ksmd is still merging
    them (each at its own pfn, one still mapped writable and exclusive)."""
    states = read_page_states(os.getpid(), [src.page(i) for i in range(pages)])
    return len({s.pfn for s in states}) == 1 and all(s.has("ksm") for s in states)


def _wait_for_ksm_merge(src: Mapping, pages: int) -> float:
    start = time.monotonic()
    while not ksm_merged(src, pages):
        if time.monotonic() - start > KSM_MERGE_TIMEOUT_S:
            states = read_page_states(os.getpid(), [src.page(i) for i in range(pages)])
            merged = sum(bool(s.has("ksm")) for s in states)
            raise UserError(f"ksmd merged only {merged} of {pages} pages into one in "
                            f"{KSM_MERGE_TIMEOUT_S:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - start


def _ksm(r: Round):
    r.stack.enter_context(KsmTuning())
    src, dst = r.pair(r.pages, fill_src=False)
    src.madvise(lib().MADV_MERGEABLE)
    src.fill(distinct=False)  # identical pages: ksmd merges them into one
    r.facts["ksm_merge_wait_s"] = round(_wait_for_ksm_merge(src, r.pages), 3)
    r.facts["ksm_pages"] = [src.page(i) for i in range(r.pages)]
    r.move_pages_one_by_one(src, dst, r.pages)


def _fork_shared(r: Round):
    src, dst = r.pair(r.pages)
    holder = r.stack.enter_context(ForkHolder())
    r.facts["sharing_child_pid"] = holder.pid
    r.move_pages_one_by_one(src, dst, r.pages)


def _misaligned(r: Round):
    src, dst = r.pair(r.pages)
    r.move(dst.addr + PAGE_SIZE // 8, src.addr, PAGE_SIZE)


def _dst_not_registered(r: Round):
    src, dst = r.pair(r.pages, register_dst=False)
    r.move(dst.addr, src.addr, r.pages * PAGE_SIZE)


def _vma_shared(r: Round):
    src = r.mapping(r.pages * PAGE_SIZE, shared=True)
    src.fill()
    dst = r.mapping(r.pages * PAGE_SIZE)
    r.uffd.register(dst)
    r.move(dst.addr, src.addr, r.pages * PAGE_SIZE)


def _src_readonly(r: Round):
    src, dst = r.pair(r.pages)
    src.mprotect(lib().PROT_READ)
    r.move(dst.addr, src.addr, r.pages * PAGE_SIZE)


# --- swap, unsplittable THP, mmap_changing ----------------------------------------
# (issue 16: each reproduces what the running kernel does; see
# reference/kernel-uffdio-move.md and mm/userfaultfd.c's move_pages_ptes)

PAGEOUT_TIMEOUT_S = 2.0
# How long the thp_pinned move may run before its mover is killed: a kernel
# whose split_folio() answers -EAGAIN for a pinned folio retries forever.
THP_PINNED_TIMEOUT_S = 2.0


def _swapped_out(r: Round, src: Mapping, pages: int):
    """A zram swap device for the round (taken down after it, even after a
    SIGKILL: zram.py's restore file), and src's pages swapped out to it."""
    from .zramswap import ZramSwap
    swap = r.stack.enter_context(ZramSwap())
    r.facts["swap_device"] = swap.path
    addrs = [src.page(i) for i in range(pages)]
    src.madvise(lib().MADV_PAGEOUT)
    deadline = time.monotonic() + PAGEOUT_TIMEOUT_S
    while not all(s.swapped for s in read_page_states(os.getpid(), addrs)):
        if time.monotonic() > deadline:
            raise UserError(f"MADV_PAGEOUT left src pages in memory after "
                            f"{PAGEOUT_TIMEOUT_S:.0f} s (swap to {swap.path})")
        time.sleep(0.01)
    r.facts["swapped_out"] = addrs


def _swapped(r: Round):
    # An exclusive swap entry moves: move_pages_ptes's !pte_present() path
    # (move_swap_pte) carries the entry itself to dst, nothing is swapped in.
    src, dst = r.pair(r.pages, advice=lib().MADV_NOHUGEPAGE)
    _swapped_out(r, src, r.pages)
    r.move_pages_one_by_one(src, dst, r.pages)
    r.facts["dst_swapped_after"] = all(
        s.swapped for s in read_page_states(os.getpid(), [dst.page(i) for i in range(r.pages)]))


def _swap_shared(r: Round):
    # fork() after the page-out clears the exclusive bit of each swap entry
    # (copy_nonpresent_pte): move_pages_ptes refuses a !pte_swp_exclusive
    # entry with -EBUSY.
    src, dst = r.pair(r.pages, advice=lib().MADV_NOHUGEPAGE)
    _swapped_out(r, src, r.pages)
    holder = r.stack.enter_context(ForkHolder())
    r.facts["sharing_child_pid"] = holder.pid
    r.move_pages_one_by_one(src, dst, r.pages)


def _thp_pinned(r: Round):
    # Part of a THP that an io_uring fixed buffer pins: move_pages splits the
    # PMD (split_huge_pmd works on a pinned folio), then move_pages_ptes must
    # split the folio, which a pinned folio refuses.  Linux 6.18 answers
    # -EBUSY at once (one thp_split_page_failed); a kernel whose split
    # answers -EAGAIN would retry forever, so the move runs in a child that
    # shares this mm and is killed after THP_PINNED_TIMEOUT_S (EINTR).
    huge = hpage_size()
    src = r.mapping(huge, align=huge)
    dst = r.mapping(huge, align=huge)
    src.madvise(lib().MADV_HUGEPAGE)
    src.fill()
    r.uffd.register(dst)
    r.facts["src_thp"] = read_page_states(os.getpid(), [src.addr])[0].has("thp")
    if not r.facts["src_thp"]:
        raise UserError("src is not a THP (transparent_hugepage disabled, or no huge page "
                        "free): thp_pinned needs one")
    pin = r.stack.enter_context(IoUringPin(src.addr, huge))
    r.facts["pinned"] = {"addr": pin.addr, "len": pin.length, "pid": os.getpid(),
                         "method": "io_uring fixed buffer"}
    length = min(r.pages, huge // PAGE_SIZE - 1) * PAGE_SIZE
    r.planned(dst.addr, src.addr, length)
    call, killed = r.uffd.move_in_vm_child(dst.addr, src.addr, length,
                                           timeout_s=THP_PINNED_TIMEOUT_S)
    r.facts["killed_after_s"] = THP_PINNED_TIMEOUT_S if killed else None
    r.record(call)


# The non-cooperative events, in the order a round raises them.
PENDING_EVENTS = ("REMOVE", "UNMAP", "REMAP", "FORK")


def _mmap_changing(r: Round):
    # Per event, a uffd asking for it alone, with a destination registered
    # on it.  A thread changes a range registered with that uffd --
    # MADV_DONTNEED (REMOVE), munmap (UNMAP), mremap (REMAP), fork (FORK) --
    # which queues the event, raises mmap_changing and blocks the thread
    # until the event is read.  Meanwhile every move on that uffd fails with
    # EAGAIN and moves nothing.  One move under each event.
    src = r.mapping(r.pages * PAGE_SIZE)
    src.fill()
    pending = r.facts.setdefault("pending_events", [])
    for name in PENDING_EVENTS:
        dst = r.mapping(r.pages * PAGE_SIZE)
        changed = r.mapping(PAGE_SIZE)
        target = r.mapping(PAGE_SIZE) if name == "REMAP" else None
        # entered after the mappings, so closed before they are unmapped: an
        # unmap of a range still registered would raise an event nobody reads
        uffd = r.stack.enter_context(Uffd(features=event_feature(name)))
        for m in (dst, changed):
            uffd.register(m)
        with PendingEvent(uffd, name, changed.addr, PAGE_SIZE,
                          target.addr if target is not None else 0) as event:
            pending.append({"event": name.lower(), "tid": event.tid, "addr": changed.addr,
                            "len": PAGE_SIZE})
            if name in ("UNMAP", "REMAP"):
                changed.disown()     # unmapped, or moved onto target, by the thread
            r.planned(dst.addr, src.addr, r.pages * PAGE_SIZE)
            r.record(uffd.move(dst.addr, src.addr, r.pages * PAGE_SIZE))


# How long the monitor holds each fault before filling it: waits long
# enough to tell apart from the tracer's own timing.
FAULT_HOLD_MS = 20


def _fault_wake(r: Round):
    # A userfaultfd monitor at work: threads read missing pages of dst and
    # sleep in the kernel until the monitor fills each with a move.  Every
    # other move asks DONTWAKE and its thread is woken by a UFFDIO_WAKE
    # FAULT_HOLD_MS later: the tracer must tell who each move or wake woke,
    # and how long they had waited.
    src, dst = r.pair(r.pages)
    # the moves are issued by native code, between the faults: each planned
    # before the threads fault (the pages it moves stay as planned till then)
    for i in range(r.pages):
        r.planned(dst.page(i), src.page(i), PAGE_SIZE,
                  lib().UFFDT_MOVE_MODE_DONTWAKE if i % 2 else 0)
    waiters, served = r.uffd.serve_faults(dst.addr, src.addr, r.pages, hold_ms=FAULT_HOLD_MS)
    r.facts["waiters"] = [w.to_json() for w in waiters]
    r.facts["served"] = [{k: v for k, v in s.to_json().items() if k != "move"} for s in served]
    for s in served:
        r.record(s.move)


def _cross_mm(r: Round):
    src, dst = r.pair(r.pages)
    r.planned(dst.addr, src.addr, r.pages * PAGE_SIZE, cross_mm=True)
    r.record(r.uffd.move_in_child(dst.addr, src.addr, r.pages * PAGE_SIZE))


# --- issue 16: request, VMA and huge-page classes ---------------------------------
# (zero_len, bad_mode, crosses_vma, dst_thp, huge_zero_page)

# A mode bit no kernel defines (DONTWAKE is 1<<0, ALLOW_SRC_HOLES 1<<1): far
# from both, so a future UFFDIO_MOVE_MODE_* bit does not make it valid.
BAD_MODE_BIT = 1 << 16


def _vma_end(addr: int) -> int | None:
    """The end of the VMA holding `addr`, read from /proc/self/maps."""
    with open("/proc/self/maps") as f:
        for line in f:
            start, end = (int(x, 16) for x in line.split(" ", 1)[0].split("-"))
            if start <= addr < end:
                return end
    return None


def _zero_len(r: Round):
    src, dst = r.pair(r.pages)
    r.move(dst.addr, src.addr, 0)


def _bad_mode(r: Round):
    src, dst = r.pair(r.pages)
    r.move(dst.addr, src.addr, r.pages * PAGE_SIZE, BAD_MODE_BIT)


def _crosses_vma(r: Round):
    # src: two VMAs of r.pages pages each, one mapping whose second half is
    # MADV_NOHUGEPAGE (a VMA split, protections alike); the move starts in
    # the first and runs into the second.  dst is one registered VMA.
    length = 2 * r.pages * PAGE_SIZE
    src, dst = r.pair(2 * r.pages)
    src.madvise(lib().MADV_NOHUGEPAGE, offset=r.pages * PAGE_SIZE,
                length=r.pages * PAGE_SIZE)
    r.facts["src_vma_end"] = _vma_end(src.addr)
    r.facts["src_end"] = src.addr + length
    r.move(dst.addr, src.addr, length)


def _huge_pair(r: Round, pages: int | None = None, **kw) -> tuple[Mapping, Mapping]:
    """`pages` (default r.pages) 2 MiB pages of MADV_HUGEPAGE src and dst,
    2 MiB-aligned."""
    huge = hpage_size()
    return r.pair((pages or r.pages) * huge // PAGE_SIZE, align=huge,
                  advice=lib().MADV_HUGEPAGE, **kw)


def _heads(m: Mapping, count: int) -> list[int]:
    return [m.addr + i * hpage_size() for i in range(count)]


def _all_have(addrs: list[int], *flags: str) -> bool:
    return all(s.has(f) for s in read_page_states(os.getpid(), addrs) for f in flags)


def _dst_thp(r: Round):
    # dst written before it is registered: each of its PMDs a huge page
    huge = hpage_size()
    src, dst = _huge_pair(r, populate_dst=tuple(range(r.pages * huge // PAGE_SIZE)))
    r.facts["src_thp"] = _all_have(_heads(src, r.pages), "thp")
    r.facts["dst_thp"] = _all_have(_heads(dst, r.pages), "thp")
    for i in range(r.pages):
        r.move(dst.addr + i * huge, src.addr + i * huge, huge)


def _huge_zero_page(r: Round):
    # a read fault in a MADV_HUGEPAGE area maps the huge zero page (while
    # transparent_hugepage/use_zero_page is 1, the default)
    huge = hpage_size()
    src, dst = _huge_pair(r, fill_src=False)
    for head in _heads(src, r.pages):
        ctypes.string_at(head, 1)
    r.facts["src_huge_zero"] = _all_have(_heads(src, r.pages), "thp", "zero_page")
    for i in range(r.pages):
        r.move(dst.addr + i * huge, src.addr + i * huge, huge)
    r.facts["dst_huge_zero_after"] = _all_have(_heads(dst, r.pages), "thp", "zero_page")


def _zero_page(r: Round):
    # a read fault of an anonymous page maps the shared zero page, which
    # 6.9+ moves as such (move_zeropage_pte): the zero-page path (question 6)
    src, dst = r.pair(r.pages, fill_src=False, advice=lib().MADV_NOHUGEPAGE)
    pages = [src.page(i) for i in range(r.pages)]
    for page in pages:
        ctypes.string_at(page, 1)
    r.facts["src_zero_page"] = _all_have(pages, "zero_page")
    r.move_pages_one_by_one(src, dst, r.pages)


def _thp_split(r: Round):
    # a 4 KiB move out of a THP: move_pages splits the PMD, move_pages_ptes
    # then splits the folio and moves one page -- the huge page is lost for
    # good (question 7: the coverage a compacting GC's small moves cost)
    huge = hpage_size()
    src, dst = _huge_pair(r)
    heads = _heads(src, r.pages)
    r.facts["src_thp"] = _all_have(heads, "thp")
    for i, head in enumerate(heads):
        r.move(dst.addr + i * huge, head, PAGE_SIZE)
    r.facts["src_thp_after"] = _all_have(heads, "thp")


# --- issue 16: contended ----------------------------------------------------------

# Movers of one huge page at once: two CPUs or one, some find its folio
# locked by another (measured: 4 threads, 1 THP, a retry in most rounds).
CONTENDED_THREADS = 4


def _contended_check(src: Mapping, dst: Mapping, calls: list[MoveCall]) -> list[str]:
    """Every page moved exactly once, whatever each call answered: at dst
    with its own content (src.fill(): page i starts with i * PAGE_SIZE), and
    gone from src."""
    problems = []
    dsts = read_page_states(os.getpid(), [c.dst for c in calls])
    srcs = read_page_states(os.getpid(), [c.src for c in calls])
    for i, (call, d, s) in enumerate(zip(calls, dsts, srcs)):
        # only a present dst page is read: a missing one of a registered
        # range would raise a userfault nobody serves
        at_dst = d.present and int.from_bytes(ctypes.string_at(call.dst, 8), "little") == \
            call.src - src.addr
        if not at_dst or s.present or s.swapped:
            problems.append(f"page {i} ({call.errno or 'ok'}) is "
                            + ("not at dst" if not at_dst else "still at src too"))
    return problems


def _contended(r: Round):
    # CONTENDED_THREADS native threads move r.pages 4 KiB pages of THPs at
    # once, interleaved.  The first move splits the PMD, then must split the
    # large folio under its lock; the movers that find it locked get an
    # internal -EAGAIN and retry (move_pages_ptes: folio_trylock fails on a
    # large folio) until the split is done.  Linux 6.18 keeps that -EAGAIN
    # after the retried step moved the page, reruns the step and answers
    # -EEXIST (its dst is now populated): the page moved, the call "failed".
    huge = hpage_size()
    src, dst = _huge_pair(r, pages=-(-r.pages * PAGE_SIZE // huge))
    heads = _heads(src, src.length // huge)
    r.facts["src_thp"] = _all_have(heads, "thp")
    if not r.facts["src_thp"]:
        raise UserError("src is not a THP (transparent_hugepage disabled, or no huge page "
                        "free): contended needs one")
    r.facts["threads"] = CONTENDED_THREADS
    calls = r.uffd.move_contended(dst.addr, src.addr, r.pages * PAGE_SIZE, CONTENDED_THREADS)
    # checked before record(): --rewrite would refill what a failed call moved
    r.problems += _contended_check(src, dst, calls)
    r.facts["moved_then_eexist"] = sum(c.errno == "EEXIST" for c in calls)
    for call in calls:
        r.record(call)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("ok", "4 KiB pages moved one call per page", _ok, default_pages=4),
    Scenario("thp", "2 MiB PMD moves of MADV_HUGEPAGE memory (--pages counts 2 MiB pages)",
             _thp),
    Scenario("dst_populated", "destination already populated", _dst_populated,
             expect_errno="EEXIST"),
    Scenario("partial", "multi-page move stopping at a populated dst page half way",
             _partial, default_pages=8, min_pages=2, expect_errno="EAGAIN",
             expect_partial=True),
    Scenario("src_hole", "source never touched, no ALLOW_SRC_HOLES", _src_hole,
             default_pages=4, expect_errno="ENOENT"),
    Scenario("src_hole_allowed", "source never touched, with ALLOW_SRC_HOLES",
             _src_hole_allowed, default_pages=4),
    Scenario("pinned", "second half of src pinned as an io_uring fixed buffer",
             _pinned, default_pages=8, min_pages=2, expect_errno="EAGAIN",
             expect_partial=True),
    Scenario("ksm", "identical MADV_MERGEABLE pages merged by ksmd", _ksm,
             default_pages=4, min_pages=2, expect_errno="EBUSY", needs_root=True),
    Scenario("fork_shared", "pages COW-shared with a forked child", _fork_shared,
             default_pages=2, expect_errno="EBUSY"),
    Scenario("misaligned", "dst not page aligned", _misaligned, expect_errno="EINVAL"),
    Scenario("dst_not_registered", "dst not registered with the uffd",
             _dst_not_registered, expect_errno="EINVAL"),
    Scenario("vma_shared", "src is MAP_SHARED", _vma_shared, expect_errno="EINVAL"),
    Scenario("src_readonly", "src is PROT_READ", _src_readonly, expect_errno="EINVAL"),
    Scenario("cross_mm", "a forked child moves on the parent's uffd", _cross_mm,
             expect_errno="EINVAL"),
    # swap, unsplittable THP, mmap_changing (issue 16)
    Scenario("swapped", "exclusive swapped-out src pages (zram swap) move as swap entries",
             _swapped, default_pages=2, needs_root=True),
    Scenario("swap_shared", "swapped-out src pages whose swap entries fork() shared",
             _swap_shared, default_pages=2, expect_errno="EBUSY", needs_root=True),
    Scenario("thp_pinned", "part of an io_uring-pinned THP: the folio cannot be split "
             "(the mover is killed if the kernel retries forever)", _thp_pinned,
             default_pages=4, expect_errno="EBUSY", alt_errno="EINTR"),
    Scenario("mmap_changing", "a move under each non-cooperative event left unread "
             "(REMOVE: MADV_DONTNEED, UNMAP: munmap, REMAP: mremap, FORK: fork)",
             _mmap_changing, default_pages=2, expect_errno="EAGAIN"),
    # issue 16: request, VMA and huge-page classes
    Scenario("fault_wake", "threads fault on missing dst pages, each filled by a move "
             "(every other one DONTWAKE, then UFFDIO_WAKE)", _fault_wake, default_pages=4,
             min_pages=2),
    Scenario("zero_len", "a move of len 0", _zero_len, expect_errno="EINVAL"),
    Scenario("bad_mode", "mode has a bit that is no UFFDIO_MOVE_MODE_*", _bad_mode,
             expect_errno="EINVAL"),
    Scenario("crosses_vma", "src range runs past its VMA's end into the next VMA",
             _crosses_vma, default_pages=2, expect_errno="EINVAL"),
    Scenario("dst_thp", "2 MiB move onto a dst PMD that is already a huge page "
             "(--pages counts 2 MiB pages)", _dst_thp, expect_errno="EEXIST"),
    Scenario("huge_zero_page", "2 MiB move of a read-faulted MADV_HUGEPAGE area (the huge "
             "zero page) (--pages counts 2 MiB pages)", _huge_zero_page),
    Scenario("zero_page", "4 KiB moves of read-faulted pages (the zero page)", _zero_page,
             default_pages=4),
    Scenario("thp_split", "the first 4 KiB of a THP moved: its folio is split (--pages "
             "counts 2 MiB pages)", _thp_split),
    # EEXIST: Linux 6.18 answers it for a move that moved its page after an
    # internal retry (6.12 and 7.3 answer success)
    Scenario("contended", f"{CONTENDED_THREADS} threads moving 4 KiB pages of one THP at "
             "once, interleaved: the kernel's internal retries on the locked huge folio "
             "(--pages counts 4 KiB pages, from as many THPs as they fill)",
             _contended, default_pages=64, min_pages=2, alt_errno="EEXIST"),
]}

# What `mixed` cycles through: mostly healthy moves, every failure class now
# and then, but those of OUTSIDE_MIXED.
MIXED_CYCLE = ["ok", "ok", "ok", "thp", "partial", "ok", "dst_populated", "src_hole",
               "ok", "src_hole_allowed", "pinned", "ok", "fork_shared", "misaligned",
               "ok", "dst_not_registered", "vma_shared", "src_readonly", "cross_mm",
               "ok", "mmap_changing",
               # issue 16: request, VMA and huge-page classes, the move paths
               "ok", "zero_len", "bad_mode", "crosses_vma", "dst_thp", "huge_zero_page",
               "zero_page", "thp_split", "contended"]
# Scenarios `mixed` leaves out, and why.
OUTSIDE_MIXED = {
    "ksm": "changes machine-wide ksmd settings",
    "swapped": "adds a swap device to the machine (root)",
    "swap_shared": "adds a swap device to the machine (root)",
    "thp_pinned": "a kernel that retries the split stalls it until its mover is killed",
    "fault_wake": f"paced by its own faults ({FAULT_HOLD_MS} ms a page), not by --rate",
}


def unexpected(scenario: Scenario, call: MoveCall) -> str | None:
    """Why `call` is not what `scenario` promises, or None if it is."""
    if call.errno != scenario.expect_errno and (scenario.alt_errno is None
                                                or call.errno != scenario.alt_errno):
        expected = " or ".join(e for e in (scenario.expect_errno or "none", scenario.alt_errno)
                               if e)
        return f"errno {call.errno or 'none'} (expected {expected})"
    if scenario.expect_errno is None and call.errno is None and call.move != call.len:
        return f"moved {call.move} of {call.len} bytes"
    if scenario.expect_partial and not 0 < call.move < call.len:
        return f"move={call.move}, expected a partial count"
    return None
