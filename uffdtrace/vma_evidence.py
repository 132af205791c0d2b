"""Diagnosis from the VMAs as the kernel had them when a failed move
returned (UT_F_VMAS_AT_EXIT: bpf/ut_vmastate.h looked them up in the
mm's VMA tree before the thread went back to user space, so an unmap right
after the call cannot hide them).

Evidence level `observed`.  EINVAL goes through the same rules as VMAs
read from /proc (vma_rules.py); ENOENT with no VMA at an address is
`no_vma`.  When the VMAs were not read, or the walk did not find both,
the caller falls back to /proc and says why (fallback_note()).
"""
from __future__ import annotations

import errno as E

from .diagnosis import Diagnosis
from .events import MoveEvent
from .taxonomy import ERRNO, OBSERVED, CauseCode as C
from .vma_rules import invalid_from_vmas
from .walkvma import WalkedVma


def _sides(move: MoveEvent) -> tuple[tuple[str, WalkedVma], ...]:
    return tuple((name, vma) for name, vma in (("src", move.src_vma_state),
                                                ("dst", move.dst_vma_state)) if vma is not None)


def both_found(move: MoveEvent) -> bool:
    """Were both VMAs read at exit, and found?"""
    sides = _sides(move)
    return move.vmas_at_exit and len(sides) == 2 and all(v.found for _, v in sides)


def _describe(move: MoveEvent) -> list[str]:
    return [vma.describe(name) for name, vma in _sides(move)]


def fallback_note(move: MoveEvent) -> str:
    """Why /proc is read instead, for the diagnosis's notes."""
    if not move.vmas_at_exit:
        return "VMAs not read at exit (VMA reader off): read from /proc/PID/smaps after the call"
    failed = [f"{name} {vma.where_name.lower()}" for name, vma in _sides(move) if not vma.found]
    return (f"VMA walk at exit did not find both ({', '.join(failed) or 'not read'}): "
            "read from /proc/PID/smaps after the call")


def invalid_at_exit(move: MoveEvent) -> Diagnosis | None:
    """An EINVAL move (arguments valid, past the ioctl's own checks) from
    its VMAs at exit, or None when they were not both found."""
    if move.ret != -E.EINVAL or not both_found(move):
        return None
    code, notes = invalid_from_vmas(move, move.src_vma_state, move.dst_vma_state)
    if code == C.INVALID_UNKNOWN:
        # nothing the VMAs show: vm_page_prot (not read) or a check
        # uffdtrace does not know; the errno is all there is
        return Diagnosis(code, ERRNO, None, notes=notes + [
            "vm_page_prot is not read: a protection difference vm_flags do not show?"]
            + _describe(move))
    return Diagnosis(code, OBSERVED, None, notes=notes + _describe(move))


def no_vma_at_exit(move: MoveEvent) -> Diagnosis | None:
    """An ENOENT move that found no VMA at src or dst (uffd_move_lock()),
    or None."""
    if move.ret != -E.ENOENT or move.partial or not move.vmas_at_exit:
        return None
    missing = [(name, vma) for name, vma in _sides(move) if vma.absent]
    if not missing:
        return None
    name, vma = missing[0]
    return Diagnosis(C.NO_VMA, OBSERVED, vma.addr, notes=[
        f"no VMA at {' nor '.join(n for n, _ in missing)} when the call returned"]
        + _describe(move))
