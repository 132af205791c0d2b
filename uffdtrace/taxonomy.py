"""The one set of UFFDIO_MOVE outcome causes, used by diagnosis, trace
files, report, export and TUI alike.  Codes are stable: they are written to
trace files.  Explanations follow mm/userfaultfd.c (see reference notes).

Which causes an errno allows is a fact of the kernel, and it is derived here
from each cause's own errno, once: ERRNO_CAUSES, PARTIAL_STOPS and
errno_default() are what both rule engines (diagnose.py, kernel_evidence.py)
obey, so no diagnosis names a cause its errno rules out.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Evidence(StrEnum):
    """How a diagnosis knows what it says."""

    OBSERVED = "observed"   # seen in the kernel (a move-path hook, or the syscall itself)
    INFERRED = "inferred"   # read from userspace (/proc) right after the failure
    ERRNO = "errno"         # nothing but the errno and `move`: the most likely cause


OBSERVED, INFERRED, ERRNO = Evidence.OBSERVED, Evidence.INFERRED, Evidence.ERRNO
EVIDENCE_LEVELS = tuple(Evidence)
EVIDENCE_MEANING = {
    OBSERVED: "seen in the kernel or in the request itself",
    INFERRED: "read from /proc right after the call: the state may have changed since",
    ERRNO: "only the errno and `move` were available: the most likely cause",
}


class CauseCode(StrEnum):
    """Every cause code (a str: compares and serializes as its value)."""

    OK = "ok"
    PARTIAL = "partial"
    DST_POPULATED = "dst_populated"
    MOVED_THEN_EEXIST = "moved_then_eexist"
    SRC_HOLE = "src_hole"
    NO_VMA = "no_vma"
    PAGE_PINNED = "page_pinned"
    PAGE_KSM = "page_ksm"
    PAGE_SHARED = "page_shared"
    SWAP_NOT_EXCLUSIVE = "swap_not_exclusive"
    THP_SPLIT_FAILED = "thp_split_failed"
    ZERO_PAGE = "zero_page"
    BUSY_UNKNOWN = "busy_unknown"
    MMAP_CHANGING = "mmap_changing"
    RETRY = "retry"
    INVALID_MISALIGNED = "invalid_misaligned"
    INVALID_ZERO_LEN = "invalid_zero_len"
    INVALID_BAD_MODE = "invalid_bad_mode"
    INVALID_CROSS_MM = "invalid_cross_mm"
    INVALID_VMA_SHARED = "invalid_vma_shared"
    INVALID_VMA_NOT_ANON = "invalid_vma_not_anon"
    INVALID_VMA_FLAGS_MISMATCH = "invalid_vma_flags_mismatch"
    INVALID_SRC_NOT_WRITABLE = "invalid_src_not_writable"
    INVALID_DST_NOT_REGISTERED = "invalid_dst_not_registered"
    INVALID_SPECIAL_VMA = "invalid_special_vma"
    INVALID_CROSSES_VMA = "invalid_crosses_vma"
    INVALID_UNKNOWN = "invalid_unknown"
    NO_MM = "no_mm"
    NOMEM = "nomem"
    FAULT = "fault"
    INTERRUPTED = "interrupted"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Cause:
    code: CauseCode
    errno: str | None      # the errno the caller sees for it (None: success, or any)
    explanation: str
    remedy: str
    # Can stop a move part way (an error of the per-page loop)?  Then a
    # partial move -- EAGAIN with `move` > 0 -- may have it as its underlying
    # cause, whatever its own errno.
    stops_moves: bool = False
    # The cause to name when nothing but this errno is known (one per errno).
    errno_default: bool = False


C = CauseCode
_CAUSES = [
    Cause(C.OK, None, "all requested bytes were moved", "nothing to do"),
    Cause(C.PARTIAL, "EAGAIN", "the move stopped part way; `move` bytes were moved",
          "resume at src+move, dst+move, len-move after fixing the cause at src+move"),
    Cause(C.DST_POPULATED, "EEXIST", "a destination page (or PMD) is already populated",
          "move only into unpopulated, registered destination pages (MADV_DONTNEED "
          "the destination first)",
          stops_moves=True, errno_default=True),
    Cause(C.MOVED_THEN_EEXIST, "EEXIST", "the page did move (it is at dst, src is empty), "
          "yet the move failed: another thread held the source huge page's lock, the kernel "
          "retried internally (-EAGAIN), and Linux 6.18's move_pages() kept that -EAGAIN "
          "after the step succeeded, re-ran the step and found the page it had just placed",
          "nothing is lost: count the page as moved (do not MADV_DONTNEED dst); move the "
          "pages of one huge page from one thread (or MADV_NOHUGEPAGE the source)",
          stops_moves=True),
    Cause(C.SRC_HOLE, "ENOENT", "a source page is not populated",
          "use UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, or only move populated pages",
          stops_moves=True, errno_default=True),
    Cause(C.NO_VMA, "ENOENT", "no VMA covers the source or destination address",
          "check the addresses: the range is not mapped"),
    Cause(C.PAGE_PINNED, "EBUSY", "a source page is pinned (GUP FOLL_PIN: io_uring fixed "
          "buffer, O_DIRECT or device DMA) and cannot be remapped",
          "unregister the pinned buffer (IORING_UNREGISTER_BUFFERS) or move around it",
          stops_moves=True),
    Cause(C.PAGE_KSM, "EBUSY", "a source page was merged by KSM: it is shared, never "
          "exclusive to this process", "do not MADV_MERGEABLE memory you move, or write "
          "the page (breaking KSM sharing) before moving it",
          stops_moves=True),
    Cause(C.PAGE_SHARED, "EBUSY", "a source page is shared copy-on-write with another "
          "process (after fork): not exclusive", "MADV_DONTFORK the area before fork(), "
          "or write the page so it becomes exclusive again",
          stops_moves=True),
    Cause(C.SWAP_NOT_EXCLUSIVE, "EBUSY", "a source page is swapped out and its swap entry "
          "is shared (not exclusive): fork() after the page-out, or a page shared since "
          "fork() when it was swapped out", "write the page before moving it (the write "
          "fault makes it exclusive again), or MADV_DONTFORK the area before fork()",
          stops_moves=True),
    Cause(C.THP_SPLIT_FAILED, "EBUSY", "the move covers part of a source huge page, which "
          "had to be split and could not be (it is pinned, e.g. an io_uring fixed buffer or "
          "O_DIRECT, or under writeback)",
          "move whole PMD-aligned 2 MiB ranges, unpin the huge page first, or "
          "MADV_NOHUGEPAGE the source",
          stops_moves=True),
    Cause(C.ZERO_PAGE, "EBUSY", "a source page is the shared zero page (Linux 6.8 cannot "
          "move it)", "write the page first, or use a kernel >= 6.9",
          stops_moves=True),
    Cause(C.BUSY_UNKNOWN, "EBUSY", "a source page is not movable (pinned, KSM, shared or an "
          "unsplittable huge page) and the evidence at hand cannot tell which",
          "run `uffdtrace doctor`: the kernel tier names the exact reason",
          stops_moves=True, errno_default=True),
    Cause(C.MMAP_CHANGING, "EAGAIN", "a fork/mremap/munmap event on this mm was pending "
          "(mmap_changing), so the kernel refused to move", "read the pending uffd events, "
          "then retry",
          errno_default=True),
    Cause(C.RETRY, "EAGAIN", "the kernel could not take the VMA locks without waiting "
          "(6.15+), or the mm changed under the move: nothing was moved",
          "retry the move"),
    Cause(C.INVALID_MISALIGNED, "EINVAL", "dst, src or len is not page aligned",
          "align dst, src and len to the page size"),
    Cause(C.INVALID_ZERO_LEN, "EINVAL", "len is 0", "pass a non-zero length"),
    Cause(C.INVALID_BAD_MODE, "EINVAL", "mode has bits other than DONTWAKE and "
          "ALLOW_SRC_HOLES", "pass only UFFDIO_MOVE_MODE_* bits"),
    Cause(C.INVALID_CROSS_MM, "EINVAL", "the calling process is not the one that created "
          "the userfaultfd (moves never cross address spaces)",
          "issue UFFDIO_MOVE from the process that owns the userfaultfd"),
    Cause(C.INVALID_VMA_SHARED, "EINVAL", "the source or destination VMA is shared "
          "(MAP_SHARED): only private anonymous memory moves",
          "move only MAP_PRIVATE|MAP_ANONYMOUS memory"),
    Cause(C.INVALID_VMA_NOT_ANON, "EINVAL", "the source or destination VMA is not "
          "anonymous (file-backed)", "move only anonymous memory"),
    Cause(C.INVALID_VMA_FLAGS_MISMATCH, "EINVAL", "source and destination VMAs differ in "
          "protection or mlock state", "give both areas the same protections and "
          "mlock state"),
    Cause(C.INVALID_SRC_NOT_WRITABLE, "EINVAL", "the source VMA is not writable",
          "mprotect the source PROT_READ|PROT_WRITE"),
    Cause(C.INVALID_DST_NOT_REGISTERED, "EINVAL", "the destination is not registered with "
          "this userfaultfd", "UFFDIO_REGISTER the destination range first"),
    Cause(C.INVALID_SPECIAL_VMA, "EINVAL", "a VMA is special (hugetlb, PFNMAP, IO, "
          "MIXEDMAP or shadow stack)", "move only ordinary anonymous memory"),
    Cause(C.INVALID_CROSSES_VMA, "EINVAL", "the range extends past the end of its VMA",
          "split the move at VMA boundaries"),
    Cause(C.INVALID_UNKNOWN, "EINVAL", "the kernel rejected the arguments; the evidence "
          "at hand cannot tell which check failed", "check alignment, VMA flags and "
          "registration, or use the kernel tier",
          errno_default=True),
    Cause(C.NO_MM, "ESRCH", "the userfaultfd's address space has exited",
          "the owning process is gone: stop moving",
          errno_default=True),
    Cause(C.NOMEM, "ENOMEM", "the kernel could not allocate a page table or anon_vma",
          "free memory and retry",
          stops_moves=True, errno_default=True),
    Cause(C.FAULT, "EFAULT", "the struct uffdio_move could not be accessed, or a source "
          "entry is a device/hwpoison/marker entry", "pass a valid argument pointer",
          stops_moves=True, errno_default=True),
    Cause(C.INTERRUPTED, "EINTR", "a fatal signal interrupted the move",
          "nothing: the process is being killed",
          errno_default=True),
    Cause(C.UNKNOWN, None, "an errno this version of uffdtrace does not explain",
          "report it with the trace file"),
]

CAUSES: dict[str, Cause] = {c.code: c for c in _CAUSES}


def cause(code: str) -> Cause:
    return CAUSES[code]


def cause_label(code: str, underlying: str | None) -> str:
    """How a diagnosis's cause reads in one line: `partial: page_pinned`."""
    return f"{code}: {underlying}" if underlying else code


