"""One diagnosis per move: cause (taxonomy.py), evidence level, failing
address, culprit, explanation and remedy.

Rules follow the kernel's order of checks (mm/userfaultfd.c); every
conclusion says how it is known (observed / inferred / errno).
"""
from __future__ import annotations

import errno as E
from typing import Callable

from .culprits import GUP_HOOK, PIN_REGISTRATION, KsmCulprit, PinCulprit
from .diagnosis import Diagnosis
from .enrich import Enrichment
from .events import MoveEvent, PinEvent, pin_method_name
from .kernel_evidence import diagnose_observed, gup_pinner, step_errno
from .native import PAGE_SIZE, lib
from .state_evidence import Finding, diagnose_at_exit
from .taxonomy import (ERRNO, INFERRED, OBSERVED, PARTIAL_STOPS, CauseCode as C,
                       allowed_causes, contradiction, errno_default)
from .uffd_evidence import diagnose_pending_events
from .vma_evidence import fallback_note, invalid_at_exit, no_vma_at_exit
from .vma_rules import invalid_from_vmas

PMD_SIZE = 2 << 20


class PinTable:
    """Long-term pinned ranges seen being registered, per process."""

    def __init__(self):
        self._pins: dict[int, list[PinEvent]] = {}

    def add(self, pin: PinEvent):
        if pin.released and pin.method == lib().UT_PIN_IO_URING_REGISTER:
            # IORING_UNREGISTER_BUFFERS: every buffer of that ring
            self._pins[pin.pid] = [p for p in self._pins.get(pin.pid, []) if p.fd != pin.fd]
        elif pin.released:
            # a GUP hook saw a page of a long-term pin released: its range
            self._pins[pin.pid] = [p for p in self._pins.get(pin.pid, [])
                                   if not p.addr <= pin.addr < p.addr + p.len]
        else:
            self._pins.setdefault(pin.pid, []).append(pin)

    def pids(self) -> set[int]:
        return set(self._pins)

    def forget(self, pids: set[int]):
        """Processes that exited: their pins went with them."""
        for pid in pids:
            self._pins.pop(pid, None)

    def covering(self, pid: int, addr: int) -> PinEvent | None:
        for pin in reversed(self._pins.get(pid, [])):
            if pin.addr <= addr < pin.addr + pin.len:
                return pin
        return None


KsmLookup = Callable[[int], dict | None]   # pfn -> {"merged_ts_ns", "ksmd_pid"} or None


def _pin_note(pin: PinEvent) -> str:
    return f"src page lies in a range pinned by pid {pin.pid}: {pin_method_name(pin.method)}"


def pin_culprit(pin: PinEvent) -> PinCulprit:
    """The culprit a pin event names: a registration (io_uring fixed buffers,
    always long-term) or a long-term pin a GUP hook saw."""
    L = lib()
    registered = pin.method == L.UT_PIN_IO_URING_REGISTER
    return PinCulprit(pid=pin.pid, comm=pin.comm,
                      method=pin_method_name(pin.method & L.UT_PIN_METHOD_MASK),
                      longterm=registered or bool(pin.method & L.UT_PIN_LONGTERM),
                      source=PIN_REGISTRATION if registered else GUP_HOOK,
                      ts_ns=pin.ts_ns, tid=pin.tid, range=(pin.addr, pin.len),
                      stack=pin.stack)


