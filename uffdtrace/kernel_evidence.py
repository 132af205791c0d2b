"""Diagnosis from what the kernel-tier hooks saw inside the move path.

Everything here is evidence level `observed`: move_pages()'s own result, the
failing step's errno and address, the folio and page-table entries the
kernel looked at where the move stopped, the VMA flags as the kernel read
them, and the pinner recorded by the GUP hooks.  When the hooks did not see
enough (a function inlined on this kernel, a path without a hook), this
returns None and the caller falls back to userspace inference, labelled as
such.
"""
from __future__ import annotations

import errno as E

from .culprits import GUP_HOOK, KsmCulprit, PinCulprit
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
        self.src_vma = move.src_vma if k & L.UT_K_SRC_VMA else None
        self.dst_vma = move.dst_vma if k & L.UT_K_DST_VMA else None
        # got past the ioctl's own checks into move_pages() (itself inlined
        # on 7.x: then its VMA lookups and steps are the sign)
        self.entered = bool(k & L.UT_K_MOVE_PAGES) or move.steps > 0 or \
            move.folio_lookups > 0 or self.src_vma is not None or self.dst_vma is not None
        self.returned = bool(k & L.UT_K_MOVE_PAGES_RETURNED)
        self.cross_mm = bool(k & L.UT_K_CROSS_MM)
        self.ioctl_seen = bool(k & L.UT_K_IOCTL_SEEN)
        self.step_failed = bool(k & L.UT_K_STEP_FAILED)
        self.folio_at_fail = bool(k & L.UT_K_FOLIO_AT_FAIL)

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

    def folio(self, bit: str) -> bool:
        return self.folio_at_fail and bool(self.move.folio_flags & getattr(lib(), bit))

    def pte(self, bit: str) -> bool:
        return bool(self.move.pte_at_fail & getattr(lib(), bit))


def _vma_notes(bits: int) -> list[str]:
    L = lib()
    names = [("shared", L.UT_VMA_SHARED), ("file/special-backed", L.UT_VMA_NOT_ANON),
             ("writable", L.UT_VMA_WRITE), ("PFNMAP/IO/hugetlb/MIXEDMAP", L.UT_VMA_SPECIAL),
             ("uffd-missing registered", L.UT_VMA_UFFD_MISSING),
             ("registered to another uffd", L.UT_VMA_OTHER_CTX), ("mlocked", L.UT_VMA_LOCKED)]
    return [n for n, b in names if bits & b]


def _invalid_from_vmas(seen: Seen) -> tuple[str, list[str]] | None:
    """validate_move_areas() and move_pages()'s VMA checks, in the kernel's order."""
    L = lib()
    src, dst = seen.src_vma, seen.dst_vma
    if src is None or dst is None:
        return None
    notes = [f"src VMA: {', '.join(_vma_notes(src)) or 'private anonymous'}",
             f"dst VMA: {', '.join(_vma_notes(dst)) or 'private anonymous'}"]
    if (src | dst) & L.UT_VMA_SHARED:
        return C.INVALID_VMA_SHARED, notes
    if (src | dst) & L.UT_VMA_SPECIAL:
        return C.INVALID_SPECIAL_VMA, notes
    if (src | dst) & L.UT_VMA_NOT_ANON:
        return C.INVALID_VMA_NOT_ANON, notes
    access = L.UT_VMA_READ | L.UT_VMA_WRITE | L.UT_VMA_EXEC | L.UT_VMA_LOCKED
    if not src & L.UT_VMA_WRITE:
        return C.INVALID_SRC_NOT_WRITABLE, notes
    if (src & access) != (dst & access):
        return C.INVALID_VMA_FLAGS_MISMATCH, notes
    if not dst & L.UT_VMA_UFFD_MISSING or dst & L.UT_VMA_OTHER_CTX:
        return C.INVALID_DST_NOT_REGISTERED, notes
    return None