def _by_errno() -> dict[str, frozenset[CauseCode]]:
    out: dict[str, set[CauseCode]] = {}
    for c in _CAUSES:
        if c.errno is not None and c.code != C.PARTIAL:
            out.setdefault(c.errno, set()).add(c.code)
    return {e: frozenset(codes) for e, codes in out.items()}


# errno -> the causes it can mean (a partial move, EAGAIN with `move` > 0, is
# apart: it is `partial`, and its underlying cause is one of PARTIAL_STOPS).
ERRNO_CAUSES: dict[str, frozenset[CauseCode]] = _by_errno()
PARTIAL_STOPS: frozenset[CauseCode] = frozenset(c.code for c in _CAUSES if c.stops_moves)
_ERRNO_DEFAULTS = {c.errno: c.code for c in _CAUSES if c.errno_default}


def allowed_causes(errno: str | None, partial: bool) -> frozenset[CauseCode]:
    """The causes a move with this result can have (errno None: success)."""
    if errno is None:
        return frozenset({C.OK})
    if partial:
        return frozenset({C.PARTIAL})
    return ERRNO_CAUSES.get(errno, frozenset({C.UNKNOWN}))


def errno_default(errno: str) -> CauseCode:
    """The most likely cause when nothing but `errno` is known (not partial)."""
    return _ERRNO_DEFAULTS.get(errno, C.UNKNOWN)


def contradiction(code: str, underlying: str | None, errno: str | None,
                  partial: bool, step_errno: str | None = None) -> str | None:
    """Why (code, underlying) cannot be the cause of this result, or None.
    step_errno: the errno the kernel's failing step returned, where it was
    seen (a partial move hides it behind EAGAIN)."""
    if code not in allowed_causes(errno, partial):
        return f"{code} is not a cause of {errno or 'success'}" + \
            (" with bytes moved" if partial else "")
    if underlying is not None:
        if not partial:
            return f"only a partial move has an underlying cause ({underlying} given)"
        if underlying not in PARTIAL_STOPS:
            return f"{underlying} cannot stop a move part way"
    effective = underlying if underlying is not None else code
    if step_errno is not None and effective not in ERRNO_CAUSES.get(step_errno, ()):
        return f"{effective} is not a cause of the failing step's {step_errno}"
    return None
