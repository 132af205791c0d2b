"""Diagnosis from the moving userfaultfd's own state at the end of a move
that failed with EAGAIN having moved nothing (UT_F_UFFD_AT_EXIT:
bpf/ut_uffdstate.h read it before the thread returned to user space).

That errno is the one userfaultfd_move() gives while ctx->mmap_changing is
raised: a non-cooperative event (fork, remap, remove, unmap) is queued and
the monitor has not read it.  Seeing the counter up, and the event with
the thread that raised it, is evidence `observed`.  A counter back at 0 by
exit says nothing either way (the monitor may have read the event between
the kernel's check and our read; 6.15+ also returns this EAGAIN when a
per-VMA lock could not be taken), so it gives None and the next engine
answers.
"""
from __future__ import annotations

from .diagnosis import Diagnosis
from .events import MoveEvent
from .taxonomy import OBSERVED, CauseCode as C


def pending_notes(move: MoveEvent) -> list[str]:
    """What the uffd held at exit, as notes (the first pending event is the culprit)."""
    us = move.uffd_state
    notes = [f"mmap_changing = {us.mmap_changing} at exit: {us.queued}"
             f"{'+' if us.more else ''} non-cooperative event(s) unread"]
    notes += [f"pending: {p.describe()}" for p in us.pending[1:]]
    if us.where == "raced":
        notes.append("the event queue changed while it was read: events past it not shown")
    return notes


def diagnose_pending_events(move: MoveEvent) -> Diagnosis | None:
    """mmap_changing at evidence observed, with the event that raised it, or None."""
    us = move.uffd_state
    if us is None or not us.read or us.mmap_changing <= 0:
        return None
    culprit = us.pending[0] if us.pending else None
    notes = pending_notes(move)
    if culprit is None:
        notes.append("the event queue was empty by the time it was walked")
    return Diagnosis(C.MMAP_CHANGING, OBSERVED, None, None, culprit, notes)