def gup_pinner(move: MoveEvent) -> PinCulprit | None:
    """The pinner the GUP hooks recorded for the folio where the move
    stopped (kernel tier), or None."""
    if not move.folio_flags & lib().UT_FOLIO_PINNED_SEEN:
        return None
    return _pinner(move)


def _pinner(move: MoveEvent) -> PinCulprit:
    return PinCulprit(pid=move.pinner_pid, comm=move.pinner_comm,
                      method=pin_method_name(move.pinner_method & lib().UT_PIN_METHOD_MASK),
                      longterm=bool(move.pinner_method & lib().UT_PIN_LONGTERM),
                      source=GUP_HOOK, ts_ns=move.pinner_ts_ns)


def _stopped_by(seen: Seen, err: int | None):
    """Why the move stopped at fail_addr, from the folio and PTEs there, in
    the kernel's order of checks: (cause, culprit, notes) or None."""
    m = seen.move
    if seen.pte("UT_PTE_DST_POPULATED") or err == E.EEXIST:
        # (the step's EEXIST is noted by the caller)
        return C.DST_POPULATED, None, ["the dst page-table entry was populated"] \
            if seen.pte("UT_PTE_DST_POPULATED") else []
    if seen.pte("UT_PTE_SRC_NONE") or (err == E.ENOENT and seen.src_vma is not None):
        return C.SRC_HOLE, None, ["the src page-table entry was empty"
                                  if seen.pte("UT_PTE_SRC_NONE") else
                                  "the move step returned ENOENT inside the VMA"]
    if seen.folio("UT_FOLIO_PINNED_SEEN"):
        return C.PAGE_PINNED, _pinner(m), [
            f"folio pinned by pid {m.pinner_pid} ({m.pinner_comm}) through "
            f"{pin_method_name(m.pinner_method)}"]
    if seen.folio("UT_FOLIO_MAYBE_DMA_PINNED"):
        return C.PAGE_PINNED, None, ["folio_maybe_dma_pinned(): pinned before tracing "
                                     "started (no pin call seen)"]
    if seen.folio("UT_FOLIO_KSM"):
        return C.PAGE_KSM, KsmCulprit(merged_ts_ns=m.ksm_merged_ts_ns or None), [
            "the folio is a KSM page"]
    if seen.folio("UT_FOLIO_LARGE") and (m.split_err or err == E.EBUSY):
        return C.THP_SPLIT_FAILED, None, [f"large folio; split returned {m.split_err}"
                                          if m.split_err else "large folio"]
    if seen.folio("UT_FOLIO_ANON") and not seen.folio("UT_FOLIO_ANON_EXCLUSIVE") \
            and not seen.folio("UT_FOLIO_LARGE"):
        return C.PAGE_SHARED, None, ["anonymous folio without PageAnonExclusive "
                                     "(shared copy-on-write after fork)"]
    if seen.pte("UT_PTE_SRC_SWAP"):
        return C.SWAP_NOT_EXCLUSIVE, None, ["the src entry is a swap entry"]
    return None


def _blocked_by(seen: Seen, err: int | None):
    """_stopped_by(), kept only where the errno the failing step returned
    (or, when unseen, the syscall's) allows it: else None, and the caller
    falls back to inference -- which obeys the same rule."""
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


def diagnose_observed(move: MoveEvent):
    """A Diagnosis at evidence level observed, or None if the hooks did not
    see enough.  `move` failed and was traced in the kernel tier."""
    seen = Seen(move)
    err = -move.ret
    if not seen.entered:
        if seen.cross_mm:
            return Diagnosis(C.INVALID_CROSS_MM, OBSERVED, None, notes=[
                "the userfaultfd belongs to another process's mm (read in userfaultfd_ioctl)"])
        if err == E.EAGAIN and move.move == -E.EAGAIN:
            return Diagnosis(C.MMAP_CHANGING, OBSERVED, None, notes=[
                "rejected with -EAGAIN before move_pages(): an mm change was pending"])
        return None
    if err == E.EINVAL and not move.steps:
        found = _invalid_from_vmas(seen)
        return Diagnosis(found[0], OBSERVED, None, notes=found[1]) if found else None
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
