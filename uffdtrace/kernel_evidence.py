"""Diagnosis from what the kernel-tier hooks saw inside the move path.

Everything here is evidence level `observed`: whether the move got past the
ioctl's own checks (and the uffd's owner, for cross-mm moves), move_pages()'s
own result, the failing step's errno and address, internal retries, failed
folio splits, and the pinner the GUP hooks recorded for the folio where the
move stopped.  The page tables and folio there are the state at exit
(state_evidence.py), read for both tiers.  When the hooks did not see
enough (a function inlined on this kernel, a path without a hook), this
returns None and the caller goes on to the next engine.
"""
from __future__ import annotations

import errno as E

from .culprits import GUP_HOOK, PinCulprit
from .diagnosis import Diagnosis
from .events import MoveEvent, pin_method_name
from .native import errno_name, lib
from .taxonomy import ERRNO_CAUSES, OBSERVED, PARTIAL_STOPS, CauseCode as C, allowed_causes


class Seen:
    """The kernel-tier fields of one move, read as plain facts."""

    def __init__(self, move: MoveEvent):
        L = lib()
        k = move.kflags
        self.move = move
        # got past the ioctl's own checks into move_pages() (itself inlined
        # on 7.x: then its steps are the sign)
        self.entered = bool(k & L.UT_K_MOVE_PAGES) or move.steps > 0
        self.returned = bool(k & L.UT_K_MOVE_PAGES_RETURNED)
        self.cross_mm = bool(k & L.UT_K_CROSS_MM)
        self.step_failed = bool(k & L.UT_K_STEP_FAILED)

    @property
    def uncounted_steps(self) -> int:
        """Steps that succeeded in a move whose result counts no byte moved.
        move_pages() adds every successful step to what it returns, except
        after an internal -EAGAIN on Linux 6.18: it keeps that error, runs
        the step that just succeeded again, and returns the error of the
        rerun (its dst is now populated: -EEXIST)."""
        m = self.move
        if m.partial or m.move >= 0 or not m.steps:
            return 0
        return m.steps - m.retries - (1 if self.step_failed else 0)

    @property
    def errno_at_fail(self) -> int | None:
        """The real errno where the move stopped: the failing step's, or
        move_pages()'s own, which is the syscall's when nothing was moved (a
        partial move reports EAGAIN and hides it)."""
        if self.step_failed:
            return -self.move.step_err
        if self.returned and self.move.kernel_ret < 0:
            return -self.move.kernel_ret
        if not self.move.partial:
            return -self.move.ret
        return None


def gup_pinner(move: MoveEvent) -> PinCulprit | None:
    """The pinner the GUP hooks recorded for the folio where the move
    stopped (kernel tier), or None."""
    if not move.folio_flags & lib().UT_FOLIO_PINNED_SEEN:
        return None
    return PinCulprit(pid=move.pinner_pid, comm=move.pinner_comm,
                      method=pin_method_name(move.pinner_method & lib().UT_PIN_METHOD_MASK),
                      longterm=bool(move.pinner_method & lib().UT_PIN_LONGTERM),
                      source=GUP_HOOK, ts_ns=move.pinner_ts_ns)


def _stopped_by(seen: Seen, err: int | None):
    """What the step errno alone says stopped the move: (cause, culprit,
    notes) or None.  The page itself is the state at exit's to judge."""
    m = seen.move
    if err == E.EEXIST and seen.uncounted_steps > 0:
        return C.MOVED_THEN_EEXIST, None, [
            f"{seen.uncounted_steps} step(s) moved pages that the result does not count, "
            "then a step returned -EEXIST at the destination they filled"]
    if err == E.EEXIST:
        return C.DST_POPULATED, None, []     # the step's EEXIST is noted by the caller
    if err == E.ENOENT and seen.step_failed:
        return C.SRC_HOLE, None, ["a move step found no source page"]
    if err == E.EBUSY and m.split_err:
        return C.THP_SPLIT_FAILED, gup_pinner(m), [f"a folio split returned {m.split_err}"]
    return None


def _blocked_by(seen: Seen, err: int | None):
    """_stopped_by(), kept only where the errno the failing step returned
    (or, when unseen, the syscall's) allows it: else None, and the caller
    falls back to the next engine -- which obeys the same rule."""
    found = _stopped_by(seen, err)
    if found is None:
        return None
    if err is not None:
        allowed = ERRNO_CAUSES.get(errno_name(err), frozenset())
    else:
        allowed = PARTIAL_STOPS if seen.move.partial else \
            allowed_causes(seen.move.errno, False)
    return found if found[0] in allowed else None


def step_errno(move: MoveEvent) -> str | None:
    """The errno where a kernel-tier move stopped, as the kernel's step (or
    move_pages()) returned it, or None when the hooks did not see it."""
    err = Seen(move).errno_at_fail
    return errno_name(err) if err is not None else None


def diagnose_observed(move: MoveEvent) -> Diagnosis | None:
    """A Diagnosis at evidence level observed, or None if the hooks did not
    see enough.  `move` failed and was traced in the kernel tier."""
    seen = Seen(move)
    err = -move.ret
    if not seen.entered:
        if seen.cross_mm:
            return Diagnosis(C.INVALID_CROSS_MM, OBSERVED, None, notes=[
                "the userfaultfd belongs to another process's mm (read in userfaultfd_ioctl)"])
        # userfaultfd_move()'s own mmap_changing check: it writes -EAGAIN to
        # `move` since the 2025 fix, and left it untouched before (6.12)
        if err == E.EAGAIN and move.move in (0, -E.EAGAIN):
            return Diagnosis(C.MMAP_CHANGING, OBSERVED, None, notes=[
                "rejected with -EAGAIN before move_pages(): an mm change was pending"])
        return None
    stop_errno = seen.errno_at_fail
    found = _blocked_by(seen, stop_errno)
    if found is None:
        return None
    code, culprit, notes = found
    fail_addr = move.fail_addr or move.src + max(move.move, 0)
    if stop_errno is not None:
        notes.append(f"{'step' if seen.step_failed else 'move_pages()'} returned "
                     f"-{errno_name(stop_errno)}")
    if move.retries:
        notes.append(f"{move.retries} internal -EAGAIN retries")
    if move.partial:
        return Diagnosis(C.PARTIAL, OBSERVED, fail_addr, code, culprit, notes)
    return Diagnosis(code, OBSERVED, fail_addr, None, culprit, notes)
