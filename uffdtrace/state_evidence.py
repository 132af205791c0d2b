"""Diagnosis from the kernel's own page state at the end of a failed move
(UT_F_STATE_AT_EXIT: bpf/ut_pagestate.h read it before the thread returned
to user space, so nothing the process did after the call can show).

Evidence level `observed`.  The checks follow move_pages_pte(s)'s order for
the page where the move stopped (src + bytes moved) and its destination,
and keep only a cause the errno allows (the failing step's errno where the
kernel tier saw it): a state that points elsewhere -- another thread raced
the move -- gives None, and the caller falls back to the next engine.
"""
from __future__ import annotations

from typing import Callable

from .culprits import KsmCulprit
from .diagnosis import Diagnosis
from .events import MoveEvent
from .taxonomy import (ERRNO_CAUSES, INFERRED, OBSERVED, PARTIAL_STOPS, CauseCode as C,
                       allowed_causes)
from .walkstate import WalkedPage

# Where the walk stopped (UT_PSW_* names): nothing mapped ...
HOLE = frozenset({"PGD_NONE", "P4D_NONE", "PUD_NONE", "PMD_NONE", "PTE_NONE"})
# ... or an entry a move refuses to overwrite (the kernel: a dst PTE that is
# not none, uffd-wp markers and swap entries included, or a huge dst PMD)
POPULATED = frozenset({"PTE_PRESENT", "PTE_SWAP", "PTE_MIGRATION", "PTE_OTHER", "PMD_HUGE",
                       "PMD_MIGRATION", "PMD_OTHER"})
MAPPED = frozenset({"PTE_PRESENT", "PMD_HUGE"})
# Causes the state shows only as an outcome: seen at exit, but who made it
# so (this move or an earlier one) is a conclusion, not an observation.
INFERRED_FROM_STATE = frozenset({C.MOVED_THEN_EEXIST})
PMD_BYTES = 2 << 20

Finding = tuple[C, object, list[str]]
PinnerOf = Callable[[MoveEvent, int], object]       # (move, addr) -> PinCulprit or None
KsmLookup = Callable[[int], dict | None]            # pfn -> {"merged_ts_ns", "ksmd_pid"}


def describe(name: str, page: WalkedPage) -> str:
    """One line for the notes: where the walk stopped and the folio's facts."""
    text = f"{name} {page.addr:#x} at exit: {page.where_name.lower()}"
    if page.has("FOLIO"):
        flags = sorted(f.lower() for f in page.flag_names - {"FOLIO"})
        text += (f", folio order {page.order} [{' '.join(flags)}], refcount {page.refcount}, "
                 f"mapcount {page.mapcount}" + (f", pincount {page.pincount}"
                                                if page.has("LARGE") else ""))
    elif page.where_name == "PTE_SWAP":
        text += ", exclusive" if page.has("SWP_EXCLUSIVE") else ", not exclusive"
    return text


def _mapped_src(move: MoveEvent, src: WalkedPage, pinner_of: PinnerOf,
                ksm_lookup: KsmLookup | None) -> Finding | None:
    if src.has("HUGE_ZERO_PAGE"):
        return C.ZERO_PAGE, None, ["the huge zero page (a read-faulted huge page area)"]
    if src.has("ZERO_PAGE"):
        return C.ZERO_PAGE, None, []
    if src.has("KSM"):
        merge = ksm_lookup(src.pfn) if ksm_lookup is not None else None
        if merge:
            return C.PAGE_KSM, KsmCulprit(merge["merged_ts_ns"], merge["ksmd_pid"]), []
        return C.PAGE_KSM, KsmCulprit(), ["merged before tracing started (no merge seen)"]
    if not src.has("ANON_EXCLUSIVE"):
        return C.PAGE_SHARED, None, [f"not PageAnonExclusive: mapped {src.mapcount} times "
                                     "(shared copy-on-write after fork)"]
    large_split = src.has("LARGE") and (src.where_name == "PTE_PRESENT"
                                        or move.len % PMD_BYTES or move.src % PMD_BYTES)
    if large_split:
        pinned = src.has("MAYBE_DMA_PINNED")
        return C.THP_SPLIT_FAILED, pinner_of(move, src.addr) if pinned else None, [
            "a large folio the move had to split" + (", and it is pinned" if pinned else "")]
    if src.has("MAYBE_DMA_PINNED"):
        culprit = pinner_of(move, src.addr)
        return C.PAGE_PINNED, culprit, [] if culprit else [
            "folio_maybe_dma_pinned(): pinned before tracing started, or by a pin not seen"]
    return None


def stopped_by(move: MoveEvent, pinner_of: PinnerOf,
               ksm_lookup: KsmLookup | None = None) -> Finding | None:
    """What the state at exit says stopped the move, in the kernel's order."""
    src, dst = move.src_state, move.dst_state
    if dst is not None and dst.where_name == "PMD_HUGE":
        return C.DST_POPULATED, None, [
            "the dst PMD is a huge page: move_pages() refuses it before looking at the src "
            "(MADV_DONTNEED the whole 2 MiB)"]
    if dst is not None and dst.where_name == "PTE_PRESENT" and src is not None and \
            src.where_name in HOLE:
        # the page is at dst and src is empty: moved, then refused (Linux
        # 6.18 reruns a step that moved its page after an internal retry) --
        # or moved by an earlier call; the state cannot tell which
        return C.MOVED_THEN_EEXIST, None, [
            "the page is at dst and src is empty: this move (or an earlier one) moved it"]
    if dst is not None and dst.where_name in POPULATED:
        return C.DST_POPULATED, None, []
    if src is None:
        return None
    if src.where_name in HOLE:
        return C.SRC_HOLE, None, []
    if src.where_name == "PTE_SWAP" and not src.has("SWP_EXCLUSIVE"):
        return C.SWAP_NOT_EXCLUSIVE, None, []
    if src.where_name in MAPPED:
        return _mapped_src(move, src, pinner_of, ksm_lookup)
    return None


def diagnose_at_exit(move: MoveEvent, pinner_of: PinnerOf, ksm_lookup: KsmLookup | None = None,
                     step_errno: str | None = None) -> Diagnosis | None:
    """An observed diagnosis of a failed move from its state at exit, or
    None (not read, or it shows nothing its errno allows)."""
    if not move.state_at_exit:
        return None
    found = stopped_by(move, pinner_of, ksm_lookup)
    if found is None:
        return None
    code, culprit, notes = found
    if step_errno is not None:
        allowed = ERRNO_CAUSES.get(step_errno, frozenset())
    else:
        allowed = PARTIAL_STOPS if move.partial else allowed_causes(move.errno, False)
    if code not in allowed:
        return None
    notes = notes + [describe(name, page) for name, page in
                     (("src", move.src_state), ("dst", move.dst_state)) if page is not None]
    fail_addr = move.src_state.addr if move.src_state is not None else None
    evidence = INFERRED if code in INFERRED_FROM_STATE else OBSERVED
    if move.partial:
        return Diagnosis(C.PARTIAL, evidence, fail_addr, code, culprit, notes)
    return Diagnosis(code, evidence, fail_addr, None, culprit, notes)