def _blocking_page(move: MoveEvent, en: Enrichment, pins: PinTable,
                   ksm_lookup: KsmLookup | None) -> Finding | None:
    """What the page state read after the call says stopped the move at
    en.src_addr, checked in the kernel's order (tracepoint tier).  None when
    the state shows nothing that would stop a move (it changed since)."""
    dst, src = en.dst_page, en.src_page
    if dst is not None and dst.present and src is not None and not src.present and \
            not src.swapped:
        # moved, then refused (Linux 6.18 reruns a step that moved its page
        # after an internal retry) -- or moved by an earlier call
        return C.MOVED_THEN_EEXIST, None, [
            f"dst page {en.dst_addr:#x} is populated and src page {en.src_addr:#x} is empty: "
            "this move (or an earlier one) moved it"]
    if dst is not None and (dst.present or dst.swapped):
        return C.DST_POPULATED, None, [f"dst page {en.dst_addr:#x} is populated"
                                       + (" (a huge page)" if dst.has("thp") else "")]
    if src is not None and not src.present and not src.swapped:
        notes = ["src page absent although ALLOW_SRC_HOLES was set"] \
            if move.mode & lib().UFFDT_MOVE_MODE_ALLOW_SRC_HOLES else []
        return C.SRC_HOLE, None, notes + [f"src page {en.src_addr:#x} is not present"]
    if src is not None and src.has("ksm"):
        merge = ksm_lookup(src.pfn) if (ksm_lookup and src.pfn is not None) else None
        culprit = KsmCulprit(merge["merged_ts_ns"], merge["ksmd_pid"]) if merge \
            else KsmCulprit()
        notes = [] if merge else ["merged before tracing started (no ksm tracepoint seen)"]
        return C.PAGE_KSM, culprit, notes + ["kpageflags: KSM"]
    pin = pins.covering(move.pid, en.src_addr)
    if src is not None and src.present and src.exclusive and src.has("thp") and \
            (move.len % PMD_SIZE or move.src % PMD_SIZE):
        # the kernel splits before it looks at pins: a pinned huge page a
        # move covers only in part fails the split
        return C.THP_SPLIT_FAILED, pin_culprit(pin) if pin else None, [
            "kpageflags: THP, and the move is not whole PMDs"] + (
            [_pin_note(pin)] if pin else [])
    if pin is not None:
        return C.PAGE_PINNED, pin_culprit(pin), [_pin_note(pin)]
    if src is not None and src.has("zero_page"):
        return C.ZERO_PAGE, None, ["kpageflags: zero page"]
    if src is not None and src.swapped and not src.exclusive:
        return C.SWAP_NOT_EXCLUSIVE, None, ["pagemap: swapped, not exclusive"]
    if src is not None and src.present and not src.exclusive:
        return C.PAGE_SHARED, None, ["pagemap: not exclusively mapped (shared after fork?)"]
    return None


def _pinner_of(move: MoveEvent, addr: int, pins: PinTable) -> PinCulprit | None:
    """Who pinned the page at `addr`: the GUP hooks' pinner (kernel tier), or
    a pin registration seen covering it."""
    seen = gup_pinner(move)
    if seen is not None:
        return seen
    pin = pins.covering(move.pid, addr)
    return pin_culprit(pin) if pin is not None else None


def _busy_unknown_notes(en: Enrichment) -> list[str]:
    if en.src_page is None:
        return ["page state unknown"]
    return ["src page is present and exclusive, not KSM, no pin registration seen "
            "(a pin taken before tracing started, or DMA, looks exactly like this)"]


def errno_level(move: MoveEvent, fail_addr: int | None, notes: list[str]) -> Diagnosis:
    """The diagnosis from the errno (and `move`) alone: evidence `errno`."""
    if move.partial:
        return Diagnosis(C.PARTIAL, ERRNO, fail_addr, None, None, notes)
    code = errno_default(move.errno)
    if code == C.MMAP_CHANGING:
        notes = notes + ["nothing moved; a transient VMA-lock failure (6.15+) returns "
                         "the same EAGAIN"]
    return Diagnosis(code, ERRNO, fail_addr if code in PARTIAL_STOPS else None, notes=notes)


def _from_page_state(move: MoveEvent, en: Enrichment, pins: PinTable,
                     ksm_lookup: KsmLookup | None, fail_addr: int) -> Diagnosis:
    """An inferred diagnosis from the page state -- only where the errno
    allows what the state shows; otherwise the errno-level cause, with what
    the state showed in the notes."""
    found = _blocking_page(move, en, pins, ksm_lookup)
    allowed = PARTIAL_STOPS if move.partial else allowed_causes(move.errno, False)
    if found is None and C.BUSY_UNKNOWN in allowed:
        found = (C.BUSY_UNKNOWN, None, _busy_unknown_notes(en))
    if found is None:
        return errno_level(move, fail_addr, [
            "the pages read after the call show nothing that stops a move: "
            "they changed since"])
    code, culprit, notes = found
    if code not in allowed:
        return errno_level(move, fail_addr, notes + [
            f"the page state read after the call points to {code}, which "
            f"{move.errno} rules out: the pages changed since the call"])
    if move.partial:
        return Diagnosis(C.PARTIAL, INFERRED, fail_addr, code, culprit, notes)
    return Diagnosis(code, INFERRED, fail_addr, None, culprit, notes)


def invalid_from_request(move) -> str | None:
    """EINVAL checks decided by the request alone (validate_range, mode).
    `move`: anything with dst, src, len and mode (a MoveEvent, a planned
    move of `uffdtrace check`)."""
    if move.len == 0:
        return C.INVALID_ZERO_LEN
    if (move.dst | move.src | move.len) % PAGE_SIZE:
        return C.INVALID_MISALIGNED
    if move.mode & ~(lib().UFFDT_MOVE_MODE_DONTWAKE | lib().UFFDT_MOVE_MODE_ALLOW_SRC_HOLES):
        return C.INVALID_BAD_MODE
    return None


def _why_no_evidence(en: Enrichment | None) -> list[str]:
    if en is None:
        return ["not inspected"]
    if en.error:
        return [en.error]
    missing = [n for n, v in (("src", en.src_vma), ("dst", en.dst_vma)) if v is None]
    if missing:
        return [f"{' and '.join(missing)} VMA gone when inspected (unmapped after the call?)"]
    return []


def diagnose(move: MoveEvent, en: Enrichment | None, pins: PinTable,
             ksm_lookup: KsmLookup | None = None) -> Diagnosis:
    """The diagnosis of one move, never naming a cause its errno rules out
    (taxonomy.contradiction is checked last, whichever engine answered)."""
    if not move.failed:
        return Diagnosis(C.OK, OBSERVED)
    d = _diagnose_failure(move, en, pins, ksm_lookup)
    why = contradiction(d.cause, d.underlying, move.errno, move.partial,
                        step_errno(move) if move.kernel_tier else None)
    if why is None:
        return d
    return errno_level(move, d.fail_addr, d.notes + [f"evidence pointed to "
                       f"{d.effective_cause} ({d.evidence}), but {why}"])


def _diagnose_failure(move: MoveEvent, en: Enrichment | None, pins: PinTable,
                      ksm_lookup: KsmLookup | None) -> Diagnosis:
    # the uffd's unread events at exit: mmap_changing, with who raised it
    # (the kernel tier sees the same rejection without the who)
    pending = diagnose_pending_events(move)
    if pending is not None:
        return pending
    if move.kernel_tier:
        observed = diagnose_observed(move)
        if observed is not None:
            return observed
    # no VMA at exit: uffd_move_lock()'s ENOENT, before any page is looked
    # at (the page walk there shows a hole too)
    no_vma = no_vma_at_exit(move)
    if no_vma is not None:
        return no_vma
    at_exit = diagnose_at_exit(move, lambda m, addr: _pinner_of(m, addr, pins), ksm_lookup,
                               step_errno(move) if move.kernel_tier else None)
    if at_exit is not None:
        return at_exit
    err = -move.ret
    fail_addr = move.src + max(move.move, 0) if move.move_written else move.src
    gone = _why_no_evidence(en)
    # Page state read after the call only counts while both VMAs still exist:
    # an unmapped page reads as "not present" and would look like a hole.
    have_pages = not gone

    # An observed io_uring registration covering the failing page needs no
    # page state: it stands even when the memory is already gone.
    pin = pins.covering(move.pid, fail_addr) if err in (E.EAGAIN, E.EBUSY) else None
    if pin is not None and not have_pages:
        notes = gone + [_pin_note(pin)]
        if move.partial:
            return Diagnosis(C.PARTIAL, INFERRED, fail_addr, C.PAGE_PINNED, pin_culprit(pin),
                             notes)
        if err == E.EBUSY:
            return Diagnosis(C.PAGE_PINNED, INFERRED, fail_addr, None, pin_culprit(pin), notes)
    if move.partial or err in (E.EBUSY, E.EEXIST, E.ENOENT):
        # One VMA missing while the other is still there: the request named
        # an unmapped range.  Both gone says nothing: the process unmapped
        # its memory after the call (then the errno decides, below).
        if err == E.ENOENT and en is not None and en.error is None and \
                (en.src_vma is None) != (en.dst_vma is None):
            return Diagnosis(C.NO_VMA, INFERRED, fail_addr, notes=[
                "no VMA at " + ("src" if en.src_vma is None else "dst")
                + " when inspected (or unmapped right after the call)"])
        if not have_pages:
            return errno_level(move, fail_addr, gone)
        return _from_page_state(move, en, pins, ksm_lookup, fail_addr)
    if err == E.EINVAL:
        code = invalid_from_request(move)
        if code:
            return Diagnosis(code, OBSERVED, move.src, notes=["from the request arguments"])
        if move.move_written is None:
            # Rejected before move_pages(): with valid arguments only the
            # caller-is-not-the-owner check is left (or an address beyond the
            # task size, which the kernel checks in the same place).
            return Diagnosis(C.INVALID_CROSS_MM, INFERRED, None,
                             notes=["the kernel never wrote `move`: rejected before "
                                    "move_pages() although the arguments are valid"])
        observed = invalid_at_exit(move)
        if observed is not None:
            return observed
        fallback = [fallback_note(move)]
        if not have_pages:
            return errno_level(move, None, fallback + gone)
        code, notes = invalid_from_vmas(move, en.src_vma, en.dst_vma)
        return Diagnosis(code, INFERRED, None, notes=fallback + notes)
    return errno_level(move, None, ["move = -EAGAIN, nothing moved"]
                       if err == E.EAGAIN else [])
